#!/usr/bin/env python3
"""A real Prometheus scrapes a real sidecar, with the chart's alerting rules loaded.

Run by scripts/monitoring-check (README "Tests"); standard library only. It starts, on free
loopback ports, in a temporary directory:
  - a one-node Redis Cluster (redis-server --cluster-enabled, every slot on the node),
  - a JWKS server (one Ed25519 key and one that cannot be used),
  - the sidecar (the binary given), with --redis-nodes, --jwks-url, an admin credential,
  - Debian's prometheus (scrape and rule evaluation every second) with
    helm/session-sidecar/files/prometheus-rules.yaml as it is.
Then it drives traffic that makes every metric the dashboard and the alerts use appear, and
asserts:
  1. every metric named in a query of files/grafana-dashboard.json and in an expression of
     files/prometheus-rules.yaml is in the sidecar's /metrics (histograms by their
     _bucket/_sum/_count series);
  2. `promtool check metrics` accepts the scrape;
  3. through Prometheus' HTTP API: `up` is 1 for the sidecar, the sidecar's metrics are
     queryable with the traffic's values, and all the chart's rules are loaded and healthy,
     with no alert pending or firing while everything is up;
  4. once Redis is stopped (the sidecar still probed and asked, as the kubelet and the app
     would), SessionSidecarStoreUnreachable and SessionSidecarInvalidationFeedDown go pending.
Every wait is bounded; on a failure it prints what it saw and exits 1.

  tests/deploy/prometheus_live.py SIDECAR_BINARY
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(REPO, "helm", "session-sidecar")
RULES = os.path.join(CHART, "files", "prometheus-rules.yaml")
DASHBOARD = os.path.join(CHART, "files", "grafana-dashboard.json")
SECRET = "a-test-hmac-secret-of-at-least-32-bytes!"
ADMIN = "live-prometheus-admin-credential"

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "abs", "absent", "absent_over_time", "clamp_min", "clamp_max",
    "label_replace", "label_join", "vector", "scalar", "time", "timestamp", "sort", "sort_desc",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "resets", "changes", "round", "ceil", "floor", "inf", "nan",
}


def fail(message):
    print(f"FAIL  {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"PASS  {message}", flush=True)


def free_port(max_port=55535):
    """A free loopback port (at most max_port: Redis Cluster's bus port is port + 10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port <= max_port:
            return port
    fail("no free port")


def http(method, url, body=None, headers=None, timeout=5):
    """(status, headers, body bytes); never raises on an HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_for(what, predicate, timeout, interval=0.5):
    """Polls predicate() until it returns something truthy; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(interval)
    fail(f"{what}: not within {timeout} s (last: {last!r})")


def metric_names_in(expr):
    """Metric names a PromQL expression reads: its identifiers, once strings, label matchers,
    ranges and the label lists of by/without/on/ignoring/group_* are removed, minus PromQL's
    own words and Grafana's $variables."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+(e\d+)?", n)}


def exported_series_names(text):
    """Every series name a /metrics text can hold: counters and gauges by their name,
    histograms and summaries by name_bucket/_sum/_count."""
    names = set()
    for kind_line in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = kind_line.groups()
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            names |= {name, name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def rule_expressions():
    """(alert name, expr) of every rule in the rules file, read without PyYAML: each `expr: |`
    block runs until the next key at the rule's indentation."""
    text = open(RULES).read()
    out = []
    for m in re.finditer(r"- alert: (\S+)\n(.*?)(?=\n      - alert: |\Z)", text, re.S):
        name, body = m.groups()
        expr = re.search(r"\n        expr: \|\n((?:          .*\n|\s*\n)+)", "\n" + body + "\n")
        if not expr:
            fail(f"{name}: no `expr: |` block in {RULES}")
        out.append((name, expr.group(1)))
    if len(out) < 7:
        fail(f"only {len(out)} alerts read from {RULES}")
    return out


def dashboard_expressions():
    """(panel title, expr) of every query of the dashboard, and of its template variables."""
    d = json.load(open(DASHBOARD))
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(d["panels"])
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            inner = re.match(r"label_values\((.*),\s*\w+\)$", q)
            out.append((f"variable {v['name']}", inner.group(1) if inner else q))
    if len(out) < 10:
        fail(f"only {len(out)} queries read from {DASHBOARD}")
    return out


def ed25519_jwk(pem_path, kid):
    der = base64.b64decode("".join(l for l in open(pem_path).read().splitlines() if "-----" not in l))
    x = base64.urlsafe_b64encode(der[-32:]).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Processes:
    """Child processes, each in its own process group, killed on exit."""

    def __init__(self):
        self.procs = {}

    def start(self, name, argv, log_dir, **kw):
        log = open(os.path.join(log_dir, f"{name}.log"), "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, **kw)
        return self.procs[name]

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def main():
    if len(sys.argv) != 2:
        fail("usage: prometheus_live.py SIDECAR_BINARY")
    sidecar_bin = os.path.abspath(sys.argv[1])
    for tool in ("prometheus", "promtool", "redis-server", "redis-cli"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (scripts/monitoring-check installs it: apt-get install prometheus redis-server redis-tools)")
    if not os.access(sidecar_bin, os.X_OK):
        fail(f"{sidecar_bin} is not an executable (cargo build --bin session-sidecar)")

    work = tempfile.mkdtemp(prefix="prometheus-live-")
    procs = Processes()
    started = time.monotonic()
    try:
        run(sidecar_bin, work, procs)
    finally:
        procs.stop_all()
        if os.environ.get("KEEP_WORK"):
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"prometheus_live: passed in {time.monotonic() - started:.0f} s")


def run(sidecar_bin, work, procs):
    # --- Redis: a one-node cluster holding every slot --------------------------------------
    redis_port = free_port()
    redis_dir = os.path.join(work, "redis")
    os.makedirs(redis_dir)
    procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                          "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--dir", redis_dir, "--save", "", "--appendonly", "no"], work)
    cli = ["redis-cli", "-p", str(redis_port)]
    wait_for("redis-server answers PING",
             lambda: subprocess.run(cli + ["ping"], capture_output=True, text=True).stdout.strip() == "PONG", 20)
    subprocess.run(cli + ["cluster", "addslotsrange", "0", "16383"], check=True, capture_output=True)
    wait_for("the one-node Redis Cluster is ok",
             lambda: "cluster_state:ok" in subprocess.run(cli + ["cluster", "info"], capture_output=True, text=True).stdout, 30)

    # --- a JWKS server: one Ed25519 key, one that cannot be used ---------------------------
    good = ed25519_jwk(os.path.join(REPO, "tests", "fixtures", "ed25519.pub"), "live-1")
    # An Ed25519 key that claims an RSA algorithm cannot be used: skipped and counted.
    jwks = {"keys": [good, {**good, "kid": "unusable", "alg": "RS256"}]}
    body = json.dumps(jwks).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    jwks_server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=jwks_server.serve_forever, daemon=True).start()
    jwks_url = f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks"

    # --- the sidecar ------------------------------------------------------------------------
    secret_file = os.path.join(work, "secret")
    admin_file = os.path.join(work, "admin")
    open(secret_file, "w").write(SECRET)
    open(admin_file, "w").write(ADMIN + "\n")
    api_port, metrics_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    admin = f"http://127.0.0.1:{metrics_port}"
    procs.start("sidecar", [sidecar_bin, "serve", "--listen", f"127.0.0.1:{api_port}",
                            "--metrics-listen", f"127.0.0.1:{metrics_port}",
                            "--redis-nodes", f"redis://127.0.0.1:{redis_port}",
                            "--redis-command-timeout-ms", "100", "--redis-connect-timeout-ms", "200",
                            "--jwt-secret-file", secret_file, "--admin-token-file", admin_file,
                            "--jwks-url", jwks_url, "--log-format", "json"], work)
    wait_for("the sidecar is ready (/readyz 200)", lambda: http("GET", admin + "/readyz")[0] == 200, 60)

    # --- traffic that makes every metric appear ----------------------------------------------
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    status, _, created = http("POST", api + "/v1/sessions", {"sub": "alice", "data": {"role": "admin"}}, bearer)
    if status != 201:
        fail(f"POST /v1/sessions answered {status}: {created!r}")
    session = json.loads(created)
    token = {"Authorization": f"Bearer {session['token']}"}
    for _ in range(5):  # one miss (Redis lookup), then hits
        status = http("GET", api + "/verify", headers=token)[0]
        if status != 200:
            fail(f"/verify of a fresh session token answered {status}")
    http("GET", api + "/verify", headers={"Authorization": "Bearer not.a.token"})
    # Tokens of the JWKS issuer with kids it does not have: the first asks for a refresh,
    # the next ones within a second are refused by the once-a-second limit.
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "unknown-kid"}).encode())
    for i in range(3):
        payload = b64url(json.dumps({"sub": f"u{i}", "exp": int(time.time()) + 600}).encode())
        http("GET", api + "/verify", headers={"Authorization": f"Bearer {header}.{payload}.{b64url(b'x' * 64)}"})
    # A deletion: evicts the cached grant (this sidecar hears its own announcement too) and is
    # counted as unconfirmed (the one-node cluster has no replica).
    status = http("DELETE", api + f"/v1/sessions/{session['sid']}", headers=bearer)[0]
    if status != 204:
        fail(f"DELETE /v1/sessions/<sid> answered {status}")
    if http("GET", api + "/verify", headers=token)[0] != 401:
        fail("the deleted session's token still verifies")

    def scrape():
        return http("GET", admin + "/metrics")[2].decode()

    needed = {n for _, e in rule_expressions() + dashboard_expressions() for n in metric_names_in(e)}
    # Counters that only appear once counted: wait for the invalidation to come back.
    text = wait_for("the sidecar counts the invalidation it received",
                    lambda: (lambda t: t if "session_sidecar_invalidations_received_total{" in t else None)(scrape()), 10)

    # 1. every metric of the dashboard and of the alerts is exported
    exported = exported_series_names(text)
    missing = sorted(needed - exported)
    if missing:
        fail(f"metrics named in the dashboard or the alerts but not in /metrics: {missing}\n"
             f"exported: {sorted(exported)}")
    ok(f"the dashboard and the alerts name {len(needed)} metrics, all in the sidecar's /metrics")

    # 2. promtool check metrics on the scrape
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    if lint.returncode != 0:
        fail(f"promtool check metrics: exit {lint.returncode}\n{lint.stdout}{lint.stderr}")
    ok("promtool check metrics accepts the scrape")

    # --- Prometheus -------------------------------------------------------------------------
    prom_port = free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    config = os.path.join(work, "prometheus.yml")
    open(config, "w").write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: session-sidecar
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
""")
    procs.start("prometheus", ["prometheus", f"--config.file={config}",
                               f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"], work)

    def query(q):
        status, _, body = http("GET", prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        if status != 200:
            raise ValueError(f"{q}: {status} {body[:200]!r}")
        return json.loads(body)["data"]["result"]

    wait_for("Prometheus is ready", lambda: http("GET", prom + "/-/ready")[0] == 200, 60)

    # 3. up, the sidecar's metrics and the rules, through the HTTP API
    up = wait_for('up{job="session-sidecar"} is 1',
                  lambda: [r for r in query('up{job="session-sidecar"}') if r["value"][1] == "1"], 30)
    ok(f"Prometheus scrapes the sidecar: up{{instance=\"{up[0]['metric']['instance']}\"}} = 1")
    valid = wait_for("session_sidecar_verifications_total{result=\"valid\"} is queryable",
                     lambda: query('session_sidecar_verifications_total{job="session-sidecar",result="valid"}'), 15)
    if float(valid[0]["value"][1]) < 5:
        fail(f"session_sidecar_verifications_total{{result=\"valid\"}} is {valid[0]['value'][1]}, not the 5 verifications sent")
    for q in ("session_sidecar_cache_hits_total", "session_sidecar_redis_commands_total{outcome=\"ok\"}",
              "session_sidecar_key_set_age_seconds", "session_sidecar_verification_duration_seconds_bucket",
              "session_sidecar_invalidation_subscription_connected == 1"):
        if not query(q):
            fail(f"Prometheus has no series for {q}")
    ok("the sidecar's metrics are queryable through Prometheus (verifications, cache, Redis, keys, feed)")

    status, _, body = http("GET", prom + "/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    want = {name for name, _ in rule_expressions()}
    loaded = {r["name"] for r in rules if r.get("type") == "alerting"}
    if loaded != want:
        fail(f"Prometheus loaded the alerts {sorted(loaded)}, the rules file has {sorted(want)}")
    time.sleep(3)  # a few evaluations
    status, _, body = http("GET", prom + "/api/v1/rules")
    rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    if unhealthy:
        fail(f"rules that do not evaluate: {unhealthy}")
    active = [(r["name"], r["state"]) for r in rules if r.get("state") != "inactive"]
    if active:
        fail(f"alerts active while Redis and the sidecar are healthy: {active}")
    ok(f"Prometheus evaluates the chart's {len(loaded)} alerts, all inactive while everything is up")

    # 4. Redis stops: the store-unreachable alert goes pending
    procs.stop("redis")
    stop = threading.Event()

    def probe_and_ask():
        """What the kubelet (readiness probe) and the app do meanwhile."""
        n = 0
        while not stop.is_set():
            try:
                http("GET", admin + "/readyz", timeout=3)
                n += 1
                payload = b64url(json.dumps({"sub": f"late{n}", "sid": f"gone-session-{n}", "exp": int(time.time()) + 600}).encode())
                head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
                sig = b64url(hmac.new(SECRET.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest())
                http("GET", api + "/verify", headers={"Authorization": f"Bearer {head}.{payload}.{sig}"}, timeout=3)
            except OSError:
                pass
            time.sleep(0.1)

    workers = [threading.Thread(target=probe_and_ask, daemon=True) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        def alert_states():
            status, _, body = http("GET", prom + "/api/v1/alerts")
            return {a["labels"]["alertname"]: a["state"] for a in json.loads(body)["data"]["alerts"]}

        def store_unreachable_active():
            states = alert_states()
            return states if states.get("SessionSidecarStoreUnreachable") in ("pending", "firing") else None

        states = wait_for("SessionSidecarStoreUnreachable goes pending after Redis stopped",
                          store_unreachable_active, 120, interval=1)
        ok(f"Redis stopped: SessionSidecarStoreUnreachable is {states['SessionSidecarStoreUnreachable']}")
        states = wait_for("SessionSidecarInvalidationFeedDown goes pending after Redis stopped",
                          lambda: (lambda s: s if s.get("SessionSidecarInvalidationFeedDown") in ("pending", "firing") else None)(alert_states()),
                          60, interval=1)
        ok(f"Redis stopped: SessionSidecarInvalidationFeedDown is {states['SessionSidecarInvalidationFeedDown']} "
           f"(all active: {states})")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
        jwks_server.shutdown()


if __name__ == "__main__":
    main()
