#!/usr/bin/env bash
# Measures `credential-process --agent` in per-caller mode (not a test; numbers go to
# BENCHMARKS.md): the median wall time of a whole process, each call attested by the SPIRE
# Delegated Identity double (the agent's answer is cached after the first call). It runs
# `spiffe-aws-agent dev --per-caller`, whose agent serves uid 2101 as orders, so it needs root
# (hyperfine runs as uid 2101 through setpriv). Everything stays on this host.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${BENCH_RUNS:-1000}"
[ "$(id -u)" = 0 ] || { echo "run as root: the callers run under uid 2101" >&2; exit 1; }
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }

if [ -n "${BENCH_BIN:-}" ]; then
    BIN="$BENCH_BIN"
else
    cargo build --release --quiet --features dev
    BIN="$PWD/target/release/spiffe-aws-agent"
fi
DIR="$(mktemp -d)"
OUT="$(mktemp -d)"
chmod 755 "$DIR"
chmod 777 "$OUT"
cleanup() { kill "${DEV_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR" "$OUT"; }
trap cleanup EXIT

. scripts/lib/dev-stack.sh
RUST_LOG=warn start_dev "$BIN" "$DIR" --per-caller
grep -q "orders (uid 2101) got its own credentials" "$DIR/dev.out" || { cat "$DIR/dev.out" "$DIR/dev.err"; echo "dev did not start" >&2; exit 1; }

AS_ORDERS=(setpriv --reuid=2101 --regid=2101 --clear-groups)
"${AS_ORDERS[@]}" "$BIN" credential-process --agent "$DIR/agent.sock" >/dev/null

echo "== credential-process --agent (per-caller mode), $RUNS runs, as uid 2101"
for ROLE_ARGS in "" "--role orders"; do
    "${AS_ORDERS[@]}" hyperfine -N --warmup 50 --runs "$RUNS" --export-json "$OUT/cp.json" \
        "$BIN credential-process --agent $DIR/agent.sock $ROLE_ARGS" >/dev/null
    python3 - "$OUT/cp.json" "${ROLE_ARGS:-(no --role)}" <<'PY'
import json, statistics, sys
t = sorted(json.load(open(sys.argv[1]))["results"][0]["times"])
print(f"{sys.argv[2]:>14}: median {statistics.median(t)*1000:.3f} ms, p90 {t[int(len(t)*0.9)]*1000:.3f} ms, min {t[0]*1000:.3f} ms")
PY
done
