#!/usr/bin/env bash
# Runs the whole test suite from a fresh machine: installs what the tests need (a Python venv
# with boto3, the AWS CLI and cryptography from PyPI; the real SPIRE and aws_signing_helper,
# built from the Go module proxy by scripts/build-peers.sh), checks formatting and lints, then
# runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "scripts/test.sh: cargo is not installed (https://rustup.rs)" >&2
    exit 1
fi
# Debian packages the tests use, installed in one step when any is missing:
#   python3, python3-venv  the venv below;
#   openssl                makes the PKCS#12 files of tests/compat_signing_helper.rs;
#   softhsm2, opensc       a PKCS#11 token in files and pkcs11-tool, for tests/pkcs11.rs;
#   libtss2-dev, pkg-config, swtpm, tpm2-tools, bsdutils
#                          the `tpm` feature's TPM2 Software Stack, the swtpm simulator and
#                          tpm2-tools for tests/tpm.rs (`script` lends aws_signing_helper a tty);
#   systemd, umoci, binutils
#                          tests/deploy.rs: systemd-analyze and systemd-sysusers (PID 1 need not
#                          be systemd), umoci (unpacks the image), readelf.
missing=""
need() { missing="$missing $*"; }
command -v python3 >/dev/null || need python3 python3-venv
command -v openssl >/dev/null || need openssl
{ [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; } || need softhsm2
command -v pkcs11-tool >/dev/null || need opensc
pkg-config --exists tss2-esys 2>/dev/null || need libtss2-dev pkg-config
command -v swtpm >/dev/null || need swtpm
command -v tpm2_encodeobject >/dev/null || need tpm2-tools
command -v script >/dev/null || need bsdutils
command -v systemd-analyze >/dev/null || need systemd
command -v umoci >/dev/null || need umoci
command -v readelf >/dev/null || need binutils
if [ -n "$missing" ]; then
    echo "== installing$missing from Debian"
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null
fi

# The venv lives in .venv (git-ignored); tests find it there (tests/common/mod.rs).
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/aws ] || [ ! -x .venv/bin/kubernetes-validate ] \
    || ! .venv/bin/python -c 'import boto3, cryptography, prometheus_client' 2>/dev/null; then
    echo "== setting up .venv (boto3, awscli, cryptography, prometheus_client, kubernetes-validate)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi

# Real SPIRE (server + agent) and aws_signing_helper for tests/real_spire*.rs and
# tests/peer_signing_helper.rs, and helm for tests/deploy.rs, in target/peers/bin (each
# skipped when up to date).
echo "== building the real peers (scripts/build-peers.sh)"
scripts/build-peers.sh

# The container image, built in the dev profile for tests/deploy.rs: the same packaging as
# the release build in a fraction of the time.
echo "== building the container image (scripts/build-image.sh --profile dev)"
scripts/build-image.sh --profile dev

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked --no-fail-fast
# TPM 2.0 keys are behind the `tpm` feature (it links libtss2): lint it and run its tests
# against swtpm.
echo "== cargo clippy/test --features tpm"
cargo clippy --all-targets --locked --features tpm -- -D warnings
cargo test --locked --features tpm --test tpm
cargo test --locked --features tpm --lib tpm
