//! Issue 7, SPEC §4 "A revocation is final": for **every kind of token × every way to revoke
//! it**, against a real 3+3 Redis Cluster and three sidecars that share one key prefix:
//!
//! - **A** makes the change (every revocation call is sent to it);
//! - **B** verified the token before the change, so it sits in B's warm cache;
//! - **C** is started only after every revocation answered (and is replaced by fresh
//!   sidecars later: "restarted", "started late").
//!
//! The matrix is [`TokenKind`] × [`Revocation`]. [`expectation`] decides every pair with a
//! nested exhaustive `match` (no wildcard), and both enums get their variant list from the
//! same [`listed!`] declaration, so a new token kind or revocation path does not compile until
//! its pairs are decided, and is then joined into the matrix automatically.
//!
//! For every pair that is sent (each pair has its own subject, session and `jti`):
//! - before the change the token verifies `200` at A and at B (which warms B's cache);
//! - a revocation that answered **2xx** must make the token `401` (`revoked` or
//!   `session_inactive`) at A at once, at B within the propagation bound (polled up to 2 s,
//!   `401` from then on), at C, again after `--cache-ttl` (2 s here, with C restarted), and
//!   again after the cache's tombstone lifetime (30 s, `TOMBSTONE_LIFETIME` in `src/cache.rs`),
//!   once one unrelated invalidation has made every sidecar prune its expired tombstones, and
//!   at a sidecar started after that;
//! - a revocation that answered **4xx** is allowed only where the matrix says the request
//!   must be refused ([`Expectation::MustRefuse`]); a `MustRefuse` pair that answers 2xx
//!   fails, so does every 3xx/5xx.
//!
//! Failures are collected over the whole matrix and reported together at the end, as a table.
//! The only sleeps wait out `--cache-ttl` and the tombstone lifetime; every other wait polls.

mod support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::cluster::RedisCluster;
use support::*;

/// `--cache-ttl` of the three sidecars, in seconds.
const CACHE_TTL_SECS: u64 = 2;
/// How long B may take to see a revocation made at A (SPEC §4: 10 ms p99; a hang guard here).
const PROPAGATION_BOUND: Duration = Duration::from_secs(2);
/// How long a sidecar remembers an invalidation.
const TOMBSTONE_LIFETIME: Duration = session_sidecar::cache::TOMBSTONE_LIFETIME;
/// Added to every "wait past" deadline.
const MARGIN: Duration = Duration::from_secs(1);
/// Lifetime of every token of the matrix: far longer than the test, so no `401 expired`.
const TOKEN_LIFETIME_SECS: u64 = 600;
/// The issuer of [`TokenKind::Provider`] tokens, and their key's `kid`.
const PROVIDER_ISSUER: &str = "https://idp.matrix.test/realms/a";
const PROVIDER_KID: &str = "idp-rsa-1";

/// Declares an enum together with `ALL`, the list of its variants, from one list of names:
/// a variant cannot be added without being in `ALL`, hence in the matrix.
macro_rules! listed {
    ($(#[$meta:meta])* enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            const ALL: &'static [$name] = &[$($name::$variant),+];
        }
    };
}

listed! {
    /// Every kind of token a sidecar honours that a revocation can concern.
    enum TokenKind {
        /// Minted by `POST /v1/sessions`: HS256 with `sub`, `sid`, `jti`, `exp` (its `jti`
        /// names its session: `<sid>.<random>`).
        SessionBound,
        /// HS256 with the `--jwt-secret-file` secret, bound to one session (`sid`) with a `jti`
        /// that names another live session (`<other sid>.x`): a revocation of that id is also
        /// written into the other session, and this token must still see it.
        SessionBoundForeignJti,
        /// Stateless HS256 whose `jti` names a live session (`<sid>.x`).
        StatelessSessionShapedJti,
        /// Header `kid` = session id, signed with the session's own secret (`--session-keys`),
        /// payload with `sid` (= `kid`) and `jti`.
        SessionKeyWithSid,
        /// As above, payload without `sid`: only the header names the session.
        SessionKeyWithoutSid,
        /// Stateless, HS256 with the `--jwt-secret-file` secret, with `jti`.
        StatelessHs256,
        /// Stateless, ES256 with `tests/fixtures/ec256.key` (`--jwt-public-key-file`), with `jti`.
        StatelessEs256,
        /// Stateless, HS256, without `jti`: nothing names it, so nothing can revoke it alone.
        StatelessNoJti,
        /// From an identity provider: RS256, its key from a JWKS URL bound to the provider's
        /// issuer (`--jwks-url ISS=URL`), with `iss` and `jti` (SPEC §4 names it).
        Provider,
    }
}

listed! {
    /// Every call of the session API that revokes (SPEC §3.3).
    enum Revocation {
        /// `DELETE /v1/sessions/{sid}`.
        DeleteSession,
        /// `DELETE /v1/users/{sub}/sessions` (log out everywhere).
        LogoutEverywhere,
        /// `POST /v1/revoke {"token"}`.
        RevokeByToken,
        /// `POST /v1/revoke {"jti","exp"}`.
        RevokeByJti,
        /// `POST /v1/revoke {"jti","exp","sid"}`; for a stateless token, a well-formed `sid`
        /// that names no session.
        RevokeByJtiAndSid,
    }
}

/// What a revocation call must do to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expectation {
    /// The call answers 2xx and the token is rejected everywhere from then on.
    Applicable,
    /// The call cannot revoke this token: 4xx, never 2xx.
    MustRefuse,
    /// The call does not concern this kind of token: not sent.
    NotApplicable,
}

/// The matrix. Exhaustive on purpose: no wildcard, so a new variant of either enum does not
/// compile until every pair it makes is decided here.
fn expectation(kind: TokenKind, revocation: Revocation) -> Expectation {
    use Expectation::*;
    use Revocation::*;
    match kind {
        // A token id is deny-listed in one place whatever kind of token carries it, and every
        // verification of a token with a `jti` reads that place: revoking by `jti` works for
        // every kind, with or without a `sid` (README "Consistency guarantees").
        TokenKind::SessionBound | TokenKind::SessionBoundForeignJti => match revocation {
            DeleteSession | LogoutEverywhere | RevokeByToken | RevokeByJti | RevokeByJtiAndSid => {
                Applicable
            }
        },
        TokenKind::SessionKeyWithSid | TokenKind::SessionKeyWithoutSid => match revocation {
            // The token names its session (the header `kid`), so revoking it by the token
            // itself must work, with or without a `sid` claim.
            DeleteSession | LogoutEverywhere | RevokeByToken | RevokeByJti | RevokeByJtiAndSid => {
                Applicable
            }
        },
        TokenKind::StatelessHs256
        | TokenKind::StatelessEs256
        | TokenKind::StatelessSessionShapedJti
        | TokenKind::Provider => {
            match revocation {
                // No session, no subject index: nothing to delete.
                DeleteSession | LogoutEverywhere => NotApplicable,
                // The made-up `sid` names no session; the deny entry does not depend on it.
                RevokeByToken | RevokeByJti | RevokeByJtiAndSid => Applicable,
            }
        }
        TokenKind::StatelessNoJti => match revocation {
            DeleteSession | LogoutEverywhere => NotApplicable,
            // SPEC §3.3: a token without `jti` → 422.
            RevokeByToken => MustRefuse,
            // There is no `jti` to send.
            RevokeByJti | RevokeByJtiAndSid => NotApplicable,
        },
    }
}

/// A token of the matrix and what names it.
struct Minted {
    token: String,
    /// The session it is bound to: its `sid` claim, or its `kid` for per-session keys.
    sid: Option<String>,
    jti: Option<String>,
    exp: u64,
}

/// Mints a token of `kind` for `sub` (creating its session at A when it has one).
async fn mint(a: &TestSidecar, kind: TokenKind, sub: &str) -> Minted {
    let exp = now() + TOKEN_LIFETIME_SECS;
    let jti = format!("{sub}-jti");
    let stateless = |jti: Option<&str>| {
        let mut claims = json!({"sub": sub, "exp": exp, "iat": now()});
        if let Some(jti) = jti {
            claims["jti"] = json!(jti);
        }
        claims
    };
    match kind {
        TokenKind::SessionBound => {
            let (sid, token) = a.create_session(sub, json!({"pair": sub})).await;
            let payload = payload_of(&token);
            Minted {
                jti: payload["jti"].as_str().map(str::to_owned),
                exp: payload["exp"].as_u64().expect("a minted token has exp"),
                sid: Some(sid),
                token,
            }
        }
        TokenKind::SessionBoundForeignJti => {
            let (sid, _) = a.create_session(sub, json!({"pair": sub})).await;
            // Another subject's session: log-out-everywhere of this one counts one session.
            let (other, _) = a.create_session(&format!("{sub}-other"), json!({})).await;
            let jti = format!("{other}.x");
            let mut claims = stateless(Some(&jti));
            claims["sid"] = json!(sid);
            Minted {
                token: hs256(&claims),
                sid: Some(sid),
                jti: Some(jti),
                exp,
            }
        }
        TokenKind::StatelessSessionShapedJti => {
            let (other, _) = a.create_session(&format!("{sub}-other"), json!({})).await;
            let jti = format!("{other}.x");
            Minted {
                token: hs256(&stateless(Some(&jti))),
                sid: None,
                jti: Some(jti),
                exp,
            }
        }
        // Its `jti` names its own session, as the sidecar's own ids do.
        TokenKind::SessionKeyWithSid => {
            let (sid, secret) = a.create_keyed_session(sub).await;
            keyed_with(sid, secret, sub, None, exp, true)
        }
        TokenKind::SessionKeyWithoutSid => keyed(a, sub, jti, exp, false).await,
        TokenKind::StatelessHs256 => Minted {
            token: hs256(&stateless(Some(&jti))),
            sid: None,
            jti: Some(jti),
            exp,
        },
        TokenKind::StatelessEs256 => Minted {
            token: sign(
                Algorithm::ES256,
                &private_key(Algorithm::ES256, "ec256.key"),
                None,
                &stateless(Some(&jti)),
            ),
            sid: None,
            jti: Some(jti),
            exp,
        },
        TokenKind::StatelessNoJti => Minted {
            token: hs256(&stateless(None)),
            sid: None,
            jti: None,
            exp,
        },
        TokenKind::Provider => {
            let mut claims = stateless(Some(&jti));
            claims["iss"] = json!(PROVIDER_ISSUER);
            Minted {
                token: sign(
                    Algorithm::RS256,
                    &private_key(Algorithm::RS256, "rsa.key"),
                    Some(PROVIDER_KID),
                    &claims,
                ),
                sid: None,
                jti: Some(jti),
                exp,
            }
        }
    }
}

/// A per-session-key token (`kid` = sid, the session's own secret), with a `jti`, with or
/// without a `sid` claim. (`support::session_keyed_token` has no `sid` claim and a 60 s `exp`.)
async fn keyed(a: &TestSidecar, sub: &str, jti: String, exp: u64, with_sid: bool) -> Minted {
    let (sid, secret) = a.create_keyed_session(sub).await;
    keyed_with(sid, secret, sub, Some(jti), exp, with_sid)
}

/// A per-session-key token of session `sid`; its `jti` is `<sid>.k` when none is given.
fn keyed_with(
    sid: String,
    secret: Vec<u8>,
    sub: &str,
    jti: Option<String>,
    exp: u64,
    with_sid: bool,
) -> Minted {
    let jti = jti.unwrap_or_else(|| format!("{sid}.k"));
    let mut claims = json!({"sub": sub, "exp": exp, "iat": now(), "jti": jti});
    if with_sid {
        claims["sid"] = json!(sid);
    }
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret),
        Some(&sid),
        &claims,
    );
    Minted {
        token,
        sid: Some(sid),
        jti: Some(jti),
        exp,
    }
}

/// The payload of a JWT, as JSON.
fn payload_of(token: &str) -> Value {
    decode_b64_json(token.split('.').nth(1).expect("a JWT has a payload"))
}

/// A well-formed session id (128 random bits, URL-safe) that names no session.
fn made_up_sid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Sends `revocation` for the token to A → (status, body).
async fn revoke(
    a: &TestSidecar,
    revocation: Revocation,
    sub: &str,
    minted: &Minted,
) -> (u16, Value) {
    let post = |body: Value| async move {
        let response = a
            .session_api(reqwest::Method::POST, "/v1/revoke")
            .json(&body)
            .send()
            .await
            .expect("revoke request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    };
    match revocation {
        Revocation::DeleteSession => {
            let sid = minted
                .sid
                .as_deref()
                .expect("the matrix deletes only sessions");
            (a.delete_session(sid).await, Value::Null)
        }
        Revocation::LogoutEverywhere => a.logout_everywhere(sub).await,
        Revocation::RevokeByToken => post(json!({"token": minted.token})).await,
        Revocation::RevokeByJti => post(json!({"jti": minted.jti, "exp": minted.exp})).await,
        Revocation::RevokeByJtiAndSid => {
            let sid = minted.sid.clone().unwrap_or_else(made_up_sid);
            post(json!({"jti": minted.jti, "exp": minted.exp, "sid": sid})).await
        }
    }
}

/// `Ok` when `sidecar` rejects `token` as revoked or as of an ended session; otherwise what it
/// answered.
async fn rejected(sidecar: &TestSidecar, token: &str) -> Result<(), String> {
    match sidecar.verify_status(token).await {
        (401, Some(reason)) if reason == "revoked" || reason == "session_inactive" => Ok(()),
        (status, reason) => Err(format!("{status} {}", reason.unwrap_or_default())
            .trim_end()
            .to_owned()),
    }
}

/// Polls until `sidecar` rejects `token`, for at most `bound`; the last answer otherwise.
async fn rejected_within(
    sidecar: &TestSidecar,
    token: &str,
    bound: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match rejected(sidecar, token).await {
            Ok(()) => return Ok(()),
            Err(got) if started.elapsed() >= bound => return Err(got),
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// One pair of the matrix and what was observed.
struct Case {
    kind: TokenKind,
    revocation: Revocation,
    expectation: Expectation,
    sub: String,
    minted: Minted,
    /// Status of the revocation call; `None` when it was not sent.
    answer: Option<u16>,
    /// (checkpoint, what went wrong there), in the order observed.
    failures: Vec<(&'static str, String)>,
}

impl Case {
    /// The revocation answered 2xx: the token must be rejected everywhere from now on.
    fn revoked(&self) -> bool {
        self.answer
            .is_some_and(|status| (200..300).contains(&status))
    }

    fn name(&self) -> String {
        format!("{:?} × {:?}", self.kind, self.revocation)
    }
}

/// Checkpoint names, in the order they come.
const BEFORE: &str = "before";
const ANSWER: &str = "answer";
const RIGHT_AFTER: &str = "right after";
const C_STARTED: &str = "C started";
const AFTER_CACHE_TTL: &str = "after --cache-ttl";
const AFTER_TOMBSTONES: &str = "after tombstone lifetime";

/// Before the change: the token verifies at A and at B (which caches it).
async fn verify_before(
    case: &Case,
    a: &TestSidecar,
    b: &TestSidecar,
) -> Vec<(&'static str, String)> {
    let mut failures = Vec::new();
    for (name, sidecar) in [("A", a), ("B", b)] {
        let (status, reason) = sidecar.verify_status(&case.minted.token).await;
        if status != 200 {
            let got = format!("{status} {}", reason.unwrap_or_default());
            failures.push((BEFORE, format!("{name} {}", got.trim_end())));
        }
    }
    failures
}

/// Revokes at A, then checks A at once and B within the propagation bound (and once more).
/// Returns the status of the revocation call and the failures.
async fn revoke_and_watch(
    case: &Case,
    a: &TestSidecar,
    b: &TestSidecar,
) -> (u16, Vec<(&'static str, String)>) {
    let (status, body) = revoke(a, case.revocation, &case.sub, &case.minted).await;
    let mut failures = Vec::new();
    let answered = format!("{status} {body}");
    match (case.expectation, status) {
        (Expectation::Applicable, 200..=299) => {
            if case.revocation == Revocation::LogoutEverywhere && body != json!({"revoked": 1}) {
                failures.push((ANSWER, format!("{answered}, expected {{\"revoked\":1}}")));
            }
            if let Err(got) = rejected(a, &case.minted.token).await {
                failures.push((RIGHT_AFTER, format!("A {got}")));
            }
            match rejected_within(b, &case.minted.token, PROPAGATION_BOUND).await {
                Err(got) => failures.push((
                    RIGHT_AFTER,
                    format!("B {got} (still, after {PROPAGATION_BOUND:?})"),
                )),
                Ok(()) => {
                    if let Err(got) = rejected(b, &case.minted.token).await {
                        failures.push((RIGHT_AFTER, format!("B {got} (after a 401)")));
                    }
                }
            }
        }
        (Expectation::MustRefuse, 400..=499) => {}
        (Expectation::Applicable, _) => {
            failures.push((ANSWER, format!("{answered}: must revoke (2xx)")));
        }
        (Expectation::MustRefuse, 200..=299) => failures.push((
            ANSWER,
            format!("{answered}: cannot revoke this token, must be refused (4xx)"),
        )),
        (_, _) => failures.push((ANSWER, format!("{answered}: neither 2xx nor 4xx"))),
    }
    (status, failures)
}

/// Every revoked token must be rejected by every one of `sidecars`; failures go to their case.
async fn checkpoint(cases: &mut [Case], moment: &'static str, sidecars: &[(&str, &TestSidecar)]) {
    let checks = cases
        .iter()
        .enumerate()
        .filter(|(_, case)| case.revoked())
        .flat_map(|(i, case)| {
            sidecars.iter().map(move |&(name, sidecar)| async move {
                rejected(sidecar, &case.minted.token)
                    .await
                    .err()
                    .map(|got| (i, format!("{name} {got}")))
            })
        });
    let failures: Vec<(usize, String)> = join_all(checks).await.into_iter().flatten().collect();
    for (i, failure) in failures {
        cases[i].failures.push((moment, failure));
    }
}

/// Tombstones are pruned only when a sidecar applies its next invalidation (`apply` in
/// `src/cache.rs`). One unrelated session, cached everywhere and then deleted at A, makes
/// A and every one of `others` apply one; returns what went wrong (a harness failure).
async fn prune_tombstones(
    a: &TestSidecar,
    others: &[(&str, &TestSidecar)],
    sub: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    let (sid, token) = a.create_session(sub, json!({})).await;
    for (name, sidecar) in others {
        let (status, _) = sidecar.verify_status(&token).await;
        if status != 200 {
            failures.push(format!("tombstone sweep: {name} answered {status} before"));
        }
    }
    let status = a.delete_session(&sid).await;
    if status != 204 {
        failures.push(format!("tombstone sweep: the delete answered {status}"));
    }
    for (name, sidecar) in others {
        if let Err(got) = rejected_within(sidecar, &token, PROPAGATION_BOUND).await {
            failures.push(format!("tombstone sweep: {name} still answered {got}"));
        }
    }
    failures
}

async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
}

/// What went wrong for one pair, grouped by checkpoint:
/// `right after: A 200, B 200 | C started: C 200`.
fn summary(failures: &[(&'static str, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (moment, failure) in failures {
        match groups.iter_mut().find(|(m, _)| m == moment) {
            Some((_, list)) => list.push(failure),
            None => groups.push((moment, vec![failure])),
        }
    }
    groups
        .iter()
        .map(|(moment, list)| format!("{moment}: {}", list.join(", ")))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The report: one line per pair.
fn table<'a>(cases: impl IntoIterator<Item = &'a Case>) -> String {
    let mut out = format!(
        "{:<44} {:<14} {:<7} result\n",
        "token kind × revocation", "expectation", "answer"
    );
    for case in cases {
        let answer = case
            .answer
            .map_or_else(|| "-".to_owned(), |status| status.to_string());
        let result = if case.failures.is_empty() {
            "ok".to_owned()
        } else {
            format!("FAIL {}", summary(&case.failures))
        };
        out += &format!(
            "{:<44} {:<14} {:<7} {result}\n",
            case.name(),
            format!("{:?}", case.expectation),
            answer
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_token_kind_stays_revoked_by_every_revocation_at_every_sidecar() {
    let started = Instant::now();
    let cluster = RedisCluster::shared();
    let prefix = unique_prefix("matrix");
    let public_key = fixture("ec256.pub").display().to_string();
    let cache_ttl = CACHE_TTL_SECS.to_string();
    let provider = StaticJwksServer::start(&[(Algorithm::RS256, "rsa.key", PROVIDER_KID)]).await;
    let provider_keys = format!("{PROVIDER_ISSUER}={}", provider.url());
    let flags = [
        "--session-keys",
        "--cache-ttl",
        &cache_ttl,
        "--jwt-public-key-file",
        &public_key,
        "--jwks-url",
        &provider_keys,
    ];
    // Ready: the store answers and the provider's key set is loaded (else its tokens are 503).
    let start = || async {
        let sidecar = TestSidecar::start_on_cluster(cluster, &prefix, &flags).await;
        sidecar.wait_ready(Duration::from_secs(20)).await;
        sidecar
    };
    let a = start().await;
    let b = start().await;
    a.wait_for_subscription(true, Duration::from_secs(10)).await;
    b.wait_for_subscription(true, Duration::from_secs(10)).await;

    // The matrix, each pair with its own subject (hence its own session and jti).
    let pairs: Vec<(TokenKind, Revocation, Expectation)> = TokenKind::ALL
        .iter()
        .flat_map(|&kind| {
            Revocation::ALL
                .iter()
                .map(move |&revocation| (kind, revocation, expectation(kind, revocation)))
        })
        .collect();
    let minted = join_all(pairs.iter().map(|&(kind, revocation, expectation)| {
        let sub = format!("{prefix}-{kind:?}-{revocation:?}");
        let a = &a;
        async move {
            let minted = mint(a, kind, &sub).await;
            Case {
                kind,
                revocation,
                expectation,
                sub,
                minted,
                answer: None,
                failures: Vec::new(),
            }
        }
    }));
    let mut cases: Vec<Case> = minted.await;

    // Before: 200 at A and B (B's cache is warm). Tokens of pairs that are not sent are
    // verified too, as a check of the fixtures; a pair whose token does not verify is not sent.
    let before = join_all(cases.iter().map(|case| verify_before(case, &a, &b))).await;
    for (case, failures) in cases.iter_mut().zip(before) {
        case.failures.extend(failures);
    }

    // The change, at A: each pair's revocation, then A at once and B within the bound.
    let sent: Vec<usize> = (0..cases.len())
        .filter(|&i| {
            cases[i].expectation != Expectation::NotApplicable && cases[i].failures.is_empty()
        })
        .collect();
    let watched = join_all(sent.iter().map(|&i| revoke_and_watch(&cases[i], &a, &b))).await;
    for (&i, (status, failures)) in sent.iter().zip(watched) {
        cases[i].answer = Some(status);
        cases[i].failures.extend(failures);
    }
    let changed = Instant::now();

    // C starts after every revocation answered.
    let c = start().await;
    checkpoint(&mut cases, C_STARTED, &[("A", &a), ("B", &b), ("C", &c)]).await;

    // Past --cache-ttl (every decision cached so far, granted or denied, has expired); C is
    // restarted.
    sleep_until(Instant::now() + Duration::from_secs(CACHE_TTL_SECS) + MARGIN).await;
    c.stop().await;
    let c = start().await;
    c.wait_for_subscription(true, Duration::from_secs(10)).await;
    checkpoint(
        &mut cases,
        AFTER_CACHE_TTL,
        &[("A", &a), ("B", &b), ("C restarted", &c)],
    )
    .await;

    // Past the tombstone lifetime, counted from the last tombstone (B's, within the bound of
    // the last revocation), and once every sidecar has pruned them; plus a sidecar started now.
    sleep_until(changed + TOMBSTONE_LIFETIME + MARGIN).await;
    let harness = prune_tombstones(
        &a,
        &[("B", &b), ("C restarted", &c)],
        &format!("{prefix}-sweep"),
    )
    .await;
    let late = start().await;
    checkpoint(
        &mut cases,
        AFTER_TOMBSTONES,
        &[
            ("A", &a),
            ("B", &b),
            ("C restarted", &c),
            ("C started late", &late),
        ],
    )
    .await;

    let report = table(&cases);
    let elapsed = started.elapsed();
    println!("revocation matrix ({elapsed:.1?}):\n{report}");
    let failing: Vec<&Case> = cases.iter().filter(|c| !c.failures.is_empty()).collect();
    assert!(
        failing.is_empty() && harness.is_empty(),
        "{} of {} pairs fail (SPEC §4, a revocation is final){}:\n{}",
        failing.len(),
        cases.len(),
        if harness.is_empty() {
            String::new()
        } else {
            format!("; harness: {}", harness.join("; "))
        },
        table(failing)
    );
    for sidecar in [a, b, c, late] {
        sidecar.stop().await;
    }
}
