#!/usr/bin/env bash
# Load benchmark (SPEC §8): cache-hit `/verify` over loopback HTTP/1.1 keep-alive against a bare
# hyper server answering 200, same machine, same load generator (wrk), as a ratio in one run;
# then the latency at half of the sidecar's peak rate, with an open-loop (paced) generator
# (examples/paced_load.rs) that measures from each request's scheduled time.
#
# Usage: benches/load.sh [seconds]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
threads=1
connections=32

cargo build --release --quiet --bin session-sidecar --example bare_hyper --example paced_load
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

head -c 33 /dev/urandom | base64 > "$work/secret"  # printable: secret files are trimmed
# Servers on CPU 1, the load generator on CPU 0: on a 2-core machine, letting them share both
# cores makes the ratio swing by ±15 % from run to run.
taskset -c 1 ./target/release/session-sidecar serve --jwt-secret-file "$work/secret" \
  --listen 127.0.0.1:18080 --metrics-listen 127.0.0.1:19090 2>/dev/null &
sidecar_pid=$!
taskset -c 1 ./target/release/examples/bare_hyper 127.0.0.1:18090 2>/dev/null &
bare_pid=$!
token="$(./target/release/session-sidecar token --jwt-secret-file "$work/secret" --sub bench --ttl 1h)"
for _ in $(seq 50); do
  curl -sf -o /dev/null -H "Authorization: Bearer $token" http://127.0.0.1:18080/verify && \
  curl -sf -o /dev/null http://127.0.0.1:18090/ && break
  sleep 0.1
done

cat > "$work/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
LUA

run() { taskset -c 0 wrk -t"$threads" -c"$1" -d"${duration}s" --latency "${@:2}"; }
rps() { awk '/Requests\/sec/ {print $2}'; }
requests() { awk '/requests in/ {print $1}'; }
# CPU time (user + system, clock ticks) a process has used: CPU per request is steadier than
# throughput on a machine whose neighbours come and go.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== bare hyper (baseline)"
t0=$(cpu_ticks "$bare_pid")
bare="$(run $connections http://127.0.0.1:18090/ | tee "$work/bare.txt" | rps)"
bare_cpu=$(( $(cpu_ticks "$bare_pid") - t0 ))
echo "== session-sidecar /verify, cache hit"
t0=$(cpu_ticks "$sidecar_pid")
sidecar="$(run $connections -s "$work/auth.lua" http://127.0.0.1:18080/verify | tee "$work/sidecar.txt" | rps)"
sidecar_cpu=$(( $(cpu_ticks "$sidecar_pid") - t0 ))
grep -E "Non-2xx" "$work/sidecar.txt" && { echo "sidecar answered non-2xx"; exit 1; }
half="$(awk -v s="$sidecar" 'BEGIN { printf "%d", s / 2 }')"
echo "== session-sidecar /verify paced at half the peak: $half req/s"
taskset -c 0 ./target/release/examples/paced_load 127.0.0.1:18080 /verify "$half" "$duration" 16 "$token" | tee "$work/half.txt"
echo "== bare hyper paced at the same rate (what the machine and the generator add by themselves)"
taskset -c 0 ./target/release/examples/paced_load 127.0.0.1:18090 / "$half" "$duration" 16 | tee "$work/half-bare.txt"

printf '\nbare hyper:      %s req/s\n' "$bare"
printf 'sidecar (hits):  %s req/s\n' "$sidecar"
awk -v s="$sidecar" -v b="$bare" 'BEGIN { printf "ratio:           %.2f (target >= 0.80)\n", s / b }'
hz=$(getconf CLK_TCK)
awk -v bc="$bare_cpu" -v br="$(requests < "$work/bare.txt")" -v sc="$sidecar_cpu" \
    -v sr="$(requests < "$work/sidecar.txt")" -v hz="$hz" 'BEGIN {
  b = bc / hz / br * 1e6; s = sc / hz / sr * 1e6
  printf "server CPU per request: bare %.2f us, sidecar %.2f us (bare/sidecar %.2f)\n", b, s, b / s }'
echo "at half load (target p99 < 1 ms), sidecar then bare hyper at the same rate:"
grep latency "$work/half.txt" "$work/half-bare.txt" | sed 's|^.*/||'
curl -s http://127.0.0.1:19090/metrics | grep -E '^session_sidecar_cache_(hits|misses)_total'
