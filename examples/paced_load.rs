//! An open-loop (paced) HTTP/1.1 load generator for the latency target of `benches/load.sh`:
//! requests are *scheduled* at a fixed total rate over keep-alive connections, and each
//! latency is measured from the moment the request was due, not from when it could be sent,
//! so a stall is not hidden (no coordinated omission). wrk, a closed-loop generator, cannot
//! measure "p99 at half load".
//!
//! Usage: paced_load ADDR PATH RATE SECONDS CONNECTIONS [BEARER_TOKEN]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: paced_load ADDR PATH RATE SECONDS CONNECTIONS [BEARER_TOKEN]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse()?;
    let path = args[2].clone();
    let rate: f64 = args[3].parse()?;
    let seconds: f64 = args[4].parse()?;
    let connections: usize = args[5].parse()?;
    let auth = args
        .get(6)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n").into_bytes();
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let per_connection = (seconds * rate / connections as f64) as usize;
    let start = Instant::now() + Duration::from_millis(100);
    // One thread per connection, with blocking sockets: std::thread::sleep wakes within tens of
    // microseconds, where an async runtime's timer rounds up to the next millisecond.
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let request = request.clone();
            let offset = interval.mul_f64(c as f64 / connections as f64);
            std::thread::spawn(move || -> std::io::Result<(Vec<Duration>, usize)> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let mut latencies = Vec::with_capacity(per_connection);
                let mut buffer = vec![0u8; 16 * 1024];
                let mut errors = 0usize;
                for i in 0..per_connection {
                    let due = start + offset + interval.mul_f64(i as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    stream.write_all(&request)?;
                    let mut read = 0;
                    loop {
                        let n = stream.read(&mut buffer[read..])?;
                        if n == 0 {
                            return Err(std::io::Error::other("connection closed"));
                        }
                        read += n;
                        if let Some(end) = find(&buffer[..read], b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if read >= end + 4 + length {
                                if !head.starts_with("http/1.1 200") {
                                    errors += 1;
                                }
                                break;
                            }
                        }
                    }
                    latencies.push(due.elapsed());
                }
                Ok((latencies, errors))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for thread in threads {
        let (latencies, errs) = thread
            .join()
            .map_err(|_| std::io::Error::other("a load thread panicked"))??;
        all.extend(latencies);
        errors += errs;
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "paced {rate:.0} req/s for {seconds}s over {connections} connections: {} requests, {errors} non-200",
        all.len()
    );
    println!(
        "latency from the scheduled time: p50 {:?}  p90 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        all[all.len() - 1]
    );
    // The same, for scripts (benches/compare.py).
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "requests={} errors={errors} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
        all.len(),
        us(pct(0.50)),
        us(pct(0.90)),
        us(pct(0.99)),
        us(pct(0.999)),
        us(all[all.len() - 1])
    );
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
