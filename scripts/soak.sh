#!/usr/bin/env bash
# A bounded soak run of the agent (not a test; results go to BENCHMARKS.md):
#   - `spiffe-aws-agent dev` runs the doubles, rotating the SVIDs every 10 s, with the Roles
#     Anywhere double failing every SOAK_FAIL_EVERY-th CreateSession call with 500;
#   - a separate `spiffe-aws-agent run` (the one measured) serves one role on every channel:
#     IMDS, the container endpoint, the agent socket and a credentials file;
#   - scripts/soak-clients.py drives every channel from loopback for SOAK_DURATION seconds
#     and, for the middle third of the run, holds SOAK_FLOOD idle connections to the two HTTP
#     endpoints (reconnecting whenever the agent sheds one);
#   - reports requests and errors per channel (errors must be 0), CreateSession calls (from
#     the agent's log), the agent's RSS and open fds at start and end, and its log lines.
# Everything stays on 127.0.0.1, is bounded in count and time, and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${SOAK_DURATION:-600}"
FAIL_EVERY="${SOAK_FAIL_EVERY:-4}"
FLOOD="${SOAK_FLOOD:-2000}"
ROTATE="${SOAK_ROTATE_EVERY:-10}"

if [ -n "${SOAK_BIN:-}" ]; then
    BIN="$SOAK_BIN"          # must include the `dev` feature
else
    cargo build --release --quiet --features dev
    BIN="$PWD/target/release/spiffe-aws-agent"
fi
DIR="$(mktemp -d)"
cleanup() { kill "${AGENT_PID:-}" "${DEV_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
# The flood holds FLOOD sockets in the client process; the agent raises its own limit.
ulimit -n "$(( FLOOD + 1024 > 8192 ? FLOOD + 1024 : 8192 ))" 2>/dev/null || true

. scripts/lib/dev-stack.sh
start_dev "$BIN" "$DIR" --rotate-every "$ROTATE" --fail-every "$FAIL_EVERY" \
    --imds 127.0.0.1:0 --container 127.0.0.1:0

IMDS_PORT="$(free_port)"
CONTAINER_PORT="$(free_port)"
{ orders_agent_toml "$DIR"; cat <<TOML
[imds]
listen = "127.0.0.1:$IMDS_PORT"
[container]
listen = "127.0.0.1:$CONTAINER_PORT"
token_file = "$DIR/container-token"
[agent_socket]
path = "$DIR/soak-agent.sock"
[[credentials_file]]
role = "orders"
profile = "orders"
path = "$DIR/credentials"
TOML
} >"$DIR/soak-agent.toml"
RUST_LOG=info "$BIN" run --config "$DIR/soak-agent.toml" 2>"$DIR/agent.err" &
AGENT_PID=$!
for _ in $(seq 100); do "$BIN" credential-process --agent "$DIR/soak-agent.sock" --role orders >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" credential-process --agent "$DIR/soak-agent.sock" --role orders >/dev/null

status() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$AGENT_PID/status"; }
fds() { ls "/proc/$AGENT_PID/fd" | wc -l; }
RSS_START="$(status VmRSS)"; FDS_START="$(fds)"; LOG_START="$(wc -l <"$DIR/agent.err")"
echo "== soak: ${DURATION}s, SVIDs rotate every ${ROTATE}s, one CreateSession in $FAIL_EVERY fails, $FLOOD idle connections from $((DURATION / 3))s to $((2 * DURATION / 3))s"

# Open fds during the flood, sampled at its middle.
( sleep "$((DURATION / 2))"; fds >"$DIR/fds-mid" 2>/dev/null; status VmRSS >"$DIR/rss-mid" 2>/dev/null ) &
SAMPLER_PID=$!
CLIENT_ARGS="$(python3 -c 'import json,sys; print(json.dumps(dict(
    duration=int(sys.argv[1]), imds_port=int(sys.argv[2]), container_port=int(sys.argv[3]),
    token_file=sys.argv[4], agent_socket=sys.argv[5], credentials_file=sys.argv[6],
    bin=sys.argv[7], role="orders", profile="orders", flood_connections=int(sys.argv[8]),
    flood_start=int(sys.argv[1])//3, flood_end=2*int(sys.argv[1])//3)))' \
    "$DURATION" "$IMDS_PORT" "$CONTAINER_PORT" "$DIR/container-token" "$DIR/soak-agent.sock" \
    "$DIR/credentials" "$BIN" "$FLOOD")"
python3 scripts/soak-clients.py "$CLIENT_ARGS" >"$DIR/clients.json"
wait "$SAMPLER_PID" || true

kill -0 "$AGENT_PID" || { echo "the agent died" >&2; cat "$DIR/agent.err" >&2; exit 1; }
RSS_END="$(status VmRSS)"; HWM_END="$(status VmHWM)"; FDS_END="$(fds)"
LOG_LINES="$(wc -l <"$DIR/agent.err")"
RSS_MID="$(cat "$DIR/rss-mid" 2>/dev/null || echo 0)"; FDS_MID="$(cat "$DIR/fds-mid" 2>/dev/null || echo '?')"
REFRESHED="$(grep -c 'credentials refreshed' "$DIR/agent.err" || true)"
FAILED="$(grep -c 'exchange failed' "$DIR/agent.err" || true)"
ROTATIONS="$(grep -c 'rotated the SVIDs' "$DIR/dev.out" || true)"

python3 - "$DIR/clients.json" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
ch = r["channels"]
print()
print("| measure | result |")
print("| --- | --- |")
for name, label in [("imds", "IMDS (token, listing, document)"), ("container", "container endpoint"),
                    ("process", "credential-process --agent"), ("file", "credentials file reads")]:
    c = ch.get(name, {"requests": 0, "errors": 0})
    print(f"| {label}: requests / errors | {c['requests']:,} / {c['errors']} |")
total = sum(c["requests"] for c in ch.values()); errors = sum(c["errors"] for c in ch.values())
print(f"| all channels: requests / errors | {total:,} / {errors} |")
f = r["flood"]
print(f"| flood: connections opened / closed by the agent / peak open | {f['opened']:,} / {f['closed_by_agent']:,} / {f['peak_open']:,} |")
print("| CreateSession calls by the agent: succeeded / failed (500 injected) | $REFRESHED / $FAILED |")
print("| SVID rotations | $ROTATIONS |")
print("| agent RSS: start / mid-flood / end (peak VmHWM) | $((RSS_START / 1024)).$((RSS_START % 1024 * 10 / 1024)) / $((RSS_MID / 1024)).$((RSS_MID % 1024 * 10 / 1024)) / $((RSS_END / 1024)).$((RSS_END % 1024 * 10 / 1024)) MiB ($((HWM_END / 1024)).$((HWM_END % 1024 * 10 / 1024)) MiB) |")
print("| agent open fds: start / mid-flood / end | $FDS_START / $FDS_MID / $FDS_END |")
print("| agent log lines (RUST_LOG=info): at start / written during the run | $LOG_START / $((LOG_LINES - LOG_START)) |")
if r["error_samples"]:
    print("\nerror samples:", json.dumps(r["error_samples"], indent=1))
sys.exit(1 if errors else 0)
PY
echo "machine: $(nproc) cores; duration ${DURATION}s"
