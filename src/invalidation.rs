//! What the cache does with a store's invalidation feed ([`crate::store::FeedEvent`]): apply
//! each change, and distrust what may have missed one.
//!
//! When the feed is lost the sidecar cannot know what it missed: it marks every cached decision
//! that depends on the store as needing a re-check ([`DecisionCache::distrust_all`]), and again
//! once the feed is back (for what was cached while it was deaf). How a feed connects, keeps
//! alive and resubscribes is the store's business (for Redis, [`crate::store::redis::feed`]).

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::cache::DecisionCache;
use crate::metrics::Metrics;
use crate::store::{FeedEvent, FeedEvents, FeedLoss, Invalidation};

fn kind_label(change: &Invalidation) -> &'static str {
    match change {
        Invalidation::SessionDeleted(_) => "session_deleted",
        Invalidation::SessionUpdated(_) => "session_updated",
        Invalidation::TokenRevoked(_) => "token_revoked",
    }
}

/// Starts the task that applies `events` to `cache`; it runs until the set is shut down or the
/// feed ends.
pub fn spawn(
    tasks: &mut JoinSet<()>,
    events: FeedEvents,
    cache: DecisionCache,
    metrics: Arc<Metrics>,
) {
    tasks.spawn(follow(events, cache, metrics));
}

/// Applies every event of the feed to the cache, until the feed ends.
pub async fn follow(mut events: FeedEvents, cache: DecisionCache, metrics: Arc<Metrics>) {
    while let Some(event) = events.recv().await {
        match event {
            FeedEvent::Subscribed => {
                metrics.set_subscription_connected(true);
                // Whatever was cached while no feed was up may have missed a change.
                cache.distrust_all();
            }
            FeedEvent::Change(change) => {
                metrics.invalidation_received(kind_label(&change));
                cache.apply(&change).await;
            }
            FeedEvent::Lost(loss) => {
                metrics.set_subscription_connected(false);
                metrics.subscription_lost(loss == FeedLoss::FellBehind);
                cache.distrust_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::follow;
    use crate::cache::DecisionCache;
    use crate::metrics::Metrics;
    use crate::store::{FeedEvent, FeedLoss, Invalidation};

    fn sample(metrics: &Metrics, name: &str) -> String {
        String::from_utf8_lossy(&metrics.render(0, 0))
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_owned()
    }

    fn gauge(metrics: &Metrics) -> String {
        sample(
            metrics,
            "session_sidecar_invalidation_subscription_connected",
        )
    }

    fn losses(metrics: &Metrics) -> String {
        sample(
            metrics,
            "session_sidecar_invalidation_subscription_losses_total",
        )
    }

    /// A hand-driven feed: every loss and every (re)subscription distrusts what is cached, and
    /// the gauge follows the feed.
    #[tokio::test(start_paused = true)]
    async fn losses_and_resubscriptions_distrust_the_cache() {
        let metrics = Arc::new(Metrics::new());
        let cache = DecisionCache::new(Duration::from_secs(60), 100, Arc::clone(&metrics));
        let (events, receiver) = tokio::sync::mpsc::channel(8);
        let task = tokio::spawn(follow(receiver, cache.clone(), Arc::clone(&metrics)));
        let settle = || tokio::time::sleep(Duration::from_millis(1));

        events.send(FeedEvent::Subscribed).await.unwrap();
        settle().await;
        let after_subscribe = cache.trust_epoch();
        assert!(gauge(&metrics).ends_with(" 1"));
        assert!(losses(&metrics).ends_with(" 0"), "subscribing is no loss");

        events
            .send(FeedEvent::Change(Invalidation::SessionUpdated("s".into())))
            .await
            .unwrap();
        settle().await;
        assert_eq!(
            cache.trust_epoch(),
            after_subscribe,
            "a change distrusts nothing"
        );

        events
            .send(FeedEvent::Lost(FeedLoss::FellBehind))
            .await
            .unwrap();
        settle().await;
        assert_eq!(cache.trust_epoch(), after_subscribe + 1, "a loss distrusts");
        assert!(gauge(&metrics).ends_with(" 0"));
        assert!(losses(&metrics).ends_with(" 1"), "a loss is counted");
        assert!(
            sample(
                &metrics,
                "session_sidecar_invalidation_feed_overflows_total"
            )
            .ends_with(" 1"),
            "falling behind is counted as such"
        );

        events.send(FeedEvent::Subscribed).await.unwrap();
        settle().await;
        assert_eq!(
            cache.trust_epoch(),
            after_subscribe + 2,
            "what was cached while deaf is distrusted too"
        );

        drop(events);
        task.await.unwrap();
    }
}
