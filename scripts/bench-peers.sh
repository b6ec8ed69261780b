#!/usr/bin/env bash
# Side by side with the real aws_signing_helper (v1.4.0, built by scripts/build-peers.sh); not a
# test, numbers go to BENCHMARKS.md. One run, one machine, the same certificate files
# (certs/orders-p256.*) and the same Roles Anywhere and STS doubles (from `spiffe-aws-agent dev`):
#   1. one-shot `credential-process` (exec, CreateSession, JSON out): wall and CPU time;
#   2. IMDS credentials GET, our `serve` vs `aws_signing_helper serve`: 64 connections (wrk),
#      req/s, p50/p99, then each server's peak RSS;
#   3. 100 consecutive `aws sts get-caller-identity` through `credential_process`: ours via
#      `--agent` (a running `spiffe-aws-agent run`) vs `aws_signing_helper credential-process`:
#      wall time and the CreateSession calls made during the 100 runs.
# Both binaries trust the doubles' TLS CA through SSL_CERT_FILE. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
RUNS="${BENCH_PEER_RUNS:-200}"
DURATION="${BENCH_DURATION:-10s}"
CLI_RUNS="${BENCH_CLI_RUNS:-100}"

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need hyperfine hyperfine
need curl curl
scripts/build-peers.sh
if [ ! -x .venv/bin/aws ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
cargo build --release --quiet --features dev
BIN="$PWD/target/release/spiffe-aws-agent"
HELPER="${SPIFFE_AWS_AGENT_PEERS_DIR:-$PWD/target/peers}/bin/aws_signing_helper"
AWS="$PWD/.venv/bin/aws"
DIR="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

. scripts/lib/dev-stack.sh
start_dev "$BIN" "$DIR" --rotate-every 86400 --imds 127.0.0.1:0 --container 127.0.0.1:0
PIDS+=("$DEV_PID")
[ -n "$STS_ENDPOINT" ] || { cat "$DIR/dev.out" >&2; echo "dev printed no AWS services endpoint" >&2; exit 1; }
export SSL_CERT_FILE="$DIR/roles-anywhere-ca.pem"
unset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy

TA="$DEV_TRUST_ANCHOR_ARN"
PROFILE="$DEV_PROFILE_ARN"
ROLE="$DEV_ROLE_ARN_ORDERS"
ARGS="--certificate $PWD/certs/orders-p256.pem --private-key $PWD/certs/orders-p256.key --intermediates $PWD/certs/intermediate-ca.pem --trust-anchor-arn $TA --profile-arn $PROFILE --role-arn $ROLE --endpoint $RA_ENDPOINT --region us-east-1 --session-duration 3600"

# Both must work before anything is timed.
"$BIN" credential-process $ARGS | grep -q '"Version":1'
"$HELPER" credential-process $ARGS | grep -q '"Version": *1'

echo "== 1. one-shot credential-process, $RUNS runs each"
hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$DIR/oneshot.json" \
    -n ours "$BIN credential-process $ARGS" -n helper "$HELPER credential-process $ARGS" >/dev/null
read -r OS_OURS_MS OS_OURS_MIN OS_OURS_CPU OS_HELPER_MS OS_HELPER_MIN OS_HELPER_CPU < <(python3 - "$DIR/oneshot.json" <<'PY'
import json, statistics, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
out = []
for name in ("ours", "helper"):
    x = r[name]
    out += [statistics.median(x["times"]) * 1000, min(x["times"]) * 1000,
            (x["user"] + x["system"]) * 1000]
print(" ".join(f"{v:.2f}" for v in out))
PY
)

echo "== 2. IMDS credentials GET, 64 connections, $DURATION each"
wait_port() { for _ in $(seq 200); do grep -o 'AWS_EC2_METADATA_SERVICE_ENDPOINT=http://[0-9.:]*' "$1" 2>/dev/null | head -1 | sed 's/.*http:\/\///' | grep . && return; sleep 0.1; done; cat "$1" >&2; return 1; }
RUST_LOG=info "$BIN" serve --port 0 $ARGS 2>"$DIR/ours-serve.log" &
OURS_SERVE=$!; PIDS+=($OURS_SERVE)
"$HELPER" serve --port 0 $ARGS 2>"$DIR/helper-serve.log" &
HELPER_SERVE=$!; PIDS+=($HELPER_SERVE)
OURS_ADDR="$(wait_port "$DIR/ours-serve.log")"
HELPER_ADDR="$(wait_port "$DIR/helper-serve.log")"
imds_bench() { # name addr pid
    local token url
    token="$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "http://$2/latest/api/token")"
    url="http://$2/latest/meta-data/iam/security-credentials/orders"
    for _ in $(seq 100); do curl -sf -H "X-aws-ec2-metadata-token: $token" "$url" | grep -q '"Code": *"Success"' && break; sleep 0.1; done
    wrk -t1 -c64 -d"$DURATION" --latency -H "X-aws-ec2-metadata-token: $token" "$url" >"$DIR/wrk-$1.out"
    awk '/^VmHWM:/ {print $2}' "/proc/$3/status" >"$DIR/hwm-$1"
}
imds_bench ours "$OURS_ADDR" "$OURS_SERVE"
imds_bench helper "$HELPER_ADDR" "$HELPER_SERVE"
rps() { awk '/^Requests\/sec:/ {print $2}' "$DIR/wrk-$1.out"; }
lat() { awk -v k="$2" '$1 == k {print $2}' "$DIR/wrk-$1.out"; }
errs() { grep -hE 'Non-2xx|Socket errors' "$DIR/wrk-$1.out" | tr -s ' ' | paste -sd ';' || true; }

echo "== 3. $CLI_RUNS x aws sts get-caller-identity through credential_process"
# The agent, as in scripts/bench.sh: one role from the same files, on a unix socket.
cat >"$DIR/agent.toml" <<TOML
certificate = "$PWD/certs/orders-p256.pem"
private_key = "$PWD/certs/orders-p256.key"
intermediates = "$PWD/certs/intermediate-ca.pem"
endpoint = "$RA_ENDPOINT"
[[role]]
name = "orders"
trust_anchor_arn = "$TA"
profile_arn = "$PROFILE"
role_arn = "$ROLE"
[agent_socket]
path = "$DIR/agent.sock"
TOML
RUST_LOG=warn "$BIN" run --config "$DIR/agent.toml" 2>"$DIR/agent.err" &
PIDS+=($!)
for _ in $(seq 100); do "$BIN" credential-process --agent "$DIR/agent.sock" --role orders >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" credential-process --agent "$DIR/agent.sock" --role orders >/dev/null || { cat "$DIR/agent.err"; exit 1; }
# Each credential_process line tees its JSON into a log (the same shim for both), so the
# distinct access keys count the CreateSession calls whose credentials the CLI used.
cat >"$DIR/aws-config" <<INI
[profile ours]
region = us-east-1
credential_process = /bin/sh -c '"\$0" "\$@" | tee -a $DIR/cp-ours.log' $BIN credential-process --agent $DIR/agent.sock --role orders
[profile helper]
region = us-east-1
credential_process = /bin/sh -c '"\$0" "\$@" | tee -a $DIR/cp-helper.log' $HELPER credential-process $ARGS
INI
# Interleaved (ours, helper, ours, ...) so both see the same background load; each run timed.
cli_run() { # profile -> nanoseconds
    local start end
    start=$(date +%s%N)
    AWS_CONFIG_FILE="$DIR/aws-config" AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
        "$AWS" sts get-caller-identity --profile "$1" --endpoint-url "$STS_ENDPOINT" --output text >/dev/null
    end=$(date +%s%N)
    echo $((end - start))
}
CLI_OURS_NS=0; CLI_HELPER_NS=0
for _ in $(seq "$CLI_RUNS"); do
    CLI_OURS_NS=$((CLI_OURS_NS + $(cli_run ours)))
    CLI_HELPER_NS=$((CLI_HELPER_NS + $(cli_run helper)))
done
CLI_OURS_S="$(python3 -c "print($CLI_OURS_NS / 1e9)")"
CLI_HELPER_S="$(python3 -c "print($CLI_HELPER_NS / 1e9)")"
keys() { grep -o '"AccessKeyId": *"[^"]*"' "$DIR/cp-$1.log" | sort -u | wc -l; }
calls() { grep -o '"AccessKeyId"' "$DIR/cp-$1.log" | wc -l; }

ratio() { python3 -c "a, b = float('$1'), float('$2'); print(f'{a / b:.2f}' if b else '-')"; }
fmt() { python3 -c "print(f'{float(\"$1\"):.${2:-2}f}')"; }
cat <<REPORT

| measure | spiffe-aws-agent | aws_signing_helper | ours / theirs |
| --- | --- | --- | --- |
| one-shot credential-process, median wall ($RUNS runs) | $OS_OURS_MS ms | $OS_HELPER_MS ms | $(ratio "$OS_OURS_MS" "$OS_HELPER_MS") |
| … fastest run | $OS_OURS_MIN ms | $OS_HELPER_MIN ms | $(ratio "$OS_OURS_MIN" "$OS_HELPER_MIN") |
| one-shot credential-process, CPU (user+sys, mean) | $OS_OURS_CPU ms | $OS_HELPER_CPU ms | $(ratio "$OS_OURS_CPU" "$OS_HELPER_CPU") |
| IMDS GET, 64 conns, 1 wrk thread, $DURATION: req/s | $(rps ours) | $(rps helper) | $(ratio "$(rps ours)" "$(rps helper)") |
| … p50 / p99 | $(lat ours 50%) / $(lat ours 99%) | $(lat helper 50%) / $(lat helper 99%) | |
| server peak RSS (VmHWM) after the load | $(($(cat "$DIR/hwm-ours") / 1024)) MiB | $(($(cat "$DIR/hwm-helper") / 1024)) MiB | $(ratio "$(cat "$DIR/hwm-ours")" "$(cat "$DIR/hwm-helper")") |
| $CLI_RUNS x \`aws sts get-caller-identity\` via credential_process: wall | $(fmt "$CLI_OURS_S" 1) s (\`--agent\`) | $(fmt "$CLI_HELPER_S" 1) s | $(ratio "$CLI_OURS_S" "$CLI_HELPER_S") |
| … credential_process runs / distinct credentials (= CreateSession calls) | $(calls ours) / $(keys ours) | $(calls helper) / $(keys helper) | |

machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load generator and servers share the cores; load average at the start: $LOAD_AT_START.
wrk errors: ours: $(errs ours) helper: $(errs helper)
REPORT
