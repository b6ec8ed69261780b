#!/usr/bin/env bash
# Builds the real peers the tests and benchmarks run against, from the Go module proxy:
#   spire-server, spire-agent   github.com/spiffe/spire v1.13.3            (tests/peers/spire)
#   aws_signing_helper          github.com/aws/rolesanywhere-credential-helper v1.4.0
#                                                                          (tests/peers/signing-helper)
#   helm                        helm.sh/helm/v4 v4.3.2                     (tests/peers/helm)
# Each peer is a `tool` of its own Go module (its own go.mod/go.sum, so one peer's dependency
# versions never move the other's). The binaries go to target/peers/bin (or
# $SPIFFE_AWS_AGENT_PEERS_DIR/bin); a peer is skipped when it was built by the same Go from the
# same module files with the same command line (a stamp per peer in bin/.built-PEER). Needs Go: 1.21+ fetches the toolchain the go.mod
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
HELM_VERSION=4.3.2

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

mkdir -p "$BIN"
rm -f "$BIN/.built-with"   # the single stamp of earlier versions of this script
# build_peer PEER "BINARIES" GO-BUILD-ARGS...: `go build -trimpath ARGS` in tests/peers/PEER,
# skipped when BINARIES exist and were built by this Go from these module files with these
# arguments (the bin directory's own path left out, so a copied target/peers stays valid).
build_peer() {
    local peer="$1" bins="$2" b ok=1 want start
    shift 2
    local stamp="$BIN/.built-$peer"
    want="$(go env GOVERSION) $( { cat "tests/peers/$peer/go.mod" "tests/peers/$peer/go.sum"; echo "${*//$BIN/BIN}"; } | sha256sum | cut -c1-16)"
    for b in $bins; do [ -x "$BIN/$b" ] || ok=0; done
    if [ "$ok" = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    rm -f "$stamp"
    start=$(date +%s)
    echo "== build-peers: $bins (tests/peers/$peer)"
    (cd "tests/peers/$peer" && go build -trimpath "$@")
    echo "$want" >"$stamp"
    echo "== build-peers: $bins built in $(($(date +%s) - start)) s -> $BIN"
}

build_peer spire "spire-server spire-agent" \
    -ldflags "-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=$SPIRE_VERSION" -o "$BIN/" \
    github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
build_peer signing-helper aws_signing_helper \
    -ldflags "-X github.com/aws/rolesanywhere-credential-helper/cmd.Version=$HELPER_VERSION" \
    -o "$BIN/aws_signing_helper" github.com/aws/rolesanywhere-credential-helper
# Helm lints and renders deploy/helm (tests/deploy.rs); no cgo needed.
CGO_ENABLED=0 build_peer helm helm \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" \
    -o "$BIN/helm" helm.sh/helm/v4/cmd/helm
