#!/usr/bin/env bash
# Builds the real peers the tests and benchmarks run against, from the Go module proxy:
#   spire-server, spire-agent   github.com/spiffe/spire v1.13.3            (tests/peers/spire)
#   aws_signing_helper          github.com/aws/rolesanywhere-credential-helper v1.4.0
#                                                                          (tests/peers/signing-helper)
# Each peer is a `tool` of its own Go module (its own go.mod/go.sum, so one peer's dependency
# versions never move the other's). The binaries go to target/peers/bin (or
# $SPIFFE_AWS_AGENT_PEERS_DIR/bin); the script does nothing when they were built by the same
# Go from the same module files and script. Needs Go: 1.21+ fetches the toolchain the go.mod
# files ask for by itself (GOTOOLCHAIN=auto); without Go (or an older one) Go 1.25.3 is fetched
# from the Go module proxy into target/peers. And a C compiler (cgo: SPIRE's sqlite3, the
# helper's PKCS#11), installed from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PEERS_DIR="${SPIFFE_AWS_AGENT_PEERS_DIR:-$ROOT/target/peers}"
BIN="$PEERS_DIR/bin"
GO_TOOLCHAIN_VERSION=1.25.3
HELPER_VERSION=1.4.0
SPIRE_VERSION=1.13.3

go_ok() { # go on PATH, version >= 1.21 (older ones cannot switch toolchains)
    command -v go >/dev/null || return 1
    local v; v="$(go env GOVERSION 2>/dev/null)" || return 1
    v="${v#go}"
    [ "$(printf '%s\n' "1.21" "$v" | sort -V | head -1)" = "1.21" ]
}
if ! go_ok; then
    # The Go toolchain is itself a module on the Go module proxy (golang.org/toolchain).
    GODIR="$PEERS_DIR/go$GO_TOOLCHAIN_VERSION"
    if [ ! -x "$GODIR/bin/go" ]; then
        echo "== build-peers: fetching Go $GO_TOOLCHAIN_VERSION from the Go module proxy"
        command -v curl >/dev/null && command -v unzip >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq curl unzip >/dev/null; }
        mkdir -p "$PEERS_DIR/tmp"
        zip="$PEERS_DIR/tmp/go.zip"
        curl -fsSL -o "$zip" \
            "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_TOOLCHAIN_VERSION.linux-$(dpkg --print-architecture 2>/dev/null || echo amd64).zip"
        rm -rf "$PEERS_DIR/tmp/unzip" && unzip -q "$zip" -d "$PEERS_DIR/tmp/unzip"
        rm -rf "$GODIR" && mv "$PEERS_DIR"/tmp/unzip/golang.org/toolchain@*/ "$GODIR"
        chmod +x "$GODIR"/bin/* "$GODIR"/pkg/tool/*/*
        rm -rf "$PEERS_DIR/tmp"
    fi
    export PATH="$GODIR/bin:$PATH"
fi
if ! command -v gcc >/dev/null; then
    echo "== build-peers: installing gcc (cgo) from Debian"
    apt-get update -qq && apt-get install -y -qq gcc libc6-dev >/dev/null
fi
export CGO_ENABLED=1 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS="${GOFLAGS:--buildvcs=false}"

# Up to date when the binaries were built by this Go from these module files and this script.
STAMP="$BIN/.built-with"
want="$(go env GOVERSION) $(cat "$0" tests/peers/*/go.mod tests/peers/*/go.sum | sha256sum | cut -c1-16)"
if [ -x "$BIN/spire-server" ] && [ -x "$BIN/spire-agent" ] && [ -x "$BIN/aws_signing_helper" ] \
    && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    exit 0
fi

mkdir -p "$BIN"
rm -f "$STAMP"
start=$(date +%s)
echo "== build-peers: spire-server, spire-agent (spiffe/spire v$SPIRE_VERSION)"
(cd tests/peers/spire && go build -trimpath \
    -ldflags "-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=$SPIRE_VERSION" -o "$BIN/" \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent)
echo "== build-peers: aws_signing_helper (aws/rolesanywhere-credential-helper v$HELPER_VERSION)"
(cd tests/peers/signing-helper && go build -trimpath \
    -ldflags "-X github.com/aws/rolesanywhere-credential-helper/cmd.Version=$HELPER_VERSION" \
    -o "$BIN/aws_signing_helper" github.com/aws/rolesanywhere-credential-helper)
echo "$want" >"$STAMP"
echo "== build-peers: done in $(($(date +%s) - start)) s -> $BIN"
