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
if ! command -v python3 >/dev/null; then
    echo "scripts/test.sh: installing python3 from Debian" >&2
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi

# The openssl CLI makes the PKCS#12 files of tests/compat_signing_helper.rs (Debian installs it
# with ca-certificates; a minimal image may lack it).
if ! command -v openssl >/dev/null; then
    echo "scripts/test.sh: installing openssl from Debian" >&2
    apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

# The venv lives in .venv (git-ignored); tests find it there (tests/common/mod.rs).
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/aws ] \
    || ! .venv/bin/python -c 'import boto3, cryptography' 2>/dev/null; then
    echo "== setting up .venv (boto3, awscli, cryptography)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi

# Real SPIRE (server + agent) and aws_signing_helper for tests/real_spire*.rs and
# tests/peer_signing_helper.rs, in target/peers/bin (skipped when up to date).
echo "== building the real peers (scripts/build-peers.sh)"
scripts/build-peers.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
