#!/usr/bin/env python3
"""Write tests/vectors/sigv4x509_rsa.json: SigV4-X509 known-answer vectors for CreateSession.

Why this exists: the Rust signer must be checked against something that does not share its code
or its author's reading of the spec in one place. This script implements the Roles Anywhere
SigV4-X509 signing (see DESIGN.md, "SigV4-X509") from first principles with hashlib, base64 and
the `cryptography` package, and never imports or runs anything from this project. RSA PKCS#1 v1.5
is deterministic, so every field, including the signature, is a fixed expected value, and the
signature is cross-checked against the `openssl` CLI.

Usage: python3 tests/vectors/make_sigv4x509_vectors.py   (from anywhere)

Re-run it after `certs/gen.py`: the vectors embed the RSA leaf, its serial and its key's
signatures. The output is deterministic for a given certs/ directory.
"""

import base64
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "vectors" / "sigv4x509_rsa.json"

# Inputs shared by every vector. Paths are relative to the repository root, as they appear
# in the JSON, so Rust tests can load the same files.
CERT = "certs/orders-rsa2048.pem"
KEY = "certs/orders-rsa2048.key"
CHAIN = ["certs/intermediate-ca.pem"]
TIME = "2026-11-24T12:34:56Z"
REGION = "us-east-1"
SERVICE = "rolesanywhere"
METHOD = "POST"
HOST = f"rolesanywhere.{REGION}.amazonaws.com"
PATH = "/sessions"
CONTENT_TYPE = "application/json"
ALGORITHM = "AWS4-X509-RSA-SHA256"

TRUST_ANCHOR_ARN = ("arn:aws:rolesanywhere:us-east-1:123456789012:"
                    "trust-anchor/8a9f3d2e-0000-4000-8000-000000000001")
PROFILE_ARN = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/8a9f3d2e-0000-4000-8000-000000000002"
ROLE_ARN = "arn:aws:iam::123456789012:role/orders"

VECTORS = [
    {
        "name": "json-body",
        "query": [],
        # Written out literally rather than via json.dumps: the body is signed byte for byte,
        # so the vector must pin the exact bytes.
        "body": '{"durationSeconds":3600,'
                f'"profileArn":"{PROFILE_ARN}",'
                f'"roleArn":"{ROLE_ARN}",'
                f'"trustAnchorArn":"{TRUST_ANCHOR_ARN}"}}',
    },
    {
        "name": "query-arns",
        # Deliberately given in an order that is already sorted and with values full of
        # ':' and '/', so the vector pins the encoding rather than the ordering alone.
        "query": [["profileArn", PROFILE_ARN], ["roleArn", ROLE_ARN],
                  ["trustAnchorArn", TRUST_ANCHOR_ARN]],
        "body": '{"durationSeconds":900}',
    },
]


def aws_uri_encode(s):
    """SigV4 URI encoding: keep RFC 3986 unreserved characters, %XX (uppercase) the rest.

    Done by hand on UTF-8 bytes rather than with urllib.parse.quote, whose 'safe' defaults
    ('/' kept) differ from what SigV4 wants for query components.
    """
    unreserved = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
    out = []
    for byte in s.encode("utf-8"):
        out.append(chr(byte) if byte in unreserved else f"%{byte:02X}")
    return "".join(out)


def canonical_query(pairs):
    encoded = [(aws_uri_encode(k), aws_uri_encode(v)) for k, v in pairs]
    encoded.sort()  # by encoded key, then encoded value
    return "&".join(f"{k}={v}" for k, v in encoded)


def collapse_spaces(v):
    # SigV4 canonical header values: trimmed, inner runs of spaces collapsed to one.
    v = v.strip()
    while "  " in v:
        v = v.replace("  ", " ")
    return v


def load_pem_cert(rel):
    return x509.load_pem_x509_certificate((REPO / rel).read_bytes())


def b64_der(cert):
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def openssl(*args, stdin=None):
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


def openssl_serial_decimal(rel):
    # Second opinion on the serial: openssl prints it in hex ("serial=00F9..."), which we turn
    # into decimal ourselves, so a sign-byte mishandling in one path would show.
    line = openssl("x509", "-in", str(REPO / rel), "-noout", "-serial").decode().strip()
    assert line.startswith("serial="), line
    return str(int(line[len("serial="):], 16))


def openssl_der_b64(rel):
    der = openssl("x509", "-in", str(REPO / rel), "-outform", "DER")
    return base64.b64encode(der).decode("ascii")


def openssl_sign(string_to_sign):
    with tempfile.NamedTemporaryFile() as f:
        f.write(string_to_sign.encode("utf-8"))
        f.flush()
        return openssl("dgst", "-sha256", "-sign", str(REPO / KEY), f.name)


def make_vector(spec, leaf, chain, key):
    # "2026-11-24T12:34:56Z" -> "20261124T123456Z", date stamp "20261124".
    amz_date = TIME.replace("-", "").replace(":", "")
    date_stamp = amz_date[:8]
    scope = f"{date_stamp}/{REGION}/{SERVICE}/aws4_request"

    x509_header = b64_der(leaf)
    chain_header = ",".join(b64_der(c) for c in chain)
    assert x509_header == openssl_der_b64(CERT)
    assert chain_header == ",".join(openssl_der_b64(c) for c in CHAIN)

    headers = {
        "Content-Type": CONTENT_TYPE,
        "Host": HOST,
        "X-Amz-Date": amz_date,
        "X-Amz-X509": x509_header,
        "X-Amz-X509-Chain": chain_header,
    }
    canon = sorted((k.lower(), collapse_spaces(v)) for k, v in headers.items())
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in canon)
    signed_headers = ";".join(k for k, _ in canon)
    assert signed_headers == "content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain"

    body = spec["body"].encode("utf-8")
    canonical_request = "\n".join([
        METHOD,
        PATH,  # nothing in "/sessions" needs encoding
        canonical_query(spec["query"]),
        canonical_headers,  # ends in "\n", so a blank line follows, as in SigV4
        signed_headers,
        hashlib.sha256(body).hexdigest(),
    ])
    string_to_sign = "\n".join([
        ALGORITHM,
        amz_date,
        scope,
        hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
    ])

    signature = key.sign(string_to_sign.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    # Deterministic scheme, so an independent implementation must produce the same bytes.
    assert signature == openssl_sign(string_to_sign), "openssl disagrees with cryptography"
    leaf.public_key().verify(signature, string_to_sign.encode("utf-8"),
                             padding.PKCS1v15(), hashes.SHA256())

    serial_decimal = str(leaf.serial_number)
    assert serial_decimal == openssl_serial_decimal(CERT)

    authorization = (f"{ALGORITHM} Credential={serial_decimal}/{scope}, "
                     f"SignedHeaders={signed_headers}, Signature={signature.hex()}")

    return {
        "name": spec["name"],
        "method": METHOD,
        "host": HOST,
        "path": PATH,
        "query": spec["query"],
        "content_type": CONTENT_TYPE,
        "body": spec["body"],
        "time": TIME,
        "region": REGION,
        "certificate": CERT,
        "private_key": KEY,
        "chain": CHAIN,
        "serial_decimal": serial_decimal,
        "x_amz_date": amz_date,
        "x_amz_x509": x509_header,
        "x_amz_x509_chain": chain_header,
        "canonical_request": canonical_request,
        "string_to_sign": string_to_sign,
        "signature_hex": signature.hex(),
        "authorization": authorization,
    }


def main():
    leaf = load_pem_cert(CERT)
    chain = [load_pem_cert(c) for c in CHAIN]
    key = serialization.load_pem_private_key((REPO / KEY).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers(), \
        f"{KEY} does not match {CERT}"

    # Sanity of the hand-written encoder on the characters that matter here.
    assert aws_uri_encode("a:b/c d~-_.") == "a%3Ab%2Fc%20d~-_."

    doc = {
        "generated_by": (
            "tests/vectors/make_sigv4x509_vectors.py: an independent Python implementation "
            f"(hashlib, cryptography {cryptography.__version__}), signature cross-checked with "
            "the openssl CLI; not derived from this project's Rust code"
        ),
        "vectors": [make_vector(v, leaf, chain, key) for v in VECTORS],
    }
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
