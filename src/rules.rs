//! Route rules (`--rules-file`): which requests behind a proxy are `public`, which need any
//! valid token (`authenticated`) and which need certain claims or session data. This module
//! owns the rules file's format and its validation, finding the original request's method and
//! path in what the proxy sent ([`Route::of`]), and matching a route and a grant against the
//! rules.
//!
//! It never looks at a token and never touches the cache: a rule is applied to a route before
//! any verification (`public`) or to the grant the verifier handed out (requirements), so no
//! rule ever changes what is cached about a token.
//!
//! Paths are never normalised: a path that is not already in its one plain form (`//`, a `.`
//! or `..` segment, a percent-encoded `.`, `/`, `\`, unreserved character or control
//! character, a backslash, a fragment) is refused outright (`403`), because the proxy or the
//! app behind it may read it as another path than the rules would (`/public/../admin`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Uri};
use serde::Deserialize;
use serde_json::Value;

use crate::decision::Grant;

/// Traefik and Caddy: the original method and request URI.
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// nginx `auth_request` and ingress-nginx: the original method and request URI.
pub const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// The validated rules of a `--rules-file`, in file order (the first that matches decides).
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// One rule: which requests it matches and what they need.
#[derive(Debug)]
struct Rule {
    /// The rule's `name`, or `#N` (its position, from 1).
    name: String,
    /// `None`: any method.
    methods: Option<Vec<Method>>,
    path: PathPattern,
    access: Access,
}

#[derive(Debug)]
enum PathPattern {
    /// The path is exactly this.
    Exact(String),
    /// The path starts with this (a plain string prefix: `/admin` also matches `/administrator`;
    /// end it with `/` to stop at a segment).
    Prefix(String),
    /// Segments: `*` matches within one segment, `**` any number of whole segments.
    Glob(Vec<String>),
}

/// What a matched request needs.
#[derive(Debug)]
pub enum Access {
    /// No token is looked at: `200` without one (and with an invalid one).
    Public,
    /// Any valid token (what a request matching no rule needs).
    Authenticated,
    /// A valid token whose claims and session satisfy every requirement; else `403`.
    Require(Requirements),
}

/// Requirements on a grant's claims and session data; all must hold.
#[derive(Debug, Default)]
pub struct Requirements {
    /// Each must be in the token's `scope` (a space-separated string, RFC 8693 §4.2, or an
    /// array) or `scp` claim.
    scope: Vec<String>,
    /// Each must be in the array (or equal the string) at `roles_claim`.
    roles: Vec<String>,
    roles_claim: Vec<String>,
    /// `aud` is this (a string equal to it, or an array holding it).
    aud: Option<String>,
    /// Dotted path into the claims → the value there equals this, or is an array holding it.
    claims: Vec<(Vec<String>, Value)>,
    /// The same, into the session data (session-bound tokens only).
    session: Vec<(Vec<String>, Value)>,
}

/// The rules file as written (JSON). Unknown members are refused, so a typo is found at
/// start-up rather than in production.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: Option<String>,
    methods: Option<Vec<String>>,
    path: Option<String>,
    prefix: Option<String>,
    glob: Option<String>,
    access: Option<String>,
    require: Option<RequireSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequireSpec {
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    roles_claim: Option<String>,
    aud: Option<String>,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
    #[serde(default)]
    session: serde_json::Map<String, Value>,
}

impl Rules {
    /// Parses and validates a rules file. Every problem is one line naming its rule.
    pub fn parse(text: &str) -> Result<Rules, Vec<String>> {
        let file: RulesFile = serde_json::from_str(text).map_err(|error| {
            vec![format!(
                r#"not a rules file ({error}): expected {{"rules": [...]}} in JSON"#
            )]
        })?;
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (index, value) in file.rules.into_iter().enumerate() {
            let position = index + 1;
            let label = match value.get("name").and_then(Value::as_str) {
                Some(name) => format!("rule #{position} ({name:?})"),
                None => format!("rule #{position}"),
            };
            match serde_json::from_value::<RuleSpec>(value)
                .map_err(|error| error.to_string())
                .and_then(|spec| Rule::from_spec(spec, position))
            {
                Ok(rule) => rules.push(rule),
                Err(problem) => problems.push(format!("{label}: {problem}")),
            }
        }
        if problems.is_empty() {
            Ok(Rules { rules })
        } else {
            Err(problems)
        }
    }

    /// What a request to `route` needs: the first rule that matches it decides; a route no
    /// rule matches needs a valid token (`authenticated`, as without rules).
    pub fn access(&self, route: &Route) -> &Access {
        match self.rules.iter().find(|rule| rule.matches(route)) {
            Some(rule) => {
                tracing::debug!(rule = %rule.name, "route rule matched");
                &rule.access
            }
            None => &Access::Authenticated,
        }
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the file holds no rule (every request then needs a valid token).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Rule {
    fn from_spec(spec: RuleSpec, position: usize) -> Result<Rule, String> {
        let name = spec.name.unwrap_or_else(|| format!("#{position}"));
        let methods = match spec.methods {
            None => None,
            Some(list) if list.is_empty() => {
                return Err("`methods` is empty (leave it out to match any method)".into());
            }
            Some(list) if list.iter().any(|m| m == "*") => None,
            Some(list) => Some(
                list.iter()
                    .map(|m| {
                        if m.bytes().all(|b| b.is_ascii_uppercase()) && !m.is_empty() {
                            Method::from_bytes(m.as_bytes()).map_err(|_| m.clone())
                        } else {
                            Err(m.clone())
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| {
                        format!("`{m}` is not a method (GET, POST, ... in capitals, or \"*\")")
                    })?,
            ),
        };
        let path = match (spec.path, spec.prefix, spec.glob) {
            (Some(path), None, None) => PathPattern::Exact(checked_pattern(&path)?),
            (None, Some(prefix), None) => PathPattern::Prefix(checked_pattern(&prefix)?),
            (None, None, Some(glob)) => {
                let glob = checked_pattern(&glob)?;
                let segments: Vec<String> = glob[1..].split('/').map(str::to_owned).collect();
                if segments
                    .iter()
                    .any(|segment| segment.contains("**") && segment != "**")
                {
                    return Err(format!(
                        "glob `{glob}`: `**` must be a whole segment (`/a/**/b`)"
                    ));
                }
                // One `**` keeps matching linear in the path's segments (the path is the
                // client's: no pattern may cost it more than that).
                if segments.iter().filter(|segment| *segment == "**").count() > 1 {
                    return Err(format!("glob `{glob}`: at most one `**`"));
                }
                PathPattern::Glob(segments)
            }
            _ => return Err("needs exactly one of `path`, `prefix` or `glob`".into()),
        };
        let access = match (spec.access.as_deref(), spec.require) {
            (Some("public"), None) => Access::Public,
            (Some("authenticated"), None) | (None, None) => Access::Authenticated,
            (None | Some("authenticated"), Some(require)) => {
                Access::Require(Requirements::from_spec(require)?)
            }
            (Some("public"), Some(_)) => {
                return Err("a `public` rule cannot have `require` (it checks no token)".into());
            }
            (Some(other), _) => {
                return Err(format!(
                    "`access` is `{other}`: it must be `public` or `authenticated` (or give `require`)"
                ));
            }
        };
        Ok(Rule {
            name,
            methods,
            path,
            access,
        })
    }

    fn matches(&self, route: &Route) -> bool {
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|methods| methods.contains(&route.method));
        method_ok
            && match &self.path {
                PathPattern::Exact(path) => route.path == *path,
                PathPattern::Prefix(prefix) => route.path.starts_with(prefix.as_str()),
                PathPattern::Glob(segments) => {
                    let path: Vec<&str> = route.path[1..].split('/').collect();
                    glob_matches(segments, &path)
                }
            }
    }
}

/// A pattern must itself be a plain path: a rule that could never match (or that an operator
/// meant as a normalised form of something else) is refused at start-up.
fn checked_pattern(pattern: &str) -> Result<String, String> {
    if !pattern.starts_with('/') {
        return Err(format!("`{pattern}` does not start with `/`"));
    }
    if pattern.contains('?') {
        return Err(format!(
            "`{pattern}` has a query: rules match the path only (the query is ignored)"
        ));
    }
    // `*` is allowed (globs); check the rest as a request path would be.
    let plain = pattern.replace('*', "x");
    plain_path(&plain).map_err(|why| format!("`{pattern}`: {why}"))?;
    Ok(pattern.to_owned())
}

/// `*` within one segment, `**` any number of whole segments (none included).
fn glob_matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_matches(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                segment_matches(first.as_bytes(), segment.as_bytes())
                    && glob_matches(rest, path_rest)
            }
            None => false,
        },
    }
}

/// `*` matches any run of bytes within one segment. The usual wildcard walk that remembers
/// only the last `*`: at most pattern × text steps, whatever the pattern.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

impl Requirements {
    fn from_spec(spec: RequireSpec) -> Result<Requirements, String> {
        let dotted = |path: &str| -> Result<Vec<String>, String> {
            let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
            if parts.iter().any(String::is_empty) {
                Err(format!(
                    "`{path}` is not a dotted path (`realm_access.roles`)"
                ))
            } else {
                Ok(parts)
            }
        };
        if spec.roles_claim.is_some() && spec.roles.is_empty() {
            return Err("`roles_claim` without `roles`".into());
        }
        let requirements = Requirements {
            scope: spec.scope,
            roles: spec.roles,
            roles_claim: dotted(spec.roles_claim.as_deref().unwrap_or("roles"))?,
            aud: spec.aud,
            claims: spec
                .claims
                .into_iter()
                .map(|(path, value)| Ok((dotted(&path)?, value)))
                .collect::<Result<_, String>>()?,
            session: spec
                .session
                .into_iter()
                .map(|(path, value)| Ok((dotted(&path)?, value)))
                .collect::<Result<_, String>>()?,
        };
        if requirements.scope.is_empty()
            && requirements.roles.is_empty()
            && requirements.aud.is_none()
            && requirements.claims.is_empty()
            && requirements.session.is_empty()
        {
            return Err("`require` is empty (use `\"access\": \"authenticated\"`)".into());
        }
        Ok(requirements)
    }

    /// Whether a grant satisfies every requirement. The claims are those an issuer signed
    /// (`X-Auth-Claims`); a token signed with a per-session key has none, so it satisfies
    /// no claim requirement.
    pub fn allow(&self, grant: &Grant, token: &str) -> bool {
        let needs_claims = !self.scope.is_empty()
            || !self.roles.is_empty()
            || self.aud.is_some()
            || !self.claims.is_empty();
        let claims = if needs_claims {
            match decode(grant.claims.passed_payload(token).map(str::as_bytes)) {
                Some(claims) => claims,
                None => return false,
            }
        } else {
            Value::Null
        };
        if !self.scope.is_empty() {
            let granted = scopes(claims.get("scope")).or_else(|| scopes(claims.get("scp")));
            let Some(granted) = granted else { return false };
            if !self.scope.iter().all(|s| granted.contains(&s.as_str())) {
                return false;
            }
        }
        if !self.roles.is_empty() {
            let held = at(&claims, &self.roles_claim);
            if !self
                .roles
                .iter()
                .all(|role| holds(held, &Value::String(role.clone())))
            {
                return false;
            }
        }
        if let Some(aud) = &self.aud
            && !holds(claims.get("aud"), &Value::String(aud.clone()))
        {
            return false;
        }
        if !self
            .claims
            .iter()
            .all(|(path, want)| holds(at(&claims, path), want))
        {
            return false;
        }
        if !self.session.is_empty() {
            let Some(session) = decode(grant.session_header.as_ref().map(|v| v.as_bytes())) else {
                return false;
            };
            if !self
                .session
                .iter()
                .all(|(path, want)| holds(at(&session, path), want))
            {
                return false;
            }
        }
        true
    }
}

/// base64url JSON (a header value of a grant), decoded.
fn decode(segment: Option<&[u8]>) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(segment?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The scopes of a `scope`/`scp` claim: a space-separated string or an array of strings.
fn scopes(claim: Option<&Value>) -> Option<Vec<&str>> {
    match claim? {
        Value::String(text) => Some(text.split(' ').filter(|s| !s.is_empty()).collect()),
        Value::Array(items) => Some(items.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// The value at a dotted path of objects.
fn at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |value, key| value.get(key.as_str()))
}

/// `value` equals `want`, or is an array holding it.
fn holds(value: Option<&Value>, want: &Value) -> bool {
    value.is_some_and(|value| {
        value == want || value.as_array().is_some_and(|items| items.contains(want))
    })
}

/// The original request, as the proxy reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The path, without the query, exactly as sent (never decoded nor normalised).
    pub path: String,
}

/// Why no route could be read from a forward-auth request; each is answered `403`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("a route header is repeated or is not text")]
    Ambiguous,
    #[error("the proxy's route headers and the /verify path disagree")]
    Disagreement,
    #[error("the path is not in its plain form")]
    NotPlain,
}

impl Route {
    /// The original request of a forward-auth request, from (each when present) the path
    /// after `/verify` (Envoy `ext_authz` `path_prefix`, the request's own method),
    /// `X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik, Caddy) and `X-Original-Method` +
    /// `X-Original-URI` (nginx, ingress-nginx). A method header missing beside its URI header
    /// means the request's own method (nginx's subrequest keeps it). When several are present
    /// they must name the same method and path: a client can add a header the proxy does not
    /// set, and must not be able to choose which one the rules read. `Ok(None)`: none present
    /// (an app calling `/verify` itself).
    pub fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<Route>, RouteError> {
        let mut found: Option<Route> = None;
        let mut add = |route: Route| -> Result<(), RouteError> {
            match &found {
                Some(seen) if *seen != route => Err(RouteError::Disagreement),
                Some(_) => Ok(()),
                None => {
                    found = Some(route);
                    Ok(())
                }
            }
        };
        if let Some(suffix) = uri.path().strip_prefix("/verify")
            && !suffix.is_empty()
        {
            plain_path(suffix).map_err(|_| RouteError::NotPlain)?;
            add(Route {
                method: method.clone(),
                path: suffix.to_owned(),
            })?;
        }
        for (method_header, uri_header) in [
            (X_FORWARDED_METHOD, X_FORWARDED_URI),
            (X_ORIGINAL_METHOD, X_ORIGINAL_URI),
        ] {
            let Some(target) = single(headers, &uri_header)? else {
                continue;
            };
            let path = target.split_once('?').map_or(target, |(path, _)| path);
            plain_path(path).map_err(|_| RouteError::NotPlain)?;
            let method = match single(headers, &method_header)? {
                Some(name) => {
                    Method::from_bytes(name.as_bytes()).map_err(|_| RouteError::Ambiguous)?
                }
                None => method.clone(),
            };
            add(Route {
                method,
                path: path.to_owned(),
            })?;
        }
        Ok(found)
    }
}

/// The one value of a header, if present; two values, or one that is not visible ASCII, are
/// ambiguous.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, RouteError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(RouteError::Ambiguous);
    }
    first.to_str().map(Some).map_err(|_| RouteError::Ambiguous)
}

/// Whether a request path is in its one plain form: starts with `/`; no empty segment
/// (`//`), no `.` or `..` segment; no backslash, `#`, control or non-ASCII byte; no
/// percent-encoding of `.`, `/`, `\`, an unreserved character (RFC 3986 §2.3: a proxy may
/// decode those before routing) or a control character; every `%` followed by two hex digits.
/// Other percent-encodings (`%20`, `%3F`, UTF-8 bytes) stay as they are: a rule matches them
/// as written.
pub fn plain_path(path: &str) -> Result<(), &'static str> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("does not start with /");
    }
    for segment in path[1..].split('/') {
        if segment == "." || segment == ".." {
            return Err("has a . or .. segment");
        }
    }
    if path.contains("//") {
        return Err("has an empty segment (//)");
    }
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' | b'#' => return Err("has a backslash or #"),
            0..=0x20 | 0x7f.. => return Err("has a control, space or non-ASCII byte"),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err("has a % not followed by two hex digits");
                };
                let decoded = (high * 16 + low) as u8;
                if decoded.is_ascii_alphanumeric()
                    || b"-._~/\\".contains(&decoded)
                    || decoded < 0x20
                    || decoded == 0x7f
                {
                    return Err("percent-encodes ., /, \\, an unreserved or a control character");
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_told_from_the_others() {
        for ok in [
            "/",
            "/a",
            "/a/b/",
            "/files/my%20doc",
            "/x%3Fy",
            "/caf%C3%A9",
            "/a.b/..c",
        ] {
            assert_eq!(plain_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "//a",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/..",
            "/.",
            "/%2e%2e/a",
            "/%2E/a",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/adm%69n",
            "/a\\b",
            "/a#b",
            "/a b",
            "/a%00",
            "/a%",
            "/a%zz",
            "/a%4",
        ] {
            assert!(plain_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs_match_segments() {
        let rule =
            |glob: &str| -> Vec<String> { glob[1..].split('/').map(str::to_owned).collect() };
        let path = |p: &'static str| -> Vec<&'static str> { p[1..].split('/').collect() };
        assert!(glob_matches(
            &rule("/users/*/profile"),
            &path("/users/42/profile")
        ));
        assert!(!glob_matches(
            &rule("/users/*/profile"),
            &path("/users/4/2/profile")
        ));
        assert!(glob_matches(
            &rule("/static/**"),
            &path("/static/a/b/c.css")
        ));
        assert!(glob_matches(&rule("/static/**"), &path("/static")));
        assert!(glob_matches(&rule("/**/*.css"), &path("/a/b/c.css")));
        assert!(!glob_matches(&rule("/**/*.css"), &path("/a/b/c.js")));
    }
}
