//! The Redis side of the invalidation feed: one SUBSCRIBE connection to any live node, its
//! keep-alive, resubscription with backoff, and the wire format of the messages.
//!
//! Writers PUBLISH a short message (`d@<µs> <sid>`, `u@<µs> <sid>`, `r@<µs> <jti>`: the kind,
//! when it was published in microseconds of the Unix epoch by the writer's clock, and the id)
//! on one channel from the same Lua script as the write; a Redis Cluster forwards a plain
//! PUBLISH to every node, so a subscription to any one node hears every change. A message
//! without its time (`d <sid>`) is read too. The time gives the propagation lag
//! (`session_sidecar_invalidation_lag_seconds`).
//!
//! One subscription, through a seed, is the feed's authority: it alone says `Subscribed` and
//! `Lost`, so delivery is guaranteed or its loss is reported exactly as with one connection.
//! Beside it, accelerators subscribe to every primary: a message reaches a node other than the
//! one it was published on over the cluster bus, whose connections Redis 7.0 opens without
//! `TCP_NODELAY` (a message can wait 40 ms for a delayed ACK there), while the primary whose
//! script published it delivers it at once. The first copy of a timed message is handed out,
//! later copies are dropped; an accelerator's failures are no loss (the authority still hears
//! everything), and it never hands out an untimed message (which cannot be told from a later
//! one with the same text). What the feed hears is handed out as
//! [`FeedEvent`]s; what the cache does with them is [`crate::invalidation`]'s business.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::topology::{SharedConnection, TOPOLOGY_CHECK_INTERVAL};

pub use crate::store::now_micros;
use crate::store::{FeedEvent, FeedEvents, FeedLoss, Invalidation};

/// First pause before resubscribing; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A subscription that has said nothing for this long is pinged; one that does not answer
/// within [`PING_TIMEOUT`] is treated as lost (a node can hang without closing its socket).
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Changes the feed holds for its listener (a change is an id of at most 256 bytes: a few MiB
/// at most). A listener this far behind makes the feed let go of its connection.
pub const FEED_BUFFER: usize = 16_384;
/// How long a handed-out message is remembered, to drop its later copies.
const SEEN_FOR: Duration = Duration::from_secs(10);
/// Most messages remembered (older ones are forgotten first).
const SEEN_MAX: usize = 65_536;

/// The wire form of a change, without its time.
pub fn encode(change: &Invalidation) -> String {
    let (kind, id) = parts(change);
    format!("{kind} {id}")
}

/// The wire form of a change published at `published_at` (µs since the Unix epoch).
pub fn encode_at(change: &Invalidation, published_at: u64) -> String {
    let (kind, id) = parts(change);
    format!("{kind}@{published_at} {id}")
}

fn parts(change: &Invalidation) -> (&'static str, &str) {
    match change {
        Invalidation::SessionDeleted(sid) => ("d", sid),
        Invalidation::SessionUpdated(sid) => ("u", sid),
        Invalidation::TokenRevoked(jti) => ("r", jti),
    }
}

/// Reads a message; `None` for anything this version does not know.
pub fn decode(message: &str) -> Option<Invalidation> {
    decode_message(message).map(|(change, _)| change)
}

/// Reads a message and the time it was published, when it says (a time that does not parse
/// is no time: the change itself still counts).
pub fn decode_message(message: &str) -> Option<(Invalidation, Option<u64>)> {
    let (head, id) = message.split_once(' ')?;
    if id.is_empty() {
        return None;
    }
    let (kind, published_at) = match head.split_once('@') {
        Some((kind, at)) => (kind, at.parse::<u64>().ok()),
        None => (head, None),
    };
    let change = match kind {
        "d" => Some(Invalidation::SessionDeleted(id.to_owned())),
        "u" => Some(Invalidation::SessionUpdated(id.to_owned())),
        "r" => Some(Invalidation::TokenRevoked(id.to_owned())),
        _ => None,
    }?;
    Some((change, published_at))
}

/// Where and how the feed connects.
#[derive(Clone)]
pub struct FeedSource {
    /// Every seed node, with credentials and TLS as configured.
    pub nodes: Vec<redis::ConnectionInfo>,
    /// PEM roots for TLS nodes (None: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    pub channel: String,
    pub connect_timeout: Duration,
    /// The Redis password as it rotates: each (re)subscription authenticates with the current
    /// one.
    pub password: Option<tokio::sync::watch::Receiver<String>>,
    /// The primaries, as the store's topology check last saw them: where accelerators
    /// subscribe (`None`: no accelerators).
    pub primaries: Option<Arc<SharedConnection>>,
}

/// Which subscription a message came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The one whose state is the feed's: a full buffer is a loss.
    Authority,
    /// One of the subscriptions to the primaries: a copy it cannot hand out is dropped.
    Accelerator,
}

/// Timed messages handed out lately, to drop their later copies.
#[derive(Default)]
struct Seen {
    texts: HashSet<Arc<str>>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl Seen {
    fn contains(&self, text: &str) -> bool {
        self.texts.contains(text)
    }

    fn remember(&mut self, text: &str) {
        let now = Instant::now();
        while let Some((at, oldest)) = self.order.front() {
            if now.duration_since(*at) < SEEN_FOR && self.order.len() < SEEN_MAX {
                break;
            }
            self.texts.remove(oldest);
            self.order.pop_front();
        }
        let text: Arc<str> = Arc::from(text);
        if self.texts.insert(Arc::clone(&text)) {
            self.order.push_back((now, text));
        }
    }
}

/// What the subscriptions of one feed share: where events go, and what was handed out.
#[derive(Clone)]
struct Outlet {
    events: mpsc::Sender<FeedEvent>,
    seen: Arc<Mutex<Seen>>,
}

/// Starts the feed's tasks and returns its events. They end when the receiver is dropped.
pub fn start(source: FeedSource) -> FeedEvents {
    let (events, receiver) = mpsc::channel(FEED_BUFFER);
    let outlet = Outlet {
        events,
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    if source.primaries.is_some() {
        tokio::spawn(accelerate(source.clone(), outlet.clone()));
    }
    tokio::spawn(run(source, outlet));
    receiver
}

/// Keeps one accelerator subscribed to each primary, following the topology.
async fn accelerate(source: FeedSource, outlet: Outlet) {
    let Some(primaries) = source.primaries.clone() else {
        return;
    };
    let Some(template) = source.nodes.first().cloned() else {
        return;
    };
    let mut running: HashMap<Arc<str>, tokio::task::AbortHandle> = HashMap::new();
    loop {
        if outlet.events.is_closed() {
            for task in running.values() {
                task.abort();
            }
            return;
        }
        let wanted: HashSet<Arc<str>> = primaries.primaries().into_iter().collect();
        running.retain(|address, task| {
            let keep = wanted.contains(address);
            if !keep {
                task.abort();
            }
            keep
        });
        for address in wanted {
            if running.contains_key(&address) {
                continue;
            }
            let Some(info) = info_for(&template, &address) else {
                continue;
            };
            let task = tokio::spawn(accelerator(info, source.clone(), outlet.clone()));
            running.insert(address, task.abort_handle());
        }
        // Until the topology check has answered once, look again soon.
        let pause = if running.is_empty() {
            Duration::from_millis(100)
        } else {
            TOPOLOGY_CHECK_INTERVAL
        };
        tokio::time::sleep(pause).await;
    }
}

/// The seed's connection settings (credentials, TLS) for another node's `host:port`.
fn info_for(template: &redis::ConnectionInfo, address: &str) -> Option<redis::ConnectionInfo> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let addr = match template.addr() {
        redis::ConnectionAddr::Tcp(_, _) => redis::ConnectionAddr::Tcp(host.to_owned(), port),
        redis::ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => return None,
    };
    Some(template.clone().set_addr(addr))
}

/// One accelerator: subscribed to one primary for as long as it is wanted, resubscribing
/// with backoff. Nothing it does is a loss.
async fn accelerator(info: redis::ConnectionInfo, source: FeedSource, outlet: Outlet) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match subscribe(&info, &source).await {
            Ok(pubsub) => {
                tracing::debug!(node = %info.addr(), "invalidation feed accelerator subscribed");
                backoff = FIRST_BACKOFF;
                if listen(pubsub, &outlet, Role::Accelerator).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(node = %info.addr(), %error, "accelerator cannot subscribe");
            }
        }
        if outlet.events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn run(source: FeedSource, outlet: Outlet) {
    let events = &outlet.events;
    let mut backoff = FIRST_BACKOFF;
    // Each sidecar starts at a random seed: a fleet started together (or all resubscribing
    // after a node restart) spreads its subscriptions over the nodes instead of making the
    // first seed deliver every message to every sidecar (benches/fleet.rs).
    let mut node = rand::random_range(0..source.nodes.len().max(1));
    while !source.nodes.is_empty() {
        let info = &source.nodes[node % source.nodes.len()];
        node = node.wrapping_add(1);
        match subscribe(info, &source).await {
            Ok(pubsub) => {
                tracing::info!(node = %info.addr(), "invalidation feed subscribed");
                if events.send(FeedEvent::Subscribed).await.is_err() {
                    return;
                }
                backoff = FIRST_BACKOFF;
                let Ok(loss) = listen(pubsub, &outlet, Role::Authority).await else {
                    return;
                };
                match loss {
                    FeedLoss::Disconnected => tracing::warn!(
                        node = %info.addr(),
                        "invalidation feed lost: cached session decisions will be re-checked"
                    ),
                    FeedLoss::FellBehind => tracing::warn!(
                        node = %info.addr(),
                        buffered = FEED_BUFFER,
                        "invalidation feed fell behind (its buffer is full): resubscribing, cached session decisions will be re-checked"
                    ),
                }
                if events.send(FeedEvent::Lost(loss)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(node = %info.addr(), %error, "cannot subscribe");
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn subscribe(
    info: &redis::ConnectionInfo,
    source: &FeedSource,
) -> Result<redis::aio::PubSub, String> {
    let mut info = info.clone();
    if let Some(password) = &source.password {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.borrow().as_str());
        info = info.set_redis_settings(settings);
    }
    let client = match &source.ca_pem {
        Some(ca) => redis::Client::build_with_tls(
            info.clone(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => redis::Client::open(info),
    }
    .map_err(|e| e.to_string())?;
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&source.channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(source.connect_timeout * 2, connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The receiver of the events is gone: the feed stops.
#[derive(Debug)]
struct Closed;

/// Hands out messages until the connection ends or stops answering pings, or the listener
/// falls [`FEED_BUFFER`] changes behind. The client buffers what the connection reads without
/// bound, so this task never waits for the listener: it reads as fast as messages come and
/// lets go of the connection (and all it buffered) when the listener cannot keep up.
async fn listen(
    pubsub: redis::aio::PubSub,
    outlet: &Outlet,
    role: Role,
) -> Result<FeedLoss, Closed> {
    let events = &outlet.events;
    let (mut sink, mut stream) = pubsub.split();
    loop {
        match tokio::time::timeout(PING_INTERVAL, stream.next()).await {
            Ok(Some(message)) => {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((change, published_at)) = decode_message(&text)
                    && let Some(loss) = hand_over(outlet, role, &text, change, published_at)?
                {
                    return Ok(loss);
                }
            }
            Ok(None) => return Ok(FeedLoss::Disconnected),
            Err(_) => {
                if events.is_closed() {
                    return Err(Closed);
                }
                // A subscribed connection answers PING with `["pong", ""]` (RESP2), not with
                // `PONG`: any reply is a live connection, only an error or silence is a loss.
                let ping = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return Ok(FeedLoss::Disconnected);
                }
            }
        }
    }
}

/// Hands a change to the listener without waiting, unless a copy of it was handed out
/// already: `Some(FellBehind)` when the buffer is full and the authority brought it (an
/// accelerator's copy is dropped: the authority's will come).
fn hand_over(
    outlet: &Outlet,
    role: Role,
    text: &str,
    change: Invalidation,
    published_at: Option<u64>,
) -> Result<Option<FeedLoss>, Closed> {
    if published_at.is_none() && role == Role::Accelerator {
        return Ok(None);
    }
    let mut seen = outlet.seen.lock();
    if published_at.is_some() && seen.contains(text) {
        return Ok(None);
    }
    match outlet
        .events
        .try_send(FeedEvent::Change(change, published_at))
    {
        Ok(()) => {
            if published_at.is_some() {
                seen.remember(text);
            }
            Ok(None)
        }
        Err(mpsc::error::TrySendError::Full(_)) => Ok(match role {
            Role::Authority => Some(FeedLoss::FellBehind),
            Role::Accelerator => None,
        }),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::{FeedLoss, Outlet, Role, decode, encode, hand_over};
    use crate::store::{FeedEvent, Invalidation};
    use tokio::sync::mpsc;

    fn outlet(capacity: usize) -> (Outlet, mpsc::Receiver<FeedEvent>) {
        let (events, receiver) = mpsc::channel(capacity);
        let outlet = Outlet {
            events,
            seen: Default::default(),
        };
        (outlet, receiver)
    }

    #[test]
    fn a_full_buffer_is_a_loss_never_a_silent_drop_nor_a_wait() {
        let (outlet, mut receiver) = outlet(2);
        let change = || Invalidation::SessionDeleted("s".into());
        let authority = |text: &str| hand_over(&outlet, Role::Authority, text, change(), None);
        assert!(matches!(authority("d s"), Ok(None)));
        assert!(matches!(authority("d s"), Ok(None)));
        assert!(matches!(authority("d s"), Ok(Some(FeedLoss::FellBehind))));
        // An accelerator's copy that does not fit is dropped: the authority's brings the loss.
        assert!(matches!(
            hand_over(&outlet, Role::Accelerator, "d@1 s", change(), Some(1)),
            Ok(None)
        ));
        assert_eq!(
            receiver.try_recv(),
            Ok(FeedEvent::Change(change(), None)),
            "what was handed over stays in order"
        );
        drop(receiver);
        assert!(authority("d s").is_err());
    }

    #[test]
    fn the_first_copy_of_a_timed_message_is_handed_out_and_later_ones_dropped() {
        let (outlet, mut receiver) = outlet(8);
        let change = || Invalidation::TokenRevoked("j".into());
        // The accelerator's copy comes first; the authority's later copy is dropped.
        hand_over(&outlet, Role::Accelerator, "r@5 j", change(), Some(5)).unwrap();
        hand_over(&outlet, Role::Authority, "r@5 j", change(), Some(5)).unwrap();
        // Another publication of the same id is another message.
        hand_over(&outlet, Role::Authority, "r@6 j", change(), Some(6)).unwrap();
        // Untimed messages: only the authority's, each of them (they cannot be told apart).
        hand_over(&outlet, Role::Accelerator, "r j", change(), None).unwrap();
        hand_over(&outlet, Role::Authority, "r j", change(), None).unwrap();
        hand_over(&outlet, Role::Authority, "r j", change(), None).unwrap();
        let mut got = Vec::new();
        while let Ok(FeedEvent::Change(_, at)) = receiver.try_recv() {
            got.push(at);
        }
        assert_eq!(got, [Some(5), Some(6), None, None]);
    }

    #[test]
    fn messages_carry_their_publication_time_and_older_ones_still_count() {
        use super::{decode_message, encode_at};
        let change = Invalidation::TokenRevoked("j-1".into());
        let message = encode_at(&change, 1_733_400_000_123_456);
        assert_eq!(message, "r@1733400000123456 j-1");
        assert_eq!(
            decode_message(&message),
            Some((change.clone(), Some(1_733_400_000_123_456)))
        );
        // Without a time, or with one that does not parse: the change still counts.
        assert_eq!(decode_message("r j-1"), Some((change.clone(), None)));
        assert_eq!(decode_message("r@soon j-1"), Some((change, None)));
        assert_eq!(decode_message("x@1 j-1"), None);
    }

    #[test]
    fn messages_round_trip_and_unknown_ones_are_ignored() {
        for change in [
            Invalidation::SessionDeleted("abc".into()),
            Invalidation::SessionUpdated("abc".into()),
            Invalidation::TokenRevoked("j-1".into()),
        ] {
            assert_eq!(decode(&encode(&change)), Some(change));
        }
        assert_eq!(decode("x abc"), None);
        assert_eq!(decode("d "), None);
        assert_eq!(decode("garbage"), None);
    }
}
