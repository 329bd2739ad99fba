//! Route rules (`--rules-file`, README "Route rules") over real HTTP: each rule kind, each
//! source of the original route (the `/verify/<path>` suffix, `X-Forwarded-*`, `X-Original-*`),
//! the `403` answer, paths that are not plain, a public route with an invalid token, rules that
//! never change what is cached, Envoy's `x-envoy-auth-headers-to-remove` on every `200`, and a
//! bad rules file refused at start-up.

mod support;

use std::process::Command;

use proptest::prelude::*;
use serde_json::{Value, json};
use session_sidecar::rules::plain_path;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_session-sidecar");

/// The rules file the proxy examples ship (examples/proxies/rules.json).
fn example_rules() -> String {
    format!("{}/examples/proxies/rules.json", env!("CARGO_MANIFEST_DIR"))
}

async fn sidecar_with_rules() -> TestSidecar {
    let rules = example_rules();
    TestSidecar::start(&["--rules-file", &rules]).await
}

/// How the original request reaches `/verify`.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Envoy ext_authz: `/verify` + the original path, the original method.
    Suffix,
    /// Traefik, Caddy: `GET /verify`, `X-Forwarded-Method` and `X-Forwarded-Uri`.
    Forwarded,
    /// nginx, ingress-nginx: `GET /verify`, `X-Original-Method` and `X-Original-URI`.
    Original,
}

const SOURCES: [Source; 3] = [Source::Suffix, Source::Forwarded, Source::Original];

/// A forward-auth request for `method uri` as `source` sends it, with an optional token.
async fn ask(
    sidecar: &TestSidecar,
    source: Source,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let request = match source {
        Source::Suffix => sidecar
            .http
            .request(method, sidecar.url(&format!("/verify{uri}"))),
        Source::Forwarded => sidecar
            .http
            .get(sidecar.url("/verify"))
            .header("x-forwarded-method", method.as_str())
            .header("x-forwarded-uri", uri),
        Source::Original => sidecar
            .http
            .get(sidecar.url("/verify"))
            .header("x-original-method", method.as_str())
            .header("x-original-uri", uri),
    };
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("forward-auth request")
}

async fn status(
    sidecar: &TestSidecar,
    source: Source,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> u16 {
    ask(sidecar, source, method, uri, token)
        .await
        .status()
        .as_u16()
}

fn token_with(extra: Value) -> String {
    let mut claims = claims("alice");
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    hs256(&claims)
}

async fn assert_forbidden(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 403, "{what}");
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="session-sidecar", error="insufficient_scope", error_description="forbidden""#,
        "{what}"
    );
    assert!(response.headers().get("x-auth-subject").is_none(), "{what}");
    let body: Value = response.json().await.expect("json body");
    assert_eq!(
        body,
        json!({"active": false, "reason": "forbidden"}),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_route_answers_200_without_a_token_from_every_source() {
    let sidecar = sidecar_with_rules().await;
    for source in SOURCES {
        for (method, uri) in [
            ("GET", "/public/index.html"),
            ("POST", "/public/form?x=1"),
            ("HEAD", "/healthz"),
        ] {
            let response = ask(&sidecar, source, method, uri, None).await;
            assert_eq!(response.status(), 200, "{source:?} {method} {uri}");
            assert!(response.headers().get("x-auth-subject").is_none());
            assert_eq!(
                response.headers()["x-envoy-auth-headers-to-remove"],
                "x-auth-subject, x-auth-session-id, x-auth-claims, x-auth-session",
                "a public 200 tells Envoy to drop every client-sent X-Auth-* header"
            );
        }
        // The rule names GET and HEAD only.
        assert_eq!(
            status(&sidecar, source, "DELETE", "/healthz", None).await,
            401,
            "{source:?}"
        );
        // A protected route needs a token.
        let response = ask(&sidecar, source, "GET", "/account", None).await;
        assert_eq!(response.status(), 401, "{source:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="session-sidecar""#
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_route_does_not_look_at_the_token() {
    let sidecar = sidecar_with_rules().await;
    for token in ["not-a-jwt", &hs256(&json!({"sub": "x", "exp": 1}))] {
        for source in SOURCES {
            let response = ask(&sidecar, source, "GET", "/public/a", Some(token)).await;
            assert_eq!(response.status(), 200, "{source:?}");
            assert!(response.headers().get("x-auth-subject").is_none());
            assert_eq!(
                status(&sidecar, source, "GET", "/other", Some(token)).await,
                401,
                "the same token on a protected route"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_at_a_dotted_path_decide_the_admin_area() {
    let sidecar = sidecar_with_rules().await;
    let admin = token_with(json!({"realm_access": {"roles": ["user", "admin"]}}));
    let user = token_with(json!({"realm_access": {"roles": ["user"]}}));
    let flat = token_with(json!({"roles": ["admin"]}));
    for source in SOURCES {
        let response = ask(&sidecar, source, "GET", "/admin/users", Some(&admin)).await;
        assert_eq!(response.status(), 200, "{source:?}");
        assert_eq!(response.headers()["x-auth-subject"], "alice");
        assert_forbidden(
            ask(&sidecar, source, "GET", "/admin/users", Some(&user)).await,
            "roles without admin",
        )
        .await;
        assert_forbidden(
            ask(&sidecar, source, "GET", "/admin/users", Some(&flat)).await,
            "admin at another path",
        )
        .await;
        // No token is still 401, an invalid one still its reason.
        assert_eq!(
            status(&sidecar, source, "GET", "/admin/users", None).await,
            401
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_is_required_for_the_methods_the_rule_names() {
    let sidecar = sidecar_with_rules().await;
    let writer = token_with(json!({"scope": "orders:read orders:write"}));
    let writer_scp = token_with(json!({"scp": ["orders:write"]}));
    let reader = token_with(json!({"scope": "orders:read orders:writer"}));
    for source in SOURCES {
        for token in [&writer, &writer_scp] {
            assert_eq!(
                status(&sidecar, source, "POST", "/orders", Some(token)).await,
                200
            );
        }
        assert_forbidden(
            ask(&sidecar, source, "POST", "/orders/7", Some(&reader)).await,
            "scope lacking orders:write",
        )
        .await;
        // GET is not named by the rule: any valid token (the catch-all rule).
        assert_eq!(
            status(&sidecar, source, "GET", "/orders/7", Some(&reader)).await,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aud_claims_and_globs_are_matched() {
    let sidecar = sidecar_with_rules().await;
    let api = token_with(json!({"aud": ["web", "orders-api"]}));
    let api_string = token_with(json!({"aud": "orders-api"}));
    let web = token_with(json!({"aud": "web"}));
    let acme = token_with(json!({"tenant": "acme"}));
    let other = token_with(json!({"tenant": "globex"}));
    for source in SOURCES {
        assert_eq!(
            status(&sidecar, source, "GET", "/api/x", Some(&api)).await,
            200
        );
        assert_eq!(
            status(&sidecar, source, "GET", "/api/x", Some(&api_string)).await,
            200
        );
        assert_forbidden(
            ask(&sidecar, source, "GET", "/api/x", Some(&web)).await,
            "aud",
        )
        .await;
        let report = "/tenants/42/reports/2026/q1.pdf";
        assert_eq!(
            status(&sidecar, source, "GET", report, Some(&acme)).await,
            200
        );
        assert_forbidden(
            ask(&sidecar, source, "GET", report, Some(&other)).await,
            "tenant",
        )
        .await;
        // `*` stays within one segment: not a tenant page, so the catch-all.
        assert_eq!(
            status(
                &sidecar,
                source,
                "GET",
                "/tenants/4/2/reports/x",
                Some(&other)
            )
            .await,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_data_requirements_read_the_session() {
    let sidecar = sidecar_with_rules().await;
    let (sid, gold) = sidecar.create_session("bob", json!({"plan": "gold"})).await;
    let (_, silver) = sidecar
        .create_session("carol", json!({"plan": "silver"}))
        .await;
    let stateless = token_with(json!({"plan": "gold"}));
    for source in SOURCES {
        let response = ask(&sidecar, source, "GET", "/beta/x", Some(&gold)).await;
        assert_eq!(response.status(), 200, "{source:?}");
        assert_eq!(response.headers()["x-auth-session-id"], sid.as_str());
        assert_forbidden(
            ask(&sidecar, source, "GET", "/beta/x", Some(&silver)).await,
            "silver",
        )
        .await;
        assert_forbidden(
            ask(&sidecar, source, "GET", "/beta/x", Some(&stateless)).await,
            "a stateless token has no session data",
        )
        .await;
    }
    // A patched session is decided on its new data.
    assert_eq!(
        sidecar
            .patch_session(&sid, json!({"plan": "silver"}))
            .await
            .0,
        200
    );
    assert_forbidden(
        ask(&sidecar, Source::Suffix, "GET", "/beta/x", Some(&gold)).await,
        "after the patch",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_decision_never_changes_what_is_cached() {
    let sidecar = sidecar_with_rules().await;
    let (sid, token) = sidecar
        .create_session("dave", json!({"plan": "silver"}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            status(&sidecar, Source::Forwarded, "GET", "/admin/x", Some(&token)).await,
            403
        );
        assert_eq!(
            status(&sidecar, Source::Forwarded, "GET", "/account", Some(&token)).await,
            200,
            "the 403 was not cached as a rejection of the token"
        );
    }
    assert_eq!(sidecar.verify_status(&token).await.0, 200);
    assert!(
        sidecar.metric("session_sidecar_cache_hits_total").await >= 6.0,
        "the 403s and 200s after the first were answered from the one cached grant"
    );
    // A deletion still reaches the token on every route.
    assert_eq!(sidecar.delete_session(&sid).await, 204);
    assert_eq!(
        status(&sidecar, Source::Forwarded, "GET", "/admin/x", Some(&token)).await,
        401
    );
    assert_eq!(
        status(&sidecar, Source::Forwarded, "GET", "/account", Some(&token)).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_that_are_not_plain_are_refused_so_a_public_prefix_reaches_nothing_else() {
    let sidecar = sidecar_with_rules().await;
    let admin = token_with(json!({"realm_access": {"roles": ["admin"]}}));
    let refused = [
        "/public/../admin/x",
        "/public/./x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/..%2fadmin/x",
        "/public/..%2Fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public//x",
        "//public/x",
        "/%70ublic/x",
        "/adm%69n/x",
        "/public/x%00",
        "public/x",
    ];
    for source in SOURCES {
        for path in refused {
            if let Source::Suffix = source {
                // HTTP clients resolve `..` themselves: send the request line as Envoy would
                // pass a path it did not normalise.
                if path.contains('\\') || !path.starts_with('/') {
                    continue; // not a request target
                }
                for token in [None, Some(admin.as_str())] {
                    let auth =
                        token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
                    let request = format!(
                        "GET /verify{path} HTTP/1.1\r\nHost: sidecar\r\n{auth}Connection: close\r\n\r\n"
                    );
                    let (status, text) = raw_request(sidecar.api, request.as_bytes()).await;
                    assert_eq!(status, 403, "{path}: {text}");
                    assert!(
                        text.contains(r#"{"active":false,"reason":"forbidden"}"#),
                        "{text}"
                    );
                }
                continue;
            }
            assert_forbidden(ask(&sidecar, source, "GET", path, None).await, path).await;
            // Refused for everybody: a valid token does not make it plain.
            assert_eq!(
                status(&sidecar, source, "GET", path, Some(&admin)).await,
                403,
                "{source:?} {path}"
            );
        }
        // The query is not part of the path: it never makes a route public.
        assert_eq!(
            status(&sidecar, source, "GET", "/admin/x?next=/public/", None).await,
            401,
            "{source:?}"
        );
        assert_eq!(
            status(&sidecar, source, "GET", "/public/x?next=/admin/", None).await,
            200,
            "{source:?}"
        );
        // Other percent-encodings are kept and matched as written.
        assert_eq!(
            status(&sidecar, source, "GET", "/public/my%20file", None).await,
            200,
            "{source:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn route_sources_that_disagree_or_repeat_are_refused() {
    let sidecar = sidecar_with_rules().await;
    // nginx passes a client's own headers to the auth subrequest: a forged X-Forwarded-Uri
    // beside the X-Original-URI nginx sets must not choose the route.
    let forged = sidecar
        .http
        .get(sidecar.url("/verify"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/admin/x")
        .header("x-forwarded-uri", "/public/x")
        .send()
        .await
        .unwrap();
    assert_forbidden(forged, "X-Forwarded-Uri forged beside X-Original-URI").await;
    let forged = sidecar
        .http
        .get(sidecar.url("/verify/admin/x"))
        .header("x-original-uri", "/public/x")
        .send()
        .await
        .unwrap();
    assert_forbidden(forged, "X-Original-URI forged beside Envoy's suffix").await;
    let forged = sidecar
        .http
        .get(sidecar.url("/verify"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/healthz")
        .header("x-original-method", "DELETE")
        .header("x-original-uri", "/healthz")
        .send()
        .await
        .unwrap();
    assert_forbidden(forged, "methods that disagree").await;
    let repeated = sidecar
        .http
        .get(sidecar.url("/verify"))
        .header("x-forwarded-uri", "/public/x")
        .header("x-forwarded-uri", "/admin/x")
        .send()
        .await
        .unwrap();
    assert_forbidden(repeated, "a repeated route header").await;
    // Sources that agree are fine.
    let agreeing = sidecar
        .http
        .get(sidecar.url("/verify/public/x"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/public/x?a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(agreeing.status(), 200);
    // A method header without its URI header names no route; without any, the request's own
    // method is the original's (nginx's subrequest keeps it).
    assert_eq!(
        sidecar
            .http
            .get(sidecar.url("/verify"))
            .header("x-original-uri", "/healthz")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        sidecar
            .http
            .delete(sidecar.url("/verify"))
            .header("x-original-uri", "/healthz")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_route_or_a_matching_rule_a_valid_token_is_needed() {
    // No catch-all rule: a route no rule matches needs any valid token.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"rules":[{"prefix":"/public/","access":"public"},{"path":"/x","require":{"scope":["x"]}}]}"#,
    )
    .unwrap();
    let rules = rules.display().to_string();
    let sidecar = TestSidecar::start(&["--rules-file", &rules]).await;
    let token = hs256(&claims("erin"));
    for source in SOURCES {
        assert_eq!(
            status(&sidecar, source, "GET", "/elsewhere", None).await,
            401
        );
        assert_eq!(
            status(&sidecar, source, "GET", "/elsewhere", Some(&token)).await,
            200
        );
        assert_eq!(
            status(&sidecar, source, "GET", "/x", Some(&token)).await,
            403
        );
    }
    // An app calling /verify itself names no route: a valid token is enough.
    assert_eq!(sidecar.verify_status(&token).await.0, 200);
    let (status, reason) = sidecar.verify_status("garbage").await;
    assert_eq!((status, reason.as_deref()), (401, Some("malformed")));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_200_tells_envoy_to_remove_the_auth_headers_it_did_not_set() {
    // Without rules too: this closes the hole of a client's X-Auth-Session behind Envoy.
    let sidecar = TestSidecar::start(&[]).await;
    let stateless = sidecar.verify(&hs256(&claims("frank"))).await;
    assert_eq!(stateless.status(), 200);
    assert_eq!(
        stateless.headers()["x-envoy-auth-headers-to-remove"],
        "x-auth-session-id, x-auth-session"
    );
    let (_, bound) = sidecar.create_session("grace", json!({})).await;
    let bound = sidecar.verify(&bound).await;
    assert_eq!(bound.status(), 200);
    assert!(
        bound
            .headers()
            .get("x-envoy-auth-headers-to-remove")
            .is_none(),
        "a session-bound grant sets every X-Auth-* header"
    );
    // A rejection passes nothing upstream: Envoy answers the client itself.
    let rejected = sidecar.verify("garbage").await;
    assert_eq!(rejected.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_headers_a_grant_did_not_set_are_named_for_removal_too() {
    let rules = example_rules();
    let sidecar = TestSidecar::start(&[
        "--rules-file",
        &rules,
        "--claim-header",
        "tenant=X-Tenant",
        "--claim-header",
        "realm_access.roles=X-Roles",
    ])
    .await;
    let with = sidecar.verify(&token_with(json!({"tenant": "acme"}))).await;
    assert_eq!(with.status(), 200);
    assert_eq!(with.headers()["x-tenant"], "acme");
    assert_eq!(
        with.headers()["x-envoy-auth-headers-to-remove"],
        "x-auth-session-id, x-auth-session, x-roles",
        "a client's own X-Roles must not reach the app beside this grant"
    );
    let public = ask(&sidecar, Source::Suffix, "GET", "/public/x", None).await;
    assert_eq!(public.status(), 200);
    assert_eq!(
        public.headers()["x-envoy-auth-headers-to-remove"],
        "x-auth-subject, x-auth-session-id, x-auth-claims, x-auth-session, x-tenant, x-roles"
    );
}

/// Runs `serve` with a rules file and returns (exit code, stderr).
fn serve_with_rules(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, text).unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--jwt-secret-file")
        .arg(&secret)
        .env("SIDECAR_RULES_FILE", &rules)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_rules_file_is_refused_at_start_up_one_line_per_bad_rule() {
    let (code, stderr) = serve_with_rules(
        r#"{"rules": [
            {"name": "fine", "prefix": "/ok/", "access": "public"},
            {"name": "two paths", "prefix": "/a/", "path": "/b"},
            {"name": "typo", "prefix": "/c/", "acess": "public"},
            {"prefix": "c/", "access": "public"},
            {"name": "walks", "prefix": "/public/../admin", "access": "public"},
            {"name": "odd access", "path": "/d", "access": "everyone"},
            {"name": "public with require", "path": "/e", "access": "public", "require": {"scope": ["x"]}},
            {"name": "lowercase", "methods": ["get"], "path": "/f"},
            {"name": "two stars", "glob": "/**/a/**", "access": "public"},
            {"name": "empty require", "path": "/g", "require": {}}
        ]}"#,
    );
    assert_eq!(code, Some(64), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 9, "one line per bad rule: {stderr}");
    for (line, rule) in lines.iter().zip([
        "rule #2 (\"two paths\")",
        "rule #3 (\"typo\")",
        "rule #4:",
        "rule #5 (\"walks\")",
        "rule #6 (\"odd access\")",
        "rule #7 (\"public with require\")",
        "rule #8 (\"lowercase\")",
        "rule #9 (\"two stars\")",
        "rule #10 (\"empty require\")",
    ]) {
        assert!(line.contains("--rules-file"), "{line}");
        assert!(line.contains(rule), "{line} names {rule}");
    }
    // Not JSON, or not a rules file at all: one line.
    for text in ["rules:\n  - prefix: /a/", r#"{"rule": []}"#] {
        let (code, stderr) = serve_with_rules(text);
        assert_eq!(code, Some(64), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("--rules-file"), "{stderr}");
    }
}

/// Whether a lenient server could read `path` as another path: percent-decoding unreserved
/// characters, `.`, `/` and `\`, reading `\` as `/`, then resolving `.`, `..` and `//`.
fn read_as_another_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~/\\".contains(b));
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    decoded != path
        || decoded.contains("//")
        || decoded
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// No path the sidecar accepts as plain can be read by a lenient proxy or app as another
    /// path, so a public prefix never reaches a protected one.
    #[test]
    fn an_accepted_path_has_one_reading(tail in r"[/.%eEfF2c5a\\x]{0,14}") {
        let path = format!("/{tail}");
        if plain_path(&path).is_ok() {
            prop_assert!(!read_as_another_path(&path), "{} was accepted", path);
        }
    }
}
