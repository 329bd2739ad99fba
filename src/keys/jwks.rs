//! Keys from a remote JWKS (`--jwks-url [ISS=]URL`) or an OpenID Connect issuer
//! (`--oidc-issuer URL`): one [`JwksSource`] per flag, which holds the current key set behind a
//! cheap handle (a `watch` channel of `Arc<JwkKeys>`) and owns the one background task that
//! refreshes it.
//!
//! What it owns:
//! - turning a JWKS document into verification keys: RSA, EC P-256/P-384 and OKP Ed25519,
//!   each bound to the algorithms of its key type (narrowed to its `alg` when it names one);
//!   `oct` keys are never taken from a URL, keys whose `use` is not `sig` are ignored, and one
//!   bad key is skipped (and counted) without failing the set;
//! - OpenID Connect discovery: the issuer's `/.well-known/openid-configuration` names its
//!   `jwks_uri`; the document's `issuer` must be the configured one exactly (OpenID Connect
//!   Discovery §4.3), and an `https` issuer's keys must come from an `https` URL. The
//!   `jwks_uri` is kept until a fetch of it fails, then discovered again;
//! - the refresh policy: periodic (the response's `Cache-Control: max-age`, within
//!   [`MIN_REFRESH`]..[`MAX_REFRESH`], [`DEFAULT_REFRESH`] without one), a retry with backoff
//!   capped at [`MAX_BACKOFF`] after a failure (the last good keys are kept meanwhile), and
//!   refreshes on demand for an unknown `kid`: single-flight, at most one fetch per
//!   [`MIN_FETCH_INTERVAL`] however many requests ask.
//!
//! What it must never do: log a key or a token, let a slow or huge response stall it (every
//! fetch is bounded in time, [`FETCH_TIMEOUT`], and size, [`MAX_JWKS_BYTES`]), or fail the
//! sidecar's start because the provider cannot be reached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper::header::{ACCEPT, CACHE_CONTROL, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Refresh interval when the JWKS response says nothing about caching.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Shortest refresh interval a `Cache-Control: max-age` may ask for.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);
/// Longest refresh interval a `Cache-Control: max-age` may ask for.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Longest wait between retries after failed fetches (the backoff starts at 1 s and doubles).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Fewest time between two fetches of one key set, whatever asks for them (SPEC §2).
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(1);
/// A whole fetch (connect, headers, body) that takes longer has failed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A JWKS response body larger than this has failed.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long a `kid` that a refresh did not find is answered `unknown_key` without asking for
/// another refresh (the negative cache of `kid`s just looked for).
pub const MISSING_KID_MEMORY: Duration = Duration::from_secs(5);
/// Most `kid`s the negative cache holds; when full it starts over (a flood of made-up `kid`s is
/// bounded by the once-a-second fetch limit anyway).
const MISSING_KIDS_KEPT: usize = 1024;

/// Path of the discovery document under an issuer (OpenID Connect Discovery §4).
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Where a key set is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locator {
    /// `url` is the JWKS itself (`--jwks-url`).
    Jwks,
    /// `url` is an issuer's discovery document, which names the JWKS (`--oidc-issuer`).
    Discovery,
}

/// A `--jwks-url` value (`[ISS=]URL`) or an `--oidc-issuer` value (`URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSpec {
    /// With `ISS=`, or the issuer of `--oidc-issuer`: the only issuer whose tokens these keys
    /// verify.
    pub issuer: Option<String>,
    /// The JWKS, or the discovery document (see `locator`).
    pub url: Uri,
    pub locator: Locator,
}

impl JwksSpec {
    /// Parses an `--oidc-issuer` value: the issuer exactly as its tokens' `iss` spells it
    /// (a trailing `/` matters); its discovery document is `ISSUER/.well-known/openid-configuration`
    /// (without the issuer's trailing `/`).
    pub fn oidc_issuer(text: &str) -> Result<JwksSpec, String> {
        let issuer = parse_url(text)?;
        if issuer.query().is_some() || text.contains('#') {
            return Err(format!(
                "`{text}`: an issuer has no query or fragment (OpenID Connect Discovery §3)"
            ));
        }
        let discovery = format!("{}{DISCOVERY_PATH}", text.trim_end_matches('/'));
        Ok(JwksSpec {
            issuer: Some(text.to_owned()),
            url: parse_url(&discovery)?,
            locator: Locator::Discovery,
        })
    }

    /// Parses `[ISS=]URL`. The text splits at its first `=` when what follows is an `http(s)`
    /// URL (an issuer is itself often a URL); otherwise the whole text is the URL (whose query
    /// may hold a `=`).
    pub fn parse(text: &str) -> Result<JwksSpec, String> {
        if let Some((issuer, url)) = text.split_once('=')
            && let Ok(url) = parse_url(url)
        {
            if issuer.is_empty() {
                return Err(format!("`{text}`: the issuer before `=` is empty"));
            }
            return Ok(JwksSpec {
                issuer: Some(issuer.to_owned()),
                url,
                locator: Locator::Jwks,
            });
        }
        Ok(JwksSpec {
            issuer: None,
            url: parse_url(text)?,
            locator: Locator::Jwks,
        })
    }
}

fn parse_url(text: &str) -> Result<Uri, String> {
    let url: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{text}` is not an http:// or https:// URL")),
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    // Credentials in the URL would end up in logs and metric labels.
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("a JWKS URL with user:password@ is not supported".to_owned());
    }
    Ok(url)
}

/// One verification key from a JWKS.
pub struct JwkKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// What the key may verify: its key type's algorithms, or only the one its `alg` names.
    pub algorithms: Vec<Algorithm>,
}

/// One loaded key set: the usable keys of a JWKS document and when it was fetched.
pub struct JwkKeys {
    pub keys: Vec<JwkKey>,
    pub fetched_at: Instant,
}

impl JwkKeys {
    /// The keys that may verify a token with this `alg` and `kid`: one with a `kid` matches only
    /// that `kid`; one without matches any.
    pub fn candidates(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> impl Iterator<Item = &DecodingKey> {
        self.keys
            .iter()
            .filter(move |k| {
                k.algorithms.contains(&alg)
                    && (k.kid.is_none() || kid.is_none() || k.kid.as_deref() == kid)
            })
            .map(|k| &k.key)
    }
}

/// What a JWKS document held, once parsed.
pub struct ParsedJwks {
    pub keys: Vec<JwkKey>,
    /// Keys that could not be used (bad material, an `alg` its key type cannot have, an
    /// unsupported curve): skipped, the rest of the set stands.
    pub skipped: usize,
    /// Keys left out on purpose: `use` other than `sig`, `oct` keys.
    pub ignored: usize,
}

/// Why a fetch failed (the last good keys stay in use).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    #[error("discovery document refused: {0}")]
    Discovery(String),
}

/// Parses a JWKS document. The document must be a JSON object with a `keys` array; each key is
/// read on its own, so one that cannot be used is skipped, not the whole set.
pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, FetchError> {
    let document: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| FetchError::NotJwks(e.to_string()))?;
    let Some(entries) = document.get("keys").and_then(serde_json::Value::as_array) else {
        return Err(FetchError::NotJwks("no `keys` array".into()));
    };
    let mut parsed = ParsedJwks {
        keys: Vec::with_capacity(entries.len()),
        skipped: 0,
        ignored: 0,
    };
    for entry in entries {
        match key_from(entry) {
            KeyVerdict::Use(key) => parsed.keys.push(key),
            KeyVerdict::Ignore => parsed.ignored += 1,
            KeyVerdict::Skip => parsed.skipped += 1,
        }
    }
    Ok(parsed)
}

enum KeyVerdict {
    Use(JwkKey),
    Ignore,
    Skip,
}

fn key_from(entry: &serde_json::Value) -> KeyVerdict {
    // `oct` is a shared secret: published at a URL it would let anyone sign (never taken).
    if entry.get("kty").and_then(serde_json::Value::as_str) == Some("oct") {
        return KeyVerdict::Ignore;
    }
    if entry
        .get("use")
        .is_some_and(|usage| usage.as_str() != Some("sig"))
    {
        return KeyVerdict::Ignore;
    }
    let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
        return KeyVerdict::Skip;
    };
    if !matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) {
        return KeyVerdict::Ignore;
    }
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return KeyVerdict::Skip,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return KeyVerdict::Skip,
        },
        AlgorithmParameters::OctetKey(_) => return KeyVerdict::Ignore,
        _ => return KeyVerdict::Skip,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family.to_vec(),
        Some(named) => match Algorithm::try_from(named) {
            // An `alg` its key type cannot have (an RSA key named ES256): a broken key.
            Ok(alg) if family.contains(&alg) => vec![alg],
            // An encryption algorithm (RSA-OAEP, ...): not a signing key.
            Err(_)
                if entry
                    .get("alg")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|name| {
                        name.starts_with("RSA") || name.starts_with("ECDH") || name.starts_with('A')
                    }) =>
            {
                return KeyVerdict::Ignore;
            }
            _ => return KeyVerdict::Skip,
        },
    };
    match DecodingKey::from_jwk(&jwk) {
        Ok(key) => KeyVerdict::Use(JwkKey {
            kid: jwk.common.key_id,
            key,
            algorithms,
        }),
        Err(_) => KeyVerdict::Skip,
    }
}

/// The refresh interval a `Cache-Control` header asks for, within bounds.
pub fn refresh_interval(cache_control: Option<&HeaderValue>) -> Duration {
    let asked = cache_control
        .and_then(|value| value.to_str().ok())
        .and_then(|text| {
            let mut asked = None;
            for directive in text.split(',').map(str::trim) {
                let lower = directive.to_ascii_lowercase();
                if lower == "no-cache" || lower == "no-store" {
                    return Some(Duration::ZERO);
                }
                if let Some(seconds) = lower.strip_prefix("max-age=") {
                    asked = seconds
                        .trim_matches('"')
                        .parse::<u64>()
                        .ok()
                        .map(Duration::from_secs);
                }
            }
            asked
        });
    asked.map_or(DEFAULT_REFRESH, |asked| {
        asked.clamp(MIN_REFRESH, MAX_REFRESH)
    })
}

/// What a request learns from asking for a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// A fetch finished after the request asked (whatever its outcome): look again.
    Done,
    /// A fetch was made less than [`MIN_FETCH_INTERVAL`] ago: none is made now.
    Suppressed,
    /// The fetch in flight did not finish within the wait.
    TimedOut,
}

/// The state the refresh task publishes: the current keys (`None` until the first load) and
/// how many fetches have finished.
#[derive(Clone)]
struct Published {
    keys: Option<Arc<JwkKeys>>,
    fetches: u64,
}

/// Whether a fetch is running and when the last one started (the single-flight and the rate
/// limit of on-demand refreshes).
struct Schedule {
    in_flight: bool,
    last_started: Option<Instant>,
}

struct Inner {
    spec: JwksSpec,
    /// The `issuer` label of this source's metrics: its `ISS`, else `--issuer`, else `*`.
    label: String,
    published: watch::Receiver<Published>,
    schedule: Mutex<Schedule>,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// `kid`s a refresh did not find, and when.
    missing_kids: Mutex<HashMap<Box<str>, Instant>>,
}

/// A key set that comes from a URL: a cheap handle on the current keys, refreshed by one
/// background task (started with [`JwksSource::spawn`]).
#[derive(Clone)]
pub struct JwksSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("url", &self.inner.spec.url.to_string())
            .field("issuer", &self.inner.spec.issuer)
            .finish()
    }
}

impl JwksSource {
    /// Starts the source's refresh task in `tasks` (it fetches at once, then keeps the set
    /// fresh until the task set is shut down). `default_issuer` is `--issuer`, for the label
    /// of a source without `ISS=`.
    pub fn spawn(
        spec: JwksSpec,
        default_issuer: Option<&str>,
        metrics: Arc<Metrics>,
        tasks: &mut JoinSet<()>,
    ) -> JwksSource {
        let label = spec
            .issuer
            .as_deref()
            .or(default_issuer)
            .unwrap_or("*")
            .to_owned();
        if spec.url.scheme_str() == Some("http") && !is_loopback(&spec.url) {
            tracing::warn!(
                url = %spec.url,
                "--jwks-url over plain http://: anyone on the path can replace the keys"
            );
        }
        let (publish, published) = watch::channel(Published {
            keys: None,
            fetches: 0,
        });
        let source = JwksSource {
            inner: Arc::new(Inner {
                spec,
                label,
                published,
                schedule: Mutex::new(Schedule {
                    in_flight: false,
                    last_started: None,
                }),
                wake: Notify::new(),
                metrics,
                missing_kids: Mutex::new(HashMap::new()),
            }),
        };
        tasks.spawn(refresh_loop(source.clone(), publish));
        source
    }

    /// The issuer its keys are bound to (`ISS=`), if any.
    pub fn issuer(&self) -> Option<&str> {
        self.inner.spec.issuer.as_deref()
    }

    /// The `issuer` label of its metrics.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The URL, for metrics and logs.
    pub fn url(&self) -> &Uri {
        &self.inner.spec.url
    }

    /// The current keys; `None` until a first fetch succeeded.
    pub fn keys(&self) -> Option<Arc<JwkKeys>> {
        self.inner.published.borrow().keys.clone()
    }

    /// Whether a key set was loaded once.
    pub fn loaded(&self) -> bool {
        self.inner.published.borrow().keys.is_some()
    }

    /// Remembers that a refresh did not find this `kid`, for [`MISSING_KID_MEMORY`].
    pub fn remember_missing(&self, kid: &str) {
        let mut missing = self.inner.missing_kids.lock();
        if missing.len() >= MISSING_KIDS_KEPT {
            missing.clear();
        }
        missing.insert(kid.into(), Instant::now());
    }

    /// Whether a refresh less than [`MISSING_KID_MEMORY`] ago did not find this `kid`.
    pub fn recently_missing(&self, kid: &str) -> bool {
        self.inner
            .missing_kids
            .lock()
            .get(kid)
            .is_some_and(|at| at.elapsed() < MISSING_KID_MEMORY)
    }

    /// Asks for a refresh because a token named a `kid` the set does not hold, and waits (at
    /// most `wait`) for it. Single-flight: a request that finds a fetch in flight waits for
    /// that one; a request less than [`MIN_FETCH_INTERVAL`] after the last fetch started
    /// makes none and is answered [`Refresh::Suppressed`] at once.
    pub async fn refresh_for_unknown_kid(&self, wait: Duration) -> Refresh {
        let mut published = self.inner.published.clone();
        let seen = published.borrow_and_update().fetches;
        if !self.request_fetch() {
            self.inner.metrics.key_refresh_suppressed(&self.inner.label);
            return Refresh::Suppressed;
        }
        match tokio::time::timeout(wait, published.wait_for(|p| p.fetches > seen)).await {
            Ok(Ok(_)) => Refresh::Done,
            // The task is gone (shutting down) or the wait is over.
            Ok(Err(_)) | Err(_) => Refresh::TimedOut,
        }
    }

    /// Asks the task for a fetch unless one is in flight (then true: the caller may wait for
    /// it) or the last one started less than [`MIN_FETCH_INTERVAL`] ago (then false).
    pub fn request_fetch(&self) -> bool {
        let mut schedule = self.inner.schedule.lock();
        if schedule.in_flight {
            return true;
        }
        if schedule
            .last_started
            .is_some_and(|at| at.elapsed() < MIN_FETCH_INTERVAL)
        {
            return false;
        }
        schedule.in_flight = true;
        schedule.last_started = Some(Instant::now());
        self.inner.wake.notify_one();
        true
    }
}

fn is_loopback(url: &Uri) -> bool {
    match url.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP(S) client for JWKS fetches: the system's roots, the aws-lc-rs provider.
fn http_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    http.set_nodelay(true);
    let provider = || Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider())
    {
        Ok(builder) => builder,
        Err(error) => {
            // http:// still works; https:// fails each fetch (and says so in the log).
            tracing::warn!(%error, "no system CA certificates: https:// JWKS URLs will fail");
            let empty = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            match empty {
                Ok(config) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config),
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder_with_protocol_versions(&[])
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            }
        }
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One GET, bounded in time ([`FETCH_TIMEOUT`]) and size ([`MAX_JWKS_BYTES`]): the body of a
/// `200` and its `Cache-Control`.
async fn get(
    client: &HttpClient,
    url: &Uri,
    accept: &'static str,
) -> Result<(Bytes, Option<HeaderValue>), FetchError> {
    let request = hyper::Request::get(url.clone())
        .header(ACCEPT, accept)
        .body(Empty::new())
        .map_err(|e| FetchError::Request(e.to_string()))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| FetchError::Request(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let cache_control = response.headers().get(CACHE_CONTROL).cloned();
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge(MAX_JWKS_BYTES)
                } else {
                    FetchError::Request(e.to_string())
                }
            })?
            .to_bytes();
        Ok((body, cache_control))
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| FetchError::Timeout(FETCH_TIMEOUT))?
}

/// One JWKS fetch: the parsed set and the refresh interval its response asked for.
async fn fetch(client: &HttpClient, url: &Uri) -> Result<(ParsedJwks, Duration), FetchError> {
    let (body, cache_control) =
        get(client, url, "application/jwk-set+json, application/json").await?;
    Ok((parse_jwks(&body)?, refresh_interval(cache_control.as_ref())))
}

/// Reads an issuer's discovery document: its `jwks_uri`.
async fn discover(client: &HttpClient, spec: &JwksSpec) -> Result<Uri, FetchError> {
    let (body, _) = get(client, &spec.url, "application/json").await?;
    jwks_uri_of(&body, spec.issuer.as_deref().unwrap_or_default())
}

/// The `jwks_uri` of a discovery document, which must be `issuer`'s: its `issuer` member is
/// the configured issuer exactly, and an `https` issuer's keys are not fetched over `http`.
pub fn jwks_uri_of(document: &[u8], issuer: &str) -> Result<Uri, FetchError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let discovery: Discovery = serde_json::from_slice(document)
        .map_err(|e| FetchError::Discovery(format!("not a discovery document: {e}")))?;
    if discovery.issuer != issuer {
        return Err(FetchError::Discovery(format!(
            "it names the issuer `{}`, not `{issuer}`",
            discovery.issuer
        )));
    }
    let jwks_uri = parse_url(&discovery.jwks_uri).map_err(FetchError::Discovery)?;
    if issuer.starts_with("https:") && jwks_uri.scheme_str() != Some("https") {
        return Err(FetchError::Discovery(
            "an https issuer's jwks_uri must be https".into(),
        ));
    }
    Ok(jwks_uri)
}

/// The source's task: fetch, publish, sleep until the next refresh is due or one is asked for.
async fn refresh_loop(source: JwksSource, publish: watch::Sender<Published>) {
    let inner = &source.inner;
    let metrics = &inner.metrics;
    let client = http_client();
    let mut backoff = Duration::from_secs(1);
    // With discovery: the `jwks_uri` found, kept until a fetch of it fails.
    let mut discovered: Option<Uri> = None;
    loop {
        // Never two fetches within MIN_FETCH_INTERVAL, whoever asked. A request that woke this
        // task has claimed the fetch (in_flight) after checking the interval itself; a periodic
        // or retry fetch claims it here, waiting out the interval if needed.
        let pause = {
            let mut schedule = inner.schedule.lock();
            if schedule.in_flight {
                None
            } else {
                schedule.in_flight = true;
                schedule
                    .last_started
                    .map(|at| MIN_FETCH_INTERVAL.saturating_sub(at.elapsed()))
                    .filter(|pause| !pause.is_zero())
            }
        };
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        inner.schedule.lock().last_started = Some(Instant::now());
        let outcome = match inner.spec.locator {
            Locator::Jwks => fetch(&client, &inner.spec.url).await,
            Locator::Discovery => {
                let jwks_uri = match discovered.take() {
                    Some(uri) => Ok(uri),
                    None => discover(&client, &inner.spec).await,
                };
                match jwks_uri {
                    Ok(uri) => {
                        let outcome = fetch(&client, &uri).await;
                        // A JWKS that cannot be fetched may have moved: discover it again.
                        if outcome.is_ok() {
                            discovered = Some(uri);
                        }
                        outcome
                    }
                    Err(error) => Err(error),
                }
            }
        };
        let next = match outcome {
            Ok((parsed, interval)) => {
                metrics.key_refresh(&inner.label, "ok");
                if parsed.skipped > 0 {
                    metrics.jwks_keys_skipped(&inner.label, parsed.skipped);
                    tracing::warn!(
                        url = %inner.spec.url,
                        skipped = parsed.skipped,
                        "JWKS keys skipped: unusable key material or an alg their key type cannot have"
                    );
                }
                tracing::debug!(
                    url = %inner.spec.url,
                    keys = parsed.keys.len(),
                    ignored = parsed.ignored,
                    "JWKS loaded"
                );
                let keys = Arc::new(JwkKeys {
                    keys: parsed.keys,
                    fetched_at: Instant::now(),
                });
                publish.send_modify(|p| {
                    p.keys = Some(keys);
                    p.fetches += 1;
                });
                backoff = Duration::from_secs(1);
                interval
            }
            Err(error) => {
                metrics.key_refresh(&inner.label, "error");
                let kept = publish.borrow().keys.is_some();
                tracing::warn!(
                    url = %inner.spec.url,
                    %error,
                    retry_in = ?backoff,
                    "JWKS fetch failed; {}",
                    if kept { "the last good keys stay in use" } else { "no keys loaded yet" }
                );
                publish.send_modify(|p| p.fetches += 1);
                let next = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                next
            }
        };
        inner.schedule.lock().in_flight = false;
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = inner.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_splits_at_the_first_equals_only_before_a_url() {
        let bound = JwksSpec::parse("https://issuer.example/=https://idp.example/jwks").unwrap();
        assert_eq!(bound.issuer.as_deref(), Some("https://issuer.example/"));
        assert_eq!(bound.url, "https://idp.example/jwks");
        let query = JwksSpec::parse("https://idp.example/jwks?tenant=a").unwrap();
        assert_eq!(query.issuer, None);
        assert_eq!(query.url, "https://idp.example/jwks?tenant=a");
        assert!(JwksSpec::parse("ftp://x/jwks").is_err());
        assert!(JwksSpec::parse("=http://x/jwks").is_err());
        assert!(JwksSpec::parse("not a url").is_err());
        assert!(JwksSpec::parse("https://user:pw@idp.example/jwks").is_err());
    }

    #[test]
    fn a_discovery_document_must_name_the_issuer_and_keep_https() {
        let doc = |issuer: &str, jwks: &str| {
            serde_json::json!({"issuer": issuer, "jwks_uri": jwks}).to_string()
        };
        let issuer = "https://idp.example/realms/a";
        let uri = jwks_uri_of(doc(issuer, "https://idp.example/certs").as_bytes(), issuer);
        assert_eq!(uri.unwrap(), "https://idp.example/certs");
        // Another issuer (a trailing slash is another issuer too), a downgrade, garbage.
        for (document, why) in [
            (
                doc("https://evil.example", "https://idp.example/certs"),
                "issuer",
            ),
            (
                doc("https://idp.example/realms/a/", "https://idp.example/certs"),
                "slash",
            ),
            (doc(issuer, "http://idp.example/certs"), "downgrade"),
            (doc(issuer, "not a url"), "url"),
            ("{\"issuer\": 1}".to_owned(), "shape"),
        ] {
            assert!(jwks_uri_of(document.as_bytes(), issuer).is_err(), "{why}");
        }
        let plain = "http://127.0.0.1:8080";
        assert!(jwks_uri_of(doc(plain, "http://127.0.0.1:8080/jwks").as_bytes(), plain).is_ok());
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(refresh_interval(None), DEFAULT_REFRESH);
        assert_eq!(
            refresh_interval(Some(&v("public, max-age=600"))),
            Duration::from_secs(600)
        );
        assert_eq!(refresh_interval(Some(&v("max-age=5"))), MIN_REFRESH);
        assert_eq!(refresh_interval(Some(&v("max-age=99999999"))), MAX_REFRESH);
        assert_eq!(refresh_interval(Some(&v("no-store"))), MIN_REFRESH);
        assert_eq!(refresh_interval(Some(&v("max-age=abc"))), DEFAULT_REFRESH);
    }

    #[test]
    fn one_bad_key_does_not_fail_the_set() {
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "good", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            "not even an object"
        ]});
        let parsed = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = parsed.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("good")]);
        assert_eq!(parsed.ignored, 3);
        assert_eq!(parsed.skipped, 3);
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"garbage").is_err());
    }
}
