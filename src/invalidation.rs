//! The invalidation feed: how changes made at one sidecar reach every other sidecar's cache.
//!
//! Writers PUBLISH a short message (`d <sid>`, `u <sid>`, `r <jti>`) on one channel; a Redis
//! Cluster forwards a plain PUBLISH to every node, so each sidecar holds one SUBSCRIBE
//! connection to any live node. When that connection is lost the sidecar cannot know what it
//! missed: it marks every cached decision that depends on the store as needing a re-check
//! ([`DecisionCache::distrust_all`]), and again once it is subscribed anew (for what was cached
//! while it was deaf), then resubscribes through the next node with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinSet;

use crate::cache::DecisionCache;
use crate::metrics::Metrics;
use crate::store::Invalidation;
use crate::store::redis::SubscriptionSource;

/// First pause before resubscribing; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A subscription that has said nothing for this long is pinged; one that does not answer
/// within [`PING_TIMEOUT`] is treated as lost (a node can hang without closing its socket).
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// The wire form of a change.
pub fn encode(change: &Invalidation) -> String {
    match change {
        Invalidation::SessionDeleted(sid) => format!("d {sid}"),
        Invalidation::SessionUpdated(sid) => format!("u {sid}"),
        Invalidation::TokenRevoked(jti) => format!("r {jti}"),
    }
}

/// Reads a message; `None` for anything this version does not know.
pub fn decode(message: &str) -> Option<Invalidation> {
    let (kind, id) = message.split_once(' ')?;
    if id.is_empty() {
        return None;
    }
    match kind {
        "d" => Some(Invalidation::SessionDeleted(id.to_owned())),
        "u" => Some(Invalidation::SessionUpdated(id.to_owned())),
        "r" => Some(Invalidation::TokenRevoked(id.to_owned())),
        _ => None,
    }
}

fn kind_label(change: &Invalidation) -> &'static str {
    match change {
        Invalidation::SessionDeleted(_) => "session_deleted",
        Invalidation::SessionUpdated(_) => "session_updated",
        Invalidation::TokenRevoked(_) => "token_revoked",
    }
}

/// Starts the subscriber task; it runs until the set is shut down.
pub fn spawn_subscriber(
    tasks: &mut JoinSet<()>,
    source: SubscriptionSource,
    cache: DecisionCache,
    metrics: Arc<Metrics>,
) {
    tasks.spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut node = 0usize;
        loop {
            let info = &source.nodes[node % source.nodes.len()];
            node = node.wrapping_add(1);
            match subscribe(info, &source).await {
                Ok(pubsub) => {
                    metrics.set_subscription_connected(true);
                    // Whatever was cached while no feed was up may have missed a change.
                    cache.distrust_all();
                    backoff = FIRST_BACKOFF;
                    tracing::info!(node = %info.addr(), "invalidation feed subscribed");
                    listen(pubsub, &cache, &metrics).await;
                    metrics.set_subscription_connected(false);
                    cache.distrust_all();
                    tracing::warn!(
                        node = %info.addr(),
                        "invalidation feed lost: cached session decisions will be re-checked"
                    );
                }
                Err(error) => {
                    tracing::debug!(node = %info.addr(), %error, "cannot subscribe");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
}

async fn subscribe(
    info: &redis::ConnectionInfo,
    source: &SubscriptionSource,
) -> Result<redis::aio::PubSub, String> {
    let client = match &source.ca_pem {
        Some(ca) => redis::Client::build_with_tls(
            info.clone(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        None => redis::Client::open(info.clone()),
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

/// Applies messages until the connection ends or stops answering pings.
async fn listen(pubsub: redis::aio::PubSub, cache: &DecisionCache, metrics: &Metrics) {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        match tokio::time::timeout(PING_INTERVAL, stream.next()).await {
            Ok(Some(message)) => {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some(change) = decode(&text) {
                    metrics.invalidation_received(kind_label(&change));
                    cache.apply(&change).await;
                }
            }
            Ok(None) => return,
            Err(_) => {
                let ping = tokio::time::timeout(PING_TIMEOUT, sink.ping::<String>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::store::Invalidation;

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
