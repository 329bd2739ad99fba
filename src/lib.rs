//! `session-sidecar`: verifies bearer tokens and serves sessions next to an application, from a
//! local cache in front of a Redis Cluster.
//!
//! # Layout
//! A request flows one way: [`http`] → [`verify`] → [`cache`] → [`store`].
//! - [`config`]: the CLI and environment, turned into the components' own config types.
//! - [`http`]: the API server (forward-auth, introspection, sessions), the admin server, draining.
//! - [`verify`]: token extraction, JWT checks ([`verify::jwt`]), the [`verify::Verifier`] and the
//!   one [`verify::Verdict`] handlers see.
//! - [`decision`]: what is decided about a token (a leaf the cache and the verifier share).
//! - [`sessions`]: session writes, each applied to this sidecar's cache once it is stored.
//! - [`keys`]: the HMAC secret and public keys, and which key a token selects;
//!   [`keys::jwks`]: key sets from URLs (`--jwks-url`), each refreshed by a task it owns.
//! - [`cache`]: the moka cache of decisions, coalesced misses, invalidation by session/token id.
//! - [`store`]: the [`store::SessionStore`] trait, the embedded store and the Redis Cluster store
//!   (with its invalidation feed, [`store::redis::feed`]).
//! - [`invalidation`]: applies a store's feed of changes to the cache; distrust on feed loss.
//! - [`metrics`]: every Prometheus metric.
//! - [`mint`]: signing tokens (`token`, `--dev`, the session API).
//! - [`rules`]: route rules (`--rules-file`): the original route from the proxy's headers, and
//!   what it needs (public, any valid token, claims or session data).
//! - [`error`]: typed errors and their one mapping to reasons and statuses.

#![forbid(unsafe_code)]
// No panics on a request path: unwrap() is banned in the library (tests may use it).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cache;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod error;
pub mod http;
pub mod invalidation;
pub mod keys;
pub mod metrics;
pub mod mint;
pub mod rules;
pub mod sessions;
pub mod store;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::DecisionCache;
use crate::config::Config;
use crate::credentials::AdminCredential;
use crate::error::StoreError;
use crate::http::Limits;
use crate::http::respond::Rejections;
use crate::keys::jwks::JwksSource;
use crate::metrics::Metrics;
use crate::mint::TokenSigner;
use crate::sessions::Sessions;
use crate::store::SessionStore;
use crate::store::StoreConfig;
use crate::verify::Verifier;
use crate::verify::jwt::JwtVerifier;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub(crate) verifier: Verifier,
    pub(crate) sessions: Sessions,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) signer: Option<TokenSigner>,
    pub(crate) rejections: Rejections,
    pub(crate) token_cookie: Option<String>,
    pub(crate) admin_access: AdminAccess,
    pub(crate) limits: Limits,
    pub(crate) session_ttl: Duration,
    /// Set on a shutdown signal: `/readyz` answers 503 and every answer closes its connection.
    pub(crate) draining: Arc<AtomicBool>,
    /// Route rules for forward-auth (`--rules-file`); none: every request needs a valid token.
    pub(crate) rules: Option<rules::Rules>,
}

/// What an [`App`] is made of (for [`Sidecar`], and for tests and fuzz targets that drive the
/// router in process).
pub struct AppParts {
    pub verifier: Verifier,
    pub sessions: Sessions,
    pub metrics: Arc<Metrics>,
    pub signer: Option<TokenSigner>,
    pub token_cookie: Option<String>,
    pub admin_access: AdminAccess,
    pub limits: Limits,
    pub session_ttl: Duration,
}

impl App {
    pub fn new(parts: AppParts) -> App {
        App {
            verifier: parts.verifier,
            sessions: parts.sessions,
            metrics: parts.metrics,
            signer: parts.signer,
            rejections: Rejections::new(),
            token_cookie: parts.token_cookie,
            admin_access: parts.admin_access,
            limits: parts.limits,
            session_ttl: parts.session_ttl,
            draining: Arc::new(AtomicBool::new(false)),
            rules: None,
        }
    }

    /// The same app with route rules for forward-auth.
    pub fn with_rules(mut self, rules: Option<rules::Rules>) -> App {
        self.rules = rules;
        self
    }

    /// The verifier (cache first, then signature, claims and store).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Session writes (store, then this sidecar's cache).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The token signer of the session API, when there is a secret to sign with.
    pub fn signer(&self) -> Option<&TokenSigner> {
        self.signer.as_ref()
    }
}

/// Who may call the session API (SPEC §3.3): it issues tokens every sidecar honours, and
/// loopback is no credential.
pub enum AdminAccess {
    /// `--dev` without `--admin-token-file`: open, for trying it out.
    Open,
    /// No `--admin-token-file`: the session API answers `403 session_api_disabled`.
    Disabled,
    /// Callers present this credential (rotated when its file changes).
    Credential(Arc<AdminCredential>),
}

/// Why the sidecar could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A sidecar whose listeners are bound, ready to [`Sidecar::run`].
pub struct Sidecar {
    app: Arc<App>,
    api: TcpListener,
    unix: Option<(UnixListener, PathBuf)>,
    admin: TcpListener,
    max_header_bytes: usize,
    background: JoinSet<()>,
}

impl Sidecar {
    /// Connects the store, binds every listener and starts the background tasks.
    pub async fn bind(config: Config) -> Result<Sidecar, RunError> {
        // Process-wide and idempotent: the provider rustls uses for `rediss://` handshakes.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let cache = DecisionCache::with_budget(
            config.cache_ttl,
            config.cache_max_entries,
            config.cache_max_bytes,
            Arc::clone(&metrics),
        );
        let mut background = JoinSet::new();
        let store: Arc<dyn SessionStore> = match &config.store {
            StoreConfig::Memory => {
                tracing::warn!(
                    "no --redis-nodes: sessions live in this process only; other sidecars will not see them"
                );
                Arc::new(store::memory::MemoryStore::new())
            }
            StoreConfig::Redis(redis) => {
                Arc::new(store::redis::RedisStore::connect(redis, Arc::clone(&metrics)).await?)
            }
        };
        invalidation::spawn(
            &mut background,
            store.feed(),
            cache.clone(),
            Arc::clone(&metrics),
        );
        let signer = config.signing_secret.as_ref().map(|secret| {
            TokenSigner::new(
                &secret.0,
                config.claims.issuer.clone(),
                config.claims.audience.first().cloned(),
            )
        });
        // Each key set from a URL starts fetching now; until it has loaded, /readyz is 503 and
        // tokens that need it are 503 keys_unavailable (an unreachable provider never stops
        // the start).
        let sources = config
            .jwks
            .into_iter()
            .map(|spec| {
                JwksSource::spawn(
                    spec,
                    config.claims.issuer.as_deref(),
                    Arc::clone(&metrics),
                    &mut background,
                )
            })
            .collect();
        let jwt = JwtVerifier::new(config.keys, &config.claims, config.limits.max_json_depth)
            .with_key_sources(sources);
        let verifier = Verifier::new(
            jwt,
            cache.clone(),
            Arc::clone(&store),
            Arc::clone(&metrics),
            config.session_keys.then(|| {
                verify::session_keys::SessionKeyGate::new(config.session_key_lookups_per_second)
            }),
        )
        .with_claim_headers(config.claim_headers);
        if let Some(rules) = &config.rules {
            tracing::info!(rules = rules.len(), "route rules loaded (--rules-file)");
        }
        let app = App::new(AppParts {
            verifier,
            sessions: Sessions::new(store, cache, config.session_keys),
            metrics,
            signer,
            token_cookie: config.token_cookie,
            admin_access: match (&config.admin_token, config.dev) {
                (Some(credential), _) => {
                    let credential = Arc::new(AdminCredential::new(&credential.0));
                    if let Some(path) = config.admin_token_file.clone() {
                        background.spawn(credentials::follow_file(Arc::clone(&credential), path));
                    }
                    AdminAccess::Credential(credential)
                }
                (None, true) => AdminAccess::Open,
                (None, false) => AdminAccess::Disabled,
            },
            limits: config.limits,
            session_ttl: config.session_ttl,
        });
        let app = Arc::new(app.with_rules(config.rules));
        let api = bind_tcp(config.listen).await?;
        let admin = bind_tcp(config.metrics_listen).await?;
        let unix = match config.listen_unix {
            Some(path) => {
                // A socket file left by a previous run would make bind fail.
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path).map_err(|source| RunError::Bind {
                    address: path.display().to_string(),
                    source,
                })?;
                Some((listener, path))
            }
            None => None,
        };
        Ok(Sidecar {
            app,
            api,
            unix,
            admin,
            max_header_bytes: config.limits.max_header_bytes,
            background,
        })
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
    }

    /// The shared state (for `--dev`, which creates its demo session through it).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Serves until `shutdown` completes, then stops accepting, drains in-flight requests and
    /// returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Sidecar {
            app,
            api,
            unix,
            admin,
            max_header_bytes,
            mut background,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let builder = Arc::new(http::connection_builder(max_header_bytes));
        let mut servers = JoinSet::new();
        let api_app = Arc::clone(&app);
        let api_handler = move |request| {
            let app = Arc::clone(&api_app);
            async move { http::route(&app, request).await }
        };
        servers.spawn(http::serve(
            api,
            Arc::clone(&builder),
            api_handler.clone(),
            stop_rx.clone(),
            Arc::clone(&app.draining),
        ));
        let mut socket_path = None;
        if let Some((listener, path)) = unix {
            servers.spawn(http::serve(
                listener,
                Arc::clone(&builder),
                api_handler,
                stop_rx.clone(),
                Arc::clone(&app.draining),
            ));
            socket_path = Some(path);
        }
        let admin_app = Arc::clone(&app);
        let admin_handler = move |request| {
            let app = Arc::clone(&admin_app);
            async move { http::admin::route(&app, request).await }
        };
        servers.spawn(http::serve(
            admin,
            builder,
            admin_handler,
            stop_rx,
            Arc::clone(&app.draining),
        ));

        shutdown.await;
        // First unready, answering with `Connection: close` for a moment; then no new
        // connections, and the in-flight requests are finished.
        tracing::info!("shutting down: unready, closing connections after their next answer");
        app.draining.store(true, Ordering::Release);
        tokio::time::sleep(http::DRAIN_GRACE).await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        while servers.join_next().await.is_some() {}
        background.shutdown().await;
        if let Some(path) = socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn bind_tcp(address: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Bind {
            address: address.to_string(),
            source,
        })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
