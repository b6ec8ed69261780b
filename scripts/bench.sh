#!/usr/bin/env bash
# Measures the agent's serving paths (not a test; numbers go to BENCHMARKS.md):
#   1. median wall time of a whole `credential-process --agent` process (hyperfine),
#   2. requests/s and p99 latency of the IMDS credentials GET with 64 connections (wrk),
#   3. the agent process's peak resident memory (VmHWM) after the load.
# The doubles run in `spiffe-aws-agent dev`; the measured agent is a separate `run` process
# so its memory is its own. Everything stays on 127.0.0.1. Then scripts/bench-peers.sh compares
# with the real aws_signing_helper (BENCH_PEERS=0 skips that).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${BENCH_DURATION:-10s}"
RUNS="${BENCH_RUNS:-1000}"
IMDS_PORT="${BENCH_IMDS_PORT:-19911}"

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need hyperfine hyperfine
need curl curl

# BENCH_BIN measures another build (e.g. an older commit's, for a before/after comparison);
# it must include the `dev` feature, which starts the doubles.
if [ -n "${BENCH_BIN:-}" ]; then
    BIN="$BENCH_BIN"
else
    cargo build --release --quiet --features dev
    BIN="$PWD/target/release/spiffe-aws-agent"
fi
DIR="$(mktemp -d)"
cleanup() { kill "${AGENT_PID:-}" "${DEV_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

# The doubles (and dev's own agent, on free ports; it is not the one measured).
. scripts/lib/dev-stack.sh
start_dev "$BIN" "$DIR" --rotate-every 86400 --imds 127.0.0.1:0 --container 127.0.0.1:0

{ orders_agent_toml "$DIR"; cat <<TOML
[imds]
listen = "127.0.0.1:$IMDS_PORT"
[agent_socket]
path = "$DIR/bench-agent.sock"
TOML
} >"$DIR/bench-agent.toml"
RUST_LOG=warn "$BIN" run --config "$DIR/bench-agent.toml" 2>"$DIR/agent.err" &
AGENT_PID=$!
for _ in $(seq 100); do "$BIN" credential-process --agent "$DIR/bench-agent.sock" --role orders >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" credential-process --agent "$DIR/bench-agent.sock" --role orders >/dev/null

echo "== credential-process --agent: $RUNS runs"
hyperfine -N --warmup 50 --runs "$RUNS" --export-json "$DIR/cp.json" \
    "$BIN credential-process --agent $DIR/bench-agent.sock --role orders" >/dev/null
CP_MEDIAN_MS="$(python3 -c "import json,statistics; r=json.load(open('$DIR/cp.json'))['results'][0]; print(f\"{statistics.median(r['times'])*1000:.3f}\")")"
CP_P90_MS="$(python3 -c "import json; r=sorted(json.load(open('$DIR/cp.json'))['results'][0]['times']); print(f'{r[int(len(r)*0.9)]*1000:.3f}')")"

echo "== IMDS credentials GET: 64 connections, $DURATION"
TOKEN="$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "http://127.0.0.1:$IMDS_PORT/latest/api/token")"
URL="http://127.0.0.1:$IMDS_PORT/latest/meta-data/iam/security-credentials/orders"
curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "$URL" | grep -q '"Code":"Success"'
# Two load shapes: one wrk thread (the generator leaves the agent a core) and two (the
# generator competes with the agent for both cores). Both use 64 connections.
# The agent's own CPU time per request (user + system, from /proc) is the figure least
# disturbed by other load on the machine.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$AGENT_PID/stat"; }
TICKS_BEFORE="$(cpu_ticks)"
for T in 1 2; do
    wrk -t"$T" -c64 -d"$DURATION" --latency -H "X-aws-ec2-metadata-token: $TOKEN" "$URL" >"$DIR/wrk$T.out"
done
TICKS_AFTER="$(cpu_ticks)"
REQUESTS="$(awk '/requests in/ {n += $1} END {print n}' "$DIR"/wrk1.out "$DIR"/wrk2.out)"
CPU_US="$(python3 -c "import os; print(f'{($TICKS_AFTER - $TICKS_BEFORE) / os.sysconf(\"SC_CLK_TCK\") / $REQUESTS * 1e6:.2f}')")"
field() { awk -v k="$2" '$1 == k {print $2}' "$DIR/wrk$1.out"; }
RPS1="$(awk '/^Requests\/sec:/ {print $2}' "$DIR/wrk1.out")"; RPS2="$(awk '/^Requests\/sec:/ {print $2}' "$DIR/wrk2.out")"
ERRORS="$(grep -hE 'Non-2xx|Socket errors' "$DIR"/wrk*.out || true)"

HWM_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$AGENT_PID/status")"
RSS_KB="$(awk '/^VmRSS:/ {print $2}' "/proc/$AGENT_PID/status")"

cat <<REPORT

| measure | result | target |
| --- | --- | --- |
| credential-process --agent, median wall time ($RUNS runs) | ${CP_MEDIAN_MS} ms (p90 ${CP_P90_MS} ms) | <= 2 ms |
| IMDS credentials GET, 64 connections, 1 wrk thread, $DURATION | ${RPS1} req/s; p50 $(field 1 50%), p99 $(field 1 99%) | >= 50,000 req/s; p99 <= 2 ms |
| IMDS credentials GET, 64 connections, 2 wrk threads, $DURATION | ${RPS2} req/s; p50 $(field 2 50%), p99 $(field 2 99%) | >= 50,000 req/s; p99 <= 2 ms |
| agent CPU time per IMDS request (both loads) | ${CPU_US} us | |
| agent peak resident memory (VmHWM) after the load | $((HWM_KB / 1024)) MiB (${HWM_KB} KiB; now ${RSS_KB} KiB) | <= 20 MiB |

machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load generator and agent share the cores.
${ERRORS:+wrk reported: $ERRORS}
REPORT

# Side by side with the real aws_signing_helper (its own doubles and servers, started after
# ours are gone): BENCH_PEERS=0 skips it.
if [ "${BENCH_PEERS:-1}" != 0 ]; then
    cleanup
    trap - EXIT
    echo
    scripts/bench-peers.sh
fi
