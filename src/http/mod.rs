//! The HTTP side: the API server (forward-auth, introspection, sessions) on `--listen` and
//! `--listen-unix`, the admin server (metrics, health) on `--metrics-listen`, and draining on
//! shutdown. Routing is a plain match on method and path; handlers live in the submodules and
//! every response is built by [`respond`].

pub mod admin;
pub mod forward_auth;
pub mod respond;
pub mod sessions;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::App;
use crate::error::ApiError;
use respond::HttpResponse;

/// Request size limits (SPEC §7).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_token_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_session_bytes: usize,
    pub max_json_depth: usize,
}

/// How long in-flight requests may take to finish after a shutdown signal (SPEC: exit within 10 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// After a shutdown signal, how long the servers go on accepting and answering, each answer
/// with `Connection: close`, while `/readyz` says 503: callers on kept-alive connections learn
/// to go elsewhere from an answer, instead of finding their connection closed under a request
/// they had just sent. [`DRAIN_GRACE`] + [`DRAIN_TIMEOUT`] stays under SPEC §2's 10 s.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// Longest time a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The size of a request's head as it came on the wire (HTTP/1.1: request line, each header
/// as `name: value\r\n`, the blank line).
fn head_bytes<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n ".len();
    request
        .headers()
        .iter()
        .fold(line + 2, |total, (name, value)| {
            total.saturating_add(name.as_str().len() + value.len() + 4)
        })
}

/// Routes one API request.
pub async fn route(app: &App, request: Request<Incoming>) -> HttpResponse {
    // hyper bounds the head of a connection's first request by its read buffer, but a later
    // request on a kept-alive connection can be larger: the limit is checked here, for every
    // request (proxies reuse connections).
    if head_bytes(&request) > app.limits.max_header_bytes {
        return respond::api_error(&ApiError::HeadersTooLarge(app.limits.max_header_bytes));
    }
    let path = request.uri().path();
    if path == "/verify" || path.starts_with("/verify/") {
        // Forward-auth: any method, since proxies such as Envoy's ext_authz forward the
        // original request's method.
        return forward_auth::forward_auth(app, &request).await;
    }
    // Exactly as sent: one leading slash is stripped, so `//v1/...` has an empty first
    // segment and matches nothing (a prefix rule in front must not be walked around).
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let method = request.method().clone();
    let result = match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "verify"]) => return forward_auth::introspect(app, request).await,
        (_, ["v1", "verify"]) => Err(ApiError::MethodNotAllowed),
        (&Method::POST, ["v1", "sessions"]) => sessions::create(app, request).await,
        (_, ["v1", "sessions"]) => Err(ApiError::MethodNotAllowed),
        (&Method::GET, ["v1", "sessions", sid]) => {
            let sid = (*sid).to_owned();
            sessions::get(app, &request, &sid).await
        }
        (&Method::PATCH, ["v1", "sessions", sid]) => {
            let sid = (*sid).to_owned();
            sessions::patch(app, request, &sid).await
        }
        (&Method::DELETE, ["v1", "sessions", sid]) => {
            let sid = (*sid).to_owned();
            sessions::delete(app, &request, &sid).await
        }
        (_, ["v1", "sessions", _]) => Err(ApiError::MethodNotAllowed),
        (&Method::DELETE, ["v1", "users", sub, "sessions"]) => {
            let sub = (*sub).to_owned();
            sessions::delete_subject(app, &request, &sub).await
        }
        (_, ["v1", "users", _, "sessions"]) => Err(ApiError::MethodNotAllowed),
        (&Method::POST, ["v1", "revoke"]) => sessions::revoke(app, request).await,
        (_, ["v1", "revoke"]) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound),
    };
    result.unwrap_or_else(|error| respond::api_error(&error))
}

/// A listener the servers accept connections from (TCP or Unix socket).
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Small request/response exchanges: do not wait to coalesce packets.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The HTTP/1.1 + h2c connection builder with the request-head limits.
pub fn connection_builder(max_header_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper answers `431` when the request head does not fit.
        .max_buf_size(max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves `handler` on `listener` until `shutdown` flips, then drains open connections for at
/// most [`DRAIN_TIMEOUT`].
pub async fn serve<L, H, Fut>(
    listener: L,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    draining: Arc<AtomicBool>,
) where
    L: Accept,
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(io) => {
                    let handler = handler.clone();
                    let draining = Arc::clone(&draining);
                    let service = service_fn(move |request: Request<Incoming>| {
                        let http1 = request.version() < Version::HTTP_2;
                        let response = handler(request);
                        let draining = Arc::clone(&draining);
                        async move {
                            let mut response = response.await;
                            // Draining: this answer is the connection's last (HTTP/1; an h2
                            // client gets GOAWAY from the graceful shutdown).
                            if http1 && draining.load(Ordering::Acquire) {
                                response.headers_mut().insert(CONNECTION, CLOSE);
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
