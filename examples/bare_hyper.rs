//! The load benchmarks' ceiling: a bare hyper server (same builder, same runtime) that answers
//! `200` with an empty body to every request, and, when given a file of `Name: value` lines,
//! with those headers (the sidecar's own answer, so that both write the same bytes; each
//! response builds its header map as the sidecar does). `benches/load.sh` and
//! `benches/compare.py` compare `/verify` cache hits against it.
//!
//! Usage: bare_hyper [ADDR] [HEADERS_FILE]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn read_headers(path: &str) -> std::io::Result<Vec<(HeaderName, HeaderValue)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| {
            let name =
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(std::io::Error::other)?;
            let value = HeaderValue::from_str(value.trim()).map_err(std::io::Error::other)?;
            Ok((name, value))
        })
        .collect()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8090".into())
        .parse()
        .map_err(std::io::Error::other)?;
    let headers = Arc::new(match args.next() {
        Some(path) => read_headers(&path)?,
        None => Vec::new(),
    });
    let listener = tokio::net::TcpListener::bind(address).await?;
    eprintln!(
        "bare hyper on {} ({} headers)",
        listener.local_addr()?,
        headers.len()
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let headers = Arc::clone(&headers);
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let headers = Arc::clone(&headers);
                async move {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    let map = response.headers_mut();
                    map.reserve(headers.len());
                    for (name, value) in headers.iter() {
                        map.insert(name.clone(), value.clone());
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
