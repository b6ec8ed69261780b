#!/usr/bin/env python3
"""Independent verifier for AWS4-X509-ECDSA-SHA256 signatures.

Usage: verify_ecdsa.py CERT_PEM STRING_TO_SIGN_FILE SIGNATURE_HEX

Exits 0 iff SIGNATURE_HEX (an ASN.1 DER ECDSA-Sig-Value, hex) is a valid ECDSA signature over
SHA-256 of the file's bytes under the public key of the certificate in CERT_PEM (the first one,
if the file holds a chain). Otherwise prints why on stderr and exits 1.

Why it exists: ECDSA signatures are randomized, so the Rust signer cannot be checked against
fixed expected bytes as the RSA vectors are. Rust tests sign, then ask this script, which shares
no code with the project, whether the signature holds. SigV4-X509 always uses SHA-256, also for
P-384 keys, so the hash is fixed here rather than chosen by curve.
"""

import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ACCEPTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}


def fail(msg):
    print(f"verify_ecdsa: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 4:
        fail("usage: verify_ecdsa.py CERT_PEM STRING_TO_SIGN_FILE SIGNATURE_HEX")
    cert_path, message_path, signature_hex = argv[1:]

    try:
        cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    except (OSError, ValueError) as e:
        fail(f"cannot load certificate {cert_path}: {e}")
    try:
        message = open(message_path, "rb").read()
    except OSError as e:
        fail(f"cannot read {message_path}: {e}")
    try:
        # Lowercase hex is what SigV4 puts on the wire; anything else is a signer bug to report,
        # not something to normalize away.
        if signature_hex != signature_hex.lower():
            fail("signature hex is not lowercase")
        signature = bytes.fromhex(signature_hex)
    except ValueError as e:
        fail(f"signature is not hex: {e}")

    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        fail(f"certificate key is not EC but {type(key).__name__}")
    if key.curve.name not in ACCEPTED_CURVES:
        fail(f"certificate curve {key.curve.name} is neither P-256 nor P-384")

    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        # Also what a raw r||s (non-DER) signature ends up as.
        fail(f"signature does not verify ({ACCEPTED_CURVES[key.curve.name]}, SHA-256, "
             f"{len(signature)} signature bytes, {len(message)} message bytes)")
    sys.exit(0)


if __name__ == "__main__":
    main(sys.argv)
