# Sourced by the benchmark and soak scripts: starts `spiffe-aws-agent dev` (the doubles of
# SPIRE, Roles Anywhere and the AWS services) in a directory and learns its endpoints, so
# each script measures its own agent against the same stack. Reading dev's output lives here
# only.

# The dev stack's ARNs (src/dev/rolesanywhere.rs).
DEV_TRUST_ANCHOR_ARN=arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/8a9f3d2e-0000-4000-8000-000000000001
DEV_PROFILE_ARN=arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002
DEV_ROLE_ARN_ORDERS=arn:aws:iam::123456789012:role/orders

# start_dev BIN DIR [dev flags...]
# Starts dev in the background with its output in DIR/dev.out and DIR/dev.err; sets DEV_PID,
# RA_ENDPOINT (https://localhost:PORT) and STS_ENDPOINT (http://127.0.0.1:PORT). Exits with
# dev's output when it does not come up within 20 s.
start_dev() {
    local bin="$1" dir="$2"
    shift 2
    "$bin" dev --dir "$dir" "$@" >"$dir/dev.out" 2>"$dir/dev.err" &
    DEV_PID=$!
    for _ in $(seq 200); do
        grep -q "Ctrl-C stops" "$dir/dev.out" 2>/dev/null && break
        kill -0 "$DEV_PID" 2>/dev/null || break
        sleep 0.1
    done
    RA_ENDPOINT="$(grep -o 'https://localhost:[0-9]*' "$dir/dev.out" | head -1)"
    STS_ENDPOINT="$(sed -n 's/^ *AWS services double *\(http:\/\/[0-9.:]*\).*/\1/p' "$dir/dev.out" | head -1)"
    if ! grep -q "Ctrl-C stops" "$dir/dev.out" 2>/dev/null || [ -z "$RA_ENDPOINT" ]; then
        cat "$dir/dev.out" "$dir/dev.err" >&2
        echo "dev did not start" >&2
        exit 1
    fi
}

# orders_agent_toml DIR: the head of a `run --config` file for the dev stack in DIR, with
# the orders role; the caller appends its listeners.
orders_agent_toml() {
    local dir="$1"
    cat <<TOML
workload_api_socket = "unix://$dir/spire-agent.sock"
endpoint = "$RA_ENDPOINT"
ca_bundle = "$dir/roles-anywhere-ca.pem"
[[role]]
name = "orders"
trust_anchor_arn = "$DEV_TRUST_ANCHOR_ARN"
profile_arn = "$DEV_PROFILE_ARN"
role_arn = "$DEV_ROLE_ARN_ORDERS"
spiffe_id = "spiffe://example.org/service/orders"
TOML
}

# free_port: a TCP port on 127.0.0.1 nothing listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
