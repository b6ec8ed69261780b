#!/usr/bin/env bash
# Builds the container image without a container engine or a registry: a statically linked
# agent (glibc, `-C target-feature=+crt-static`, the host's target) and an OCI image layout
# written with tar, gzip and sha256sum, FROM scratch:
#   /usr/local/bin/spiffe-aws-agent            the agent (no `dev` feature), entrypoint
#   /etc/ssl/certs/ca-certificates.crt         Debian's CA bundle (the TLS roots for AWS)
#   /etc/passwd, /etc/group, /etc/nsswitch.conf  user spiffe-aws-agent (10001), hosts: files dns
# The image runs as 10001:10001. The Dockerfile builds the same image with this script.
#
# usage: scripts/build-image.sh [--profile release|dev] [--out DIR] [--rootfs DIR]
#   --profile  cargo profile (default release; CI uses dev: same image, built in a fraction of
#              the time, for the packaging checks in tests/deploy.rs)
#   --out      where the OCI layout goes (default target/image; tag = Cargo.toml's version)
#   --rootfs   only assemble the root file system in DIR (what the Dockerfile copies)
# Load the layout with e.g. `skopeo copy oci:target/image:0.1.0 docker://REGISTRY/spiffe-aws-agent:0.1.0`
# or `podman pull oci:target/image:0.1.0`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

profile=release out="$ROOT/target/image" rootfs_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --rootfs) rootfs_only="$2"; shift 2 ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$profile" in
    release) profile_dir=release ;;
    dev) profile_dir=debug ;;
    *) echo "build-image.sh: --profile is release or dev" >&2; exit 2 ;;
esac

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
triple="$(rustc -vV | sed -n 's/^host: //p')"
case "$triple" in
    x86_64-*) arch=amd64 ;;
    aarch64-*) arch=arm64 ;;
    *) echo "build-image.sh: no OCI architecture for $triple" >&2; exit 1 ;;
esac
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$ca_bundle" ]; then
    echo "== build-image: installing ca-certificates from Debian"
    apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null
fi

# A separate --target directory, so the static flags never touch target/debug's cache. No
# debug info and stripped symbols: the image carries the program, not its debugging aids.
start=$(date +%s)
profile_env="$(echo "$profile" | tr '[:lower:]' '[:upper:]')"
env "CARGO_TARGET_$(echo "$triple" | tr '[:lower:]-' '[:upper:]_')_RUSTFLAGS=-C target-feature=+crt-static" \
    "CARGO_PROFILE_${profile_env}_DEBUG=0" "CARGO_PROFILE_${profile_env}_STRIP=symbols" \
    cargo build --quiet --locked --profile "$profile" --target "$triple" --bin spiffe-aws-agent
bin="$ROOT/target/$triple/$profile_dir/spiffe-aws-agent"
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "build-image.sh: $bin is dynamically linked" >&2
    exit 1
fi

# The root file system, owned by root, every time stamp 0: the same sources give the same layer.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fs="${rootfs_only:-$work/rootfs}"
if [ -n "$rootfs_only" ] && [ -e "$fs" ] && [ -n "$(ls -A "$fs")" ]; then
    echo "build-image.sh: --rootfs $fs is not empty" >&2
    exit 2
fi
mkdir -p "$fs/usr/local/bin" "$fs/etc/ssl/certs" "$fs/tmp"
chmod 1777 "$fs/tmp"
install -m 0755 "$bin" "$fs/usr/local/bin/spiffe-aws-agent"
install -m 0644 "$ca_bundle" "$fs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nspiffe-aws-agent:x:10001:10001:spiffe-aws-agent:/nonexistent:/sbin/nologin\n' >"$fs/etc/passwd"
printf 'root:x:0:\nspiffe-aws-agent:x:10001:\n' >"$fs/etc/group"
# The static glibc resolves names with its built-in files and dns services (glibc >= 2.34);
# /etc/hosts and /etc/resolv.conf come from the container runtime.
printf 'hosts: files dns\n' >"$fs/etc/nsswitch.conf"
chmod 0644 "$fs/etc/passwd" "$fs/etc/group" "$fs/etc/nsswitch.conf"
if [ -n "$rootfs_only" ]; then
    echo "== build-image: root file system in $fs ($(($(date +%s) - start)) s)"
    exit 0
fi

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"
blob() { # blob FILE: moves FILE into the layout under its digest, prints the digest
    local d; d="$(sha "$1")"; mv "$1" "$blobs/$d"; echo "$d"
}

(cd "$fs" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/files"
tar --create --file "$work/layer.tar" --directory "$fs" --no-recursion --verbatim-files-from \
    --files-from "$work/files" --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime
diff_id="$(sha "$work/layer.tar")"
gzip -n -6 "$work/layer.tar"
layer_size="$(size "$work/layer.tar.gz")"
layer="$(blob "$work/layer.tar.gz")"

labels="\"org.opencontainers.image.title\":\"spiffe-aws-agent\",\"org.opencontainers.image.version\":\"$version\",\"org.opencontainers.image.licenses\":\"Apache-2.0\""
printf '%s' "{\"architecture\":\"$arch\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",\
\"config\":{\"User\":\"10001:10001\",\"Entrypoint\":[\"/usr/local/bin/spiffe-aws-agent\"],\
\"Cmd\":[\"run\",\"--config\",\"/etc/spiffe-aws-agent/agent.toml\"],\
\"Env\":[\"PATH=/usr/local/bin\",\"RUST_LOG=info\"],\"WorkingDir\":\"/\",\"Labels\":{$labels}},\
\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]},\
\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"scripts/build-image.sh\"}]}" >"$work/config.json"
config_size="$(size "$work/config.json")"
config="$(blob "$work/config.json")"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config\",\"size\":$config_size},\
\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer\",\"size\":$layer_size}],\
\"annotations\":{$labels}}" >"$work/manifest.json"
manifest_size="$(size "$work/manifest.json")"
manifest="$(blob "$work/manifest.json")"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\
\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size,\
\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"},\
\"annotations\":{\"org.opencontainers.image.ref.name\":\"$version\"}}]}" >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

rm -rf "$out" && mkdir -p "$(dirname "$out")" && mv "$work/layout" "$out"
echo "== build-image: $out (tag $version, $profile, $((layer_size / 1024)) KiB layer, sha256:$manifest) in $(($(date +%s) - start)) s"
