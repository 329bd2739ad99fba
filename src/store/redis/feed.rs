//! The Redis side of the invalidation feed: one SUBSCRIBE connection to any live node, its
//! keep-alive, resubscription with backoff, and the wire format of the messages.
//!
//! Writers PUBLISH a short message (`d@<µs> <sid>`, `u@<µs> <sid>`, `r@<µs> <jti>`: the kind,
//! when it was published in microseconds of the Unix epoch by the writer's clock, and the id)
//! on one channel from the same Lua script as the write; a Redis Cluster forwards a plain
//! PUBLISH to every node, so a subscription to any one node hears every change. A message
//! without its time (`d <sid>`) is read too. The time gives the propagation lag
//! (`session_sidecar_invalidation_lag_seconds`). What the feed hears is handed out as
//! [`FeedEvent`]s; what the cache does with them is [`crate::invalidation`]'s business.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

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
}

/// Starts the feed task and returns its events. The task ends when the receiver is dropped.
pub fn start(source: FeedSource) -> FeedEvents {
    let (events, receiver) = mpsc::channel(FEED_BUFFER);
    tokio::spawn(run(source, events));
    receiver
}

async fn run(source: FeedSource, events: mpsc::Sender<FeedEvent>) {
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
                let Ok(loss) = listen(pubsub, &events).await else {
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
struct Closed;

/// Hands out messages until the connection ends or stops answering pings, or the listener
/// falls [`FEED_BUFFER`] changes behind. The client buffers what the connection reads without
/// bound, so this task never waits for the listener: it reads as fast as messages come and
/// lets go of the connection (and all it buffered) when the listener cannot keep up.
async fn listen(
    pubsub: redis::aio::PubSub,
    events: &mpsc::Sender<FeedEvent>,
) -> Result<FeedLoss, Closed> {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        match tokio::time::timeout(PING_INTERVAL, stream.next()).await {
            Ok(Some(message)) => {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((change, published_at)) = decode_message(&text)
                    && let Some(loss) = hand_over(events, change, published_at)?
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

/// Hands a change to the listener without waiting: `Some(FellBehind)` when its buffer is full.
fn hand_over(
    events: &mpsc::Sender<FeedEvent>,
    change: Invalidation,
    published_at: Option<u64>,
) -> Result<Option<FeedLoss>, Closed> {
    match events.try_send(FeedEvent::Change(change, published_at)) {
        Ok(()) => Ok(None),
        Err(mpsc::error::TrySendError::Full(_)) => Ok(Some(FeedLoss::FellBehind)),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::{FeedLoss, decode, encode, hand_over};
    use crate::store::{FeedEvent, Invalidation};
    use tokio::sync::mpsc;

    #[test]
    fn a_full_buffer_is_a_loss_never_a_silent_drop_nor_a_wait() {
        let (events, mut receiver) = mpsc::channel(2);
        let change = || Invalidation::SessionDeleted("s".into());
        assert!(matches!(hand_over(&events, change(), None), Ok(None)));
        assert!(matches!(hand_over(&events, change(), None), Ok(None)));
        assert!(matches!(
            hand_over(&events, change(), None),
            Ok(Some(FeedLoss::FellBehind))
        ));
        assert_eq!(
            receiver.try_recv(),
            Ok(FeedEvent::Change(change(), None)),
            "what was handed over stays in order"
        );
        drop(receiver);
        assert!(hand_over(&events, change(), None).is_err());
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
