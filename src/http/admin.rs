//! The admin server on `--metrics-listen`: `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (keys loaded, every key set from a URL loaded once, and the store reachable).
//! Nothing here touches the API's data path.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::respond::{self, HttpResponse};
use crate::App;

/// Longest time `/readyz` waits for the store.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Routes one admin request.
pub async fn route(app: &App, request: Request<Incoming>) -> HttpResponse {
    match request.uri().path() {
        "/metrics" => {
            let cache = app.verifier.cache();
            cache.run_pending_tasks().await;
            for source in app.verifier.jwt().key_sources() {
                if let Some(keys) = source.keys() {
                    app.metrics.set_key_set(
                        source.label(),
                        &source.url().to_string(),
                        keys.fetched_at.elapsed(),
                        keys.keys.len(),
                    );
                }
            }
            let body = app
                .metrics
                .render(cache.entry_count(), cache.weighted_bytes());
            respond::text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        "/healthz" => respond::text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if app.draining.load(std::sync::atomic::Ordering::Acquire) => respond::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        ),
        "/readyz" => {
            if !app.verifier.jwt().key_sources_loaded() {
                return respond::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "key sets not loaded yet\n",
                );
            }
            let store = tokio::time::timeout(READY_PROBE_TIMEOUT, app.sessions.ping()).await;
            match store {
                Ok(Ok(())) if !app.verifier.jwt().keys().allowed().is_empty() => {
                    respond::text(StatusCode::OK, "text/plain", "ready\n")
                }
                Ok(Ok(())) => respond::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no verification keys\n",
                ),
                _ => respond::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "store unreachable\n",
                ),
            }
        }
        _ => respond::text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
