//! Command line and environment: the clap structures, and the one function
//! ([`Config::from_args`]) that turns them into the components' own configuration types
//! (`store::redis::RedisConfig`, `verify::jwt::ClaimRules`, `http::Limits`, the key set), which
//! live next to the components that read them and check themselves. Every file named by a flag is read here,
//! once, at start-up; nothing below this module looks at flags, the environment or paths.
//!
//! Validation collects every problem before failing, so an operator fixes a bad deployment in
//! one round; each problem names its flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jsonwebtoken::Algorithm;

use crate::credentials::{read_admin_credential, read_trimmed};
use crate::error::ConfigError;
use crate::http::Limits;
use crate::keys::jwks::JwksSpec;
use crate::keys::{KeySet, PublicKeySpec};
use crate::rules::Rules;
use crate::store::StoreConfig;
use crate::store::redis::{RedisConfig, RedisConfigError};
use crate::verify::claim_headers::ClaimHeaders;
use crate::verify::jwt::ClaimRules;

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash output, 32 bytes for HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// `session-sidecar`: verifies bearer tokens and serves sessions next to an application.
#[derive(Debug, Parser)]
#[command(name = "session-sidecar", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Serve(Box<ServeArgs>),
    /// Mint a test token (HS256) signed with a secret file.
    Token(TokenArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `serve`. Each also reads `SIDECAR_<FLAG>` from the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Zero-config trial: embedded store, a random HS256 secret, prints a token and a curl line.
    #[arg(long, env = "SIDECAR_DEV")]
    pub dev: bool,

    /// Verification and session API address (keep it on loopback: only the pod reaches it).
    #[arg(long, env = "SIDECAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The same API on a Unix socket.
    #[arg(long, env = "SIDECAR_LISTEN_UNIX")]
    pub listen_unix: Option<PathBuf>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SIDECAR_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,

    /// Redis Cluster seed nodes, comma separated (redis://host:port, rediss:// for TLS).
    /// None: the embedded in-memory store (one process only).
    #[arg(long, env = "SIDECAR_REDIS_NODES", value_delimiter = ',')]
    pub redis_nodes: Vec<String>,

    /// Redis ACL user name.
    #[arg(long, env = "SIDECAR_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// File holding the Redis ACL password.
    #[arg(long, env = "SIDECAR_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// PEM file of the CA certificates that sign the nodes' TLS certificates (`rediss://`);
    /// without it, the system's root certificates are trusted.
    #[arg(long, env = "SIDECAR_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Route session reads to replicas.
    #[arg(long, env = "SIDECAR_REDIS_READ_FROM_REPLICAS")]
    pub redis_read_from_replicas: bool,

    /// Also subscribe the invalidation feed to every primary (true|false): each change then
    /// arrives straight from the node that published it, not over the cluster bus.
    #[arg(
        long,
        env = "SIDECAR_REDIS_FEED_PER_PRIMARY",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub redis_feed_per_primary: bool,

    /// Prefix of every Redis key and of the invalidation channel (share it between sidecars
    /// that must see each other's sessions).
    #[arg(long, env = "SIDECAR_REDIS_KEY_PREFIX", default_value = "sidecar")]
    pub redis_key_prefix: String,

    /// Longest wait for a Redis connection, in milliseconds.
    #[arg(long, env = "SIDECAR_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 500)]
    pub redis_connect_timeout_ms: u64,

    /// Longest wait for one Redis command, in milliseconds.
    #[arg(long, env = "SIDECAR_REDIS_COMMAND_TIMEOUT_MS", default_value_t = 250)]
    pub redis_command_timeout_ms: u64,

    /// Longest wait, in milliseconds, for a replica to acknowledge a revocation (WAIT) before
    /// answering it as unconfirmed.
    #[arg(long, env = "SIDECAR_REDIS_REPLICATION_WAIT_MS", default_value_t = 100)]
    pub redis_replication_wait_ms: u64,

    /// HMAC secret (HS256/384/512); also signs the tokens the session API issues.
    #[arg(long, env = "SIDECAR_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key (RSA, EC P-256/P-384, Ed25519) as [KID=]PATH; repeatable.
    #[arg(long, env = "SIDECAR_JWT_PUBLIC_KEY_FILE", value_delimiter = ',')]
    pub jwt_public_key_file: Vec<String>,

    /// A remote JWKS as [ISS=]URL; repeatable. With ISS= its keys verify only tokens whose
    /// `iss` is ISS; without it, tokens of --issuer.
    #[arg(long, env = "SIDECAR_JWKS_URL", value_delimiter = ',')]
    pub jwks_url: Vec<String>,

    /// An OpenID Connect issuer, as its tokens' `iss` spells it; repeatable. Its discovery
    /// document names its JWKS; its keys verify only tokens whose `iss` is that issuer.
    #[arg(long, env = "SIDECAR_OIDC_ISSUER", value_delimiter = ',')]
    pub oidc_issuer: Vec<String>,

    /// CLAIM=HEADER, repeatable: on a forward-auth 200, the claim (a dotted path into the
    /// payload) as that header; strings as they are, other JSON values as compact JSON.
    #[arg(long, env = "SIDECAR_CLAIM_HEADER", value_delimiter = ',')]
    pub claim_header: Vec<String>,

    /// Allowed algorithms, comma separated (default: those the keys allow). `none` is refused.
    #[arg(long, env = "SIDECAR_ALGORITHMS", value_delimiter = ',')]
    pub algorithms: Vec<String>,

    /// Required `iss`.
    #[arg(long, env = "SIDECAR_ISSUER")]
    pub issuer: Option<String>,

    /// Accepted `aud`; repeatable.
    #[arg(long, env = "SIDECAR_AUDIENCE", value_delimiter = ',')]
    pub audience: Vec<String>,

    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    #[arg(long, env = "SIDECAR_LEEWAY", default_value_t = 30)]
    pub leeway: u64,

    /// Longest time a cached decision is trusted, in seconds; 0 disables the cache.
    #[arg(long, env = "SIDECAR_CACHE_TTL", default_value_t = 60)]
    pub cache_ttl: u64,

    /// Cache bound, in entries.
    #[arg(long, env = "SIDECAR_CACHE_MAX_ENTRIES", default_value_t = 1_000_000)]
    pub cache_max_entries: u64,

    /// Cache bound, in bytes of memory the cache holds (entries, their data and the indexes).
    #[arg(long, env = "SIDECAR_CACHE_MAX_BYTES", default_value_t = 67_108_864)]
    pub cache_max_bytes: u64,

    /// Also read the token from this cookie.
    #[arg(long, env = "SIDECAR_TOKEN_COOKIE")]
    pub token_cookie: Option<String>,

    /// File holding the bearer credential that mutating calls need (required when --listen is
    /// not a loopback address).
    #[arg(long, env = "SIDECAR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Route rules (JSON): method and path of the original request (from the proxy) → public,
    /// authenticated, or requirements on claims and session data.
    #[arg(long, env = "SIDECAR_RULES_FILE")]
    pub rules_file: Option<PathBuf>,

    /// Accept tokens whose header `kid` is a session id, signed with that session's own secret.
    #[arg(long, env = "SIDECAR_SESSION_KEYS")]
    pub session_keys: bool,

    /// With --session-keys: store lookups per second for `kid`s not seen naming a live session
    /// lately (unsigned input can name any `kid`; this bounds what it costs the store).
    #[arg(
        long,
        env = "SIDECAR_SESSION_KEY_LOOKUPS_PER_SECOND",
        default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub session_key_lookups_per_second: u32,

    /// Largest token accepted, in bytes.
    #[arg(long, env = "SIDECAR_MAX_TOKEN_BYTES", default_value_t = 8 * 1024)]
    pub max_token_bytes: usize,

    /// Largest request head (request line and all headers), in bytes; larger answers 431.
    #[arg(long, env = "SIDECAR_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "SIDECAR_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Largest session data (serialized JSON), in bytes.
    #[arg(long, env = "SIDECAR_MAX_SESSION_BYTES", default_value_t = 16 * 1024)]
    pub max_session_bytes: usize,

    /// Deepest JSON nesting accepted in bodies and token payloads.
    #[arg(long, env = "SIDECAR_MAX_JSON_DEPTH", default_value_t = 32)]
    pub max_json_depth: usize,

    /// Default lifetime of a session created without `ttl`, in seconds.
    #[arg(long, env = "SIDECAR_SESSION_TTL", default_value_t = 3600)]
    pub session_ttl: u64,

    /// Log format.
    #[arg(long, env = "SIDECAR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Flags of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// HMAC secret file to sign with.
    #[arg(long)]
    pub jwt_secret_file: PathBuf,
    /// The `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// The `sid` claim (binds the token to a session).
    #[arg(long)]
    pub sid: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Extra claim `k=v`; `v` is read as JSON when it parses, as a string otherwise. Repeatable.
    #[arg(long = "claim", value_parser = parse_claim)]
    pub claims: Vec<(String, serde_json::Value)>,
    /// The `iss` claim.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    pub audience: Option<String>,
    /// Add a random `jti` (on by default; `--no-jti` leaves it out).
    #[arg(long)]
    pub no_jti: bool,
}

/// Parses `90`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 2d"))?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("`{text}` is not a duration like 90s, 15m, 1h or 2d"))?;
    Ok(Duration::from_secs(seconds))
}

fn parse_claim(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not k=v"))?;
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// Secret bytes that never show up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The validated configuration of `serve`.
#[derive(Debug)]
pub struct Config {
    pub dev: bool,
    pub listen: SocketAddr,
    pub listen_unix: Option<PathBuf>,
    pub metrics_listen: SocketAddr,
    pub store: StoreConfig,
    pub keys: KeySet,
    /// Key sets from URLs (`--jwks-url`, `--oidc-issuer`), fetched and refreshed once the
    /// sidecar runs.
    pub jwks: Vec<JwksSpec>,
    /// Claims sent as headers of their own (`--claim-header`).
    pub claim_headers: ClaimHeaders,
    pub claims: ClaimRules,
    pub cache_ttl: Duration,
    pub cache_max_entries: u64,
    pub cache_max_bytes: u64,
    pub token_cookie: Option<String>,
    pub admin_token: Option<Secret>,
    /// Where the admin credential is read again from, every second.
    pub admin_token_file: Option<PathBuf>,
    /// Route rules (`--rules-file`), checked at start-up.
    pub rules: Option<Rules>,
    /// The HMAC secret, which also signs the tokens the session API issues.
    pub signing_secret: Option<Secret>,
    pub session_keys: bool,
    pub session_key_lookups_per_second: u32,
    pub session_ttl: Duration,
    pub limits: Limits,
    pub log_format: LogFormat,
}

impl Config {
    /// Validates the flags of `serve`, reading every file they name. `dev_secret` is the HMAC
    /// secret `--dev` generated, when it is on. Returns every problem found, each naming its flag.
    pub fn from_args(
        args: &ServeArgs,
        dev_secret: Option<Vec<u8>>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut problems = Vec::new();

        let (secret, keys, jwks) = keys_from(args, dev_secret, &mut problems);
        let store = store_from(args, &mut problems);
        let admin_token = admin_token_from(args, &mut problems);
        let claim_headers = ClaimHeaders::parse(&args.claim_header).unwrap_or_else(|errors| {
            problems.extend(
                errors
                    .into_iter()
                    .map(|e| ConfigError::new("--claim-header", e)),
            );
            ClaimHeaders::default()
        });
        check_limits(args, &mut problems);
        let rules = rules_from(args, &mut problems);

        match keys {
            Some(keys) if problems.is_empty() => Ok(Config {
                dev: args.dev,
                listen: args.listen,
                listen_unix: args.listen_unix.clone(),
                metrics_listen: args.metrics_listen,
                store,
                keys,
                jwks,
                claim_headers,
                claims: ClaimRules {
                    issuer: args.issuer.clone(),
                    audience: args.audience.clone(),
                    leeway: args.leeway,
                },
                cache_ttl: Duration::from_secs(args.cache_ttl),
                cache_max_entries: args.cache_max_entries,
                cache_max_bytes: args.cache_max_bytes,
                token_cookie: args.token_cookie.clone(),
                admin_token,
                admin_token_file: args.admin_token_file.clone(),
                rules,
                signing_secret: secret.map(Secret),
                session_keys: args.session_keys,
                session_key_lookups_per_second: args.session_key_lookups_per_second,
                session_ttl: Duration::from_secs(args.session_ttl),
                limits: Limits {
                    max_token_bytes: args.max_token_bytes,
                    max_header_bytes: args.max_header_bytes,
                    max_body_bytes: args.max_body_bytes,
                    max_session_bytes: args.max_session_bytes,
                    max_json_depth: args.max_json_depth,
                },
                log_format: args.log_format,
            }),
            _ => Err(problems),
        }
    }
}

/// The verification keys (and the HMAC secret, which also signs the session API's tokens),
/// and the key sets to fetch from URLs.
fn keys_from(
    args: &ServeArgs,
    dev_secret: Option<Vec<u8>>,
    problems: &mut Vec<ConfigError>,
) -> (Option<Vec<u8>>, Option<KeySet>, Vec<JwksSpec>) {
    let secret = match (&args.jwt_secret_file, dev_secret) {
        (Some(path), _) => read_secret(path, "--jwt-secret-file", problems).filter(|secret| {
            // RFC 7518 §3.2: an HMAC key at least as long as the hash (32 bytes for HS256).
            let long_enough = secret.len() >= MIN_HMAC_SECRET_BYTES;
            if !long_enough {
                problems.push(ConfigError::new(
                    "--jwt-secret-file",
                    format!(
                        "{} holds {} bytes: an HMAC secret needs at least {MIN_HMAC_SECRET_BYTES} (RFC 7518 §3.2)",
                        path.display(),
                        secret.len()
                    ),
                ));
            }
            long_enough
        }),
        (None, dev) => dev,
    };
    let public_keys: Vec<PublicKeySpec> = args
        .jwt_public_key_file
        .iter()
        .filter_map(|spec| {
            PublicKeySpec::parse(spec)
                .map_err(|e| problems.push(ConfigError::new("--jwt-public-key-file", e)))
                .ok()
        })
        .collect();
    let mut jwks = Vec::with_capacity(args.jwks_url.len() + args.oidc_issuer.len());
    for spec in &args.jwks_url {
        match JwksSpec::parse(spec) {
            Ok(spec) => jwks.push(spec),
            Err(e) => problems.push(ConfigError::new("--jwks-url", e)),
        }
    }
    for issuer in &args.oidc_issuer {
        match JwksSpec::oidc_issuer(issuer) {
            Ok(spec) => jwks.push(spec),
            Err(e) => problems.push(ConfigError::new("--oidc-issuer", e)),
        }
    }
    let algorithms = parse_algorithms(&args.algorithms, problems);

    let any_key_flag = args.jwt_secret_file.is_some()
        || !args.jwt_public_key_file.is_empty()
        || !args.jwks_url.is_empty()
        || !args.oidc_issuer.is_empty();
    let keys = if !problems.is_empty() {
        // A key flag was given but could not be used: that problem is already reported.
        None
    } else if !any_key_flag && secret.is_none() {
        problems.push(ConfigError::new(
            "--jwt-secret-file",
            "no key at all: give --jwt-secret-file, --jwt-public-key-file, --jwks-url or --oidc-issuer (or --dev to try it out)",
        ));
        None
    } else {
        match KeySet::with_remote_keys(secret.clone(), public_keys, algorithms, !jwks.is_empty()) {
            Ok(keys) => Some(keys),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    };
    (secret, keys, jwks)
}

/// Where sessions live: the embedded store, or the Redis Cluster of `--redis-nodes`.
fn store_from(args: &ServeArgs, problems: &mut Vec<ConfigError>) -> StoreConfig {
    if args.redis_nodes.is_empty() {
        StoreConfig::Memory
    } else {
        let ca_pem = args
            .redis_ca_file
            .as_ref()
            .and_then(|path| match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    problems.push(ConfigError::new(
                        "--redis-ca-file",
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    None
                }
            });
        let password = args
            .redis_password_file
            .as_ref()
            .and_then(|p| read_secret(p, "--redis-password-file", problems))
            .and_then(|bytes| match String::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(_) => {
                    problems.push(ConfigError::new(
                        "--redis-password-file",
                        "the password is not UTF-8",
                    ));
                    None
                }
            });
        let redis = RedisConfig {
            nodes: args.redis_nodes.clone(),
            key_prefix: args.redis_key_prefix.clone(),
            ca_pem,
            username: args.redis_username.clone(),
            password,
            read_from_replicas: args.redis_read_from_replicas,
            feed_per_primary: args.redis_feed_per_primary,
            connect_timeout: Duration::from_millis(args.redis_connect_timeout_ms.max(1)),
            command_timeout: Duration::from_millis(args.redis_command_timeout_ms.max(1)),
            replication_wait: Duration::from_millis(args.redis_replication_wait_ms),
            password_file: args.redis_password_file.clone(),
        };
        match redis.checked() {
            Ok(redis) => StoreConfig::Redis(redis),
            Err(errors) => {
                let ca = args.redis_ca_file.as_deref().unwrap_or(Path::new(""));
                problems.extend(errors.iter().map(|error| redis_problem(error, ca)));
                StoreConfig::Memory
            }
        }
    }
}

/// The session API's credential; a non-loopback `--listen` needs one.
fn admin_token_from(args: &ServeArgs, problems: &mut Vec<ConfigError>) -> Option<Secret> {
    let admin_token = args.admin_token_file.as_ref().and_then(|path| {
        // The same reading as at each reload (crate::credentials): an operator learns at
        // start-up what would lock every caller out.
        read_admin_credential(path)
            .map_err(|reason| problems.push(ConfigError::new("--admin-token-file", reason)))
            .ok()
            .map(Secret)
    });
    let exposed = !args.listen.ip().is_loopback();
    if exposed && admin_token.is_none() && args.admin_token_file.is_none() {
        problems.push(ConfigError::new(
            "--admin-token-file",
            format!(
                "--listen {} is not a loopback address: the session API then needs --admin-token-file",
                args.listen
            ),
        ));
    }
    admin_token
}

/// The route rules of `--rules-file`: one problem per bad rule, each naming it.
fn rules_from(args: &ServeArgs, problems: &mut Vec<ConfigError>) -> Option<Rules> {
    let path = args.rules_file.as_ref()?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(ConfigError::new(
                "--rules-file",
                format!("cannot read {}: {e}", path.display()),
            ));
            return None;
        }
    };
    Rules::parse(&text)
        .map_err(|lines| {
            problems.extend(lines.into_iter().map(|line| {
                ConfigError::new("--rules-file", format!("{}: {line}", path.display()))
            }));
        })
        .ok()
}

/// The cookie name, the cache bound and the request limits.
fn check_limits(args: &ServeArgs, problems: &mut Vec<ConfigError>) {
    if let Some(cookie) = &args.token_cookie
        && (cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)))
    {
        problems.push(ConfigError::new(
            "--token-cookie",
            format!("`{cookie}` is not a cookie name"),
        ));
    }
    if args.cache_max_bytes < 1024 * 1024 {
        problems.push(ConfigError::new(
            "--cache-max-bytes",
            "must be at least 1048576 (use --cache-ttl 0 to disable the cache)",
        ));
    }
    if args.cache_max_entries == 0 {
        problems.push(ConfigError::new(
            "--cache-max-entries",
            "must be at least 1 (use --cache-ttl 0 to disable the cache)",
        ));
    }
    if args.max_header_bytes < 8192 {
        problems.push(ConfigError::new(
            "--max-header-bytes",
            "must be at least 8192",
        ));
    }
    if args.max_json_depth == 0 || args.max_json_depth > 128 {
        problems.push(ConfigError::new(
            "--max-json-depth",
            "must be between 1 and 128",
        ));
    }
    if args.session_ttl == 0 {
        problems.push(ConfigError::new("--session-ttl", "must be at least 1"));
    }
}

/// Reads a secret file (see [`read_trimmed`]), reporting a problem under `flag`.
fn read_secret(
    path: &Path,
    flag: &'static str,
    problems: &mut Vec<ConfigError>,
) -> Option<Vec<u8>> {
    read_trimmed(path)
        .map_err(|reason| problems.push(ConfigError::new(flag, reason)))
        .ok()
}

fn parse_algorithms(names: &[String], problems: &mut Vec<ConfigError>) -> Option<Vec<Algorithm>> {
    if names.is_empty() {
        return None;
    }
    let mut algorithms = Vec::new();
    for name in names {
        let name = name.trim();
        if name.eq_ignore_ascii_case("none") {
            problems.push(ConfigError::new(
                "--algorithms",
                "`none` can never be allowed",
            ));
            continue;
        }
        match name.parse::<Algorithm>() {
            Ok(alg) => algorithms.push(alg),
            Err(_) => problems.push(ConfigError::new(
                "--algorithms",
                format!("`{name}` is not a supported algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"),
            )),
        }
    }
    Some(algorithms)
}

/// A Redis configuration error, as the flag it is about and a message.
fn redis_problem(error: &RedisConfigError, ca_file: &Path) -> ConfigError {
    match error {
        RedisConfigError::BadNode(_) | RedisConfigError::MixedTls => {
            ConfigError::new("--redis-nodes", error.to_string())
        }
        RedisConfigError::BadKeyPrefix => ConfigError::new("--redis-key-prefix", error.to_string()),
        RedisConfigError::CaWithoutTls => ConfigError::new(
            "--redis-ca-file",
            format!(
                "{} is given but no --redis-nodes URL is rediss://",
                ca_file.display()
            ),
        ),
        RedisConfigError::CaNotPem => ConfigError::new(
            "--redis-ca-file",
            format!("{} holds no PEM certificate", ca_file.display()),
        ),
    }
}
