//! A small TCP fault proxy for sick-link tests: it forwards a loopback port to a target and,
//! on cue, adds latency to replies, stalls (accepts and reads, never answers), resets
//! connections, or drops a connection in the middle of a reply. A change of fault applies to
//! the connections already open too (a client keeps its connections), from their next chunk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    Healthy,
    /// Holds each reply chunk this long before forwarding it. Chunks still held when the
    /// target closes the connection (it died) are lost with it, as in the buffers of a node
    /// that dies: what was sent just before is not delivered.
    Latency(Duration),
    /// Reads requests and throws them away: no reply ever comes (a hung server). A connection
    /// that stalled is closed once the fault is gone (as a hung server that is restarted):
    /// replies to requests it threw away will never come, and later replies must not be
    /// taken for them.
    Stall,
    /// Resets each connection (RST) at its next chunk, and new ones at once.
    Reset,
    /// Forwards the first half of the next reply chunk, then closes the connection.
    DropMidReply,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port (at most 55535, so that a Redis node may announce it)
    /// and forwards to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = loop {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
            if listener.local_addr().expect("proxy address").port() <= 55_535 {
                break listener;
            }
        };
        let addr = listener.local_addr().expect("proxy address");
        let fault = Arc::new(Mutex::new(Fault::Healthy));
        let shared = Arc::clone(&fault);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let fault = Arc::clone(&shared);
                tokio::spawn(async move {
                    if *fault.lock() == Fault::Reset {
                        reset(client);
                        return;
                    }
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    serve(client, upstream, fault).await;
                });
            }
        });
        FaultProxy { addr, fault, task }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes a connection with a TCP reset (zero linger, then close).
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(client: TcpStream, upstream: TcpStream, fault: Arc<Mutex<Fault>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let requests = async {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut stalled = false;
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = *fault.lock();
            match now {
                Fault::Stall => {
                    stalled = true;
                    continue;
                }
                Fault::Reset => return,
                _ if stalled => return,
                _ => {}
            }
            if upstream_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    // Replies: a reader that stamps each chunk with when it is due, and a writer that delivers
    // it then (unless the target was gone before it was due).
    enum Chunk {
        Data(tokio::time::Instant, Vec<u8>),
        Close,
    }
    let (chunks, mut due) = tokio::sync::mpsc::unbounded_channel::<Chunk>();
    let gone_at: Mutex<Option<tokio::time::Instant>> = Mutex::new(None);
    let read_replies = async {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut stalled = false;
        loop {
            let n = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    *gone_at.lock() = Some(tokio::time::Instant::now());
                    let _ = chunks.send(Chunk::Close);
                    return;
                }
                Ok(n) => n,
            };
            let now = tokio::time::Instant::now();
            let fault = *fault.lock();
            let chunk = match fault {
                Fault::Healthy if stalled => Chunk::Close,
                Fault::Healthy => Chunk::Data(now, buffer[..n].to_vec()),
                Fault::Latency(delay) => Chunk::Data(now + delay, buffer[..n].to_vec()),
                Fault::Stall => {
                    stalled = true;
                    continue;
                }
                Fault::Reset => Chunk::Close,
                Fault::DropMidReply => {
                    let _ = chunks.send(Chunk::Data(now, buffer[..n.div_ceil(2)].to_vec()));
                    Chunk::Close
                }
            };
            let close = matches!(chunk, Chunk::Close);
            if chunks.send(chunk).is_err() || close {
                return;
            }
        }
    };
    let write_replies = async {
        while let Some(chunk) = due.recv().await {
            let Chunk::Data(at, bytes) = chunk else {
                return;
            };
            tokio::time::sleep_until(at).await;
            if gone_at.lock().is_some_and(|gone| gone < at) {
                return;
            }
            if client_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    // The writer ends the replies (at a Close, or when a held chunk was lost); the reader
    // only feeds it.
    let replies = async {
        let reader = async {
            read_replies.await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = write_replies => {}
            () = reader => {}
        }
    };
    // Whichever side ends first ends the connection; under Reset, with a reset.
    tokio::select! {
        () = requests => {}
        () = replies => {}
    }
    if *fault.lock() == Fault::Reset
        && let Ok(client) = client_read.reunite(client_write)
    {
        reset(client);
    }
}
