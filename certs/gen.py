#!/usr/bin/env python3
"""Regenerate the test PKI in this directory.

Usage: python3 certs/gen.py   (from anywhere; files are written next to this script)

The layout (names, subjects, SANs, extensions, validity) is fixed so that tests can rely on it;
only the keys and serial numbers change from run to run. Tests, the `dev` doubles
(src/dev/pki.rs compiles several of these files into the binary) and the SigV4-X509 vectors
depend on these files.

AFTER RUNNING THIS, re-run `python3 tests/vectors/make_sigv4x509_vectors.py`: the known-answer
vectors embed the RSA leaf, its serial and signatures made with its key, so new keys make the
committed vectors stale.

Requires: python3 and the `cryptography` package (tested with 48).
"""

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OUT = Path(__file__).resolve().parent

TRUST_DOMAIN = "spiffe://example.org"
ORDERS_ID = "spiffe://example.org/service/orders"
REVIEWS_ID = "spiffe://example.org/service/reviews"


def utc(year, month=1, day=1):
    return datetime.datetime(year, month, day, tzinfo=datetime.timezone.utc)


# Good certificates are valid for twenty years from a fixed date, so tests never start failing
# because the calendar moved on, and the times in the vectors (2026-11-24) fall inside.
GOOD = (utc(2026), utc(2046))


# --- keys -----------------------------------------------------------------------------------

def p256():
    return ec.generate_private_key(ec.SECP256R1())


def p384():
    return ec.generate_private_key(ec.SECP384R1())


def p521():
    return ec.generate_private_key(ec.SECP521R1())


def rsa_key(bits):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


# --- certificates ---------------------------------------------------------------------------

def serial():
    # SPIRE uses 128-bit random serials. Forcing the top bit gives a 39-digit decimal serial
    # (the Credential= field of SigV4-X509) and a DER INTEGER that needs a leading 0x00 byte,
    # which catches serial-to-decimal code that forgets about sign bytes.
    return int.from_bytes(os.urandom(16), "big") | (1 << 127)


def sig_hash(issuer_key):
    # ECDSA-SHA256 for EC issuers, SHA256-RSA for RSA issuers (the profile asks for SHA-256
    # everywhere, even under a P-384 key).
    return hashes.SHA256()


def name(*parts):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def ca_cert(subject, key, issuer_name, issuer_key, path_length, validity, uri=None):
    """A CA certificate. issuer_key is key itself for a self-signed root."""
    issuer_pub = issuer_key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False
        )
    )
    if uri is not None:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    return b.sign(issuer_key, sig_hash(issuer_key))


def key_usage(digital_signature=False, key_encipherment=False, key_agreement=False,
              key_cert_sign=False, crl_sign=False):
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def leaf_key_usage(key):
    # What SPIRE puts in X.509-SVIDs: EC keys may sign or agree, RSA keys sign or encipher.
    # Ed25519 can only sign.
    if isinstance(key, rsa.RSAPrivateKey):
        return key_usage(digital_signature=True, key_encipherment=True)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key_usage(digital_signature=True, key_encipherment=True, key_agreement=True)
    return key_usage(digital_signature=True)


def leaf_cert(cn, key, issuer, sans, validity=GOOD, ca=False, eku=None, org="SPIRE"):
    """A leaf certificate shaped like a SPIRE X.509-SVID (unless told otherwise).

    issuer is (certificate, key). sans is a list of x509.GeneralName.
    ca=True builds the deliberately wrong "CA certificate used as an SVID" case.
    """
    issuer_cert, issuer_key = issuer
    if eku is None:
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    if ca:
        # digitalSignature stays set so that the only defect is CA:TRUE (+ keyCertSign).
        ku = key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True)
    else:
        ku = leaf_key_usage(key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name((NameOID.ORGANIZATION_NAME, org), (NameOID.COMMON_NAME, cn)))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(ku, critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return b.sign(issuer_key, sig_hash(issuer_key))


def uri(u):
    return x509.UniformResourceIdentifier(u)


# --- output ---------------------------------------------------------------------------------

def pem_cert(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def pem_pkcs8(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write(filename, data):
    (OUT / filename).write_bytes(data)
    print(f"wrote certs/{filename}")


def write_pair(stem, cert, key):
    write(f"{stem}.pem", pem_cert(cert))
    write(f"{stem}.key", pem_pkcs8(key))


# --- the PKI --------------------------------------------------------------------------------

def main():
    # Trust domain root and intermediate, shaped like SPIRE's: URI SAN of the trust domain.
    root_key = p256()
    root_name = name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "SPIFFE"),
                     (NameOID.COMMON_NAME, "example.org test root CA"))
    root = ca_cert(root_name, root_key, root_name, root_key, None, GOOD, uri=TRUST_DOMAIN)
    write_pair("root-ca", root, root_key)

    int_key = p256()
    int_name = name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "SPIFFE"),
                    (NameOID.COMMON_NAME, "example.org test intermediate CA"))
    inter = ca_cert(int_name, int_key, root_name, root_key, 0, GOOD, uri=TRUST_DOMAIN)
    write_pair("intermediate-ca", inter, int_key)

    by_int = (inter, int_key)
    by_root = (root, root_key)
    orders_san = [uri(ORDERS_ID)]

    # Good SVIDs for the orders service, one per supported key type, under the intermediate
    # (the usual SPIRE setup) and directly under the root (no-intermediates path).
    keys = {}
    for alg, gen in (("rsa2048", lambda: rsa_key(2048)), ("p256", p256), ("p384", p384)):
        k = gen()
        keys[alg] = k
        c = leaf_cert("orders", k, by_int, orders_san)
        write_pair(f"orders-{alg}", c, k)
        if alg == "p256":
            write("orders-p256-fullchain.pem", pem_cert(c, inter))
        kd = gen()
        write_pair(f"orders-{alg}-direct", leaf_cert("orders", kd, by_root, orders_san), kd)

    k = p256()
    write_pair("reviews-p256", leaf_cert("reviews", k, by_int, [uri(REVIEWS_ID)]), k)

    # The same keys in the other encodings operators have on disk.
    write("orders-rsa2048.pkcs1.key", keys["rsa2048"].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "RSA PRIVATE KEY" (PKCS#1)
        serialization.NoEncryption(),
    ))
    write("orders-p256.sec1.key", keys["p256"].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "EC PRIVATE KEY" (SEC1, named curve)
        serialization.NoEncryption(),
    ))
    # BestAvailableEncryption with PKCS8 yields PBES2 (PBKDF2-HMAC-SHA256 + AES-256-CBC), the
    # same as `openssl pkcs8 -topk8` today, so it is the encrypted form people actually have.
    write("orders-p256.encrypted.key", keys["p256"].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"test"),
    ))

    # Bad inputs: each is a well-formed SVID except for one defect.
    k = p256()
    write_pair("bad-expired", leaf_cert("orders", k, by_int, orders_san,
                                        validity=(utc(2019), utc(2020))), k)
    k = p256()
    write_pair("bad-not-yet-valid", leaf_cert("orders", k, by_int, orders_san,
                                              validity=(utc(2099), utc(2100))), k)
    k = p256()
    write_pair("bad-ca-leaf", leaf_cert("orders", k, by_int, orders_san, ca=True), k)
    k = p256()
    write_pair("bad-no-uri-san", leaf_cert("orders", k, by_int,
                                           [x509.DNSName("orders.example.org")]), k)
    write("bad-mismatched.key", pem_pkcs8(p256()))
    for stem, gen in (("bad-rsa1024", lambda: rsa_key(1024)),
                      ("bad-ed25519", ed25519.Ed25519PrivateKey.generate),
                      ("bad-p521", p521)):
        k = gen()
        write_pair(stem, leaf_cert("orders", k, by_int, orders_san), k)

    # A second root claiming the same trust domain: its SVIDs look right but must not verify.
    ur_key = p256()
    ur_name = name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Untrusted"),
                   (NameOID.COMMON_NAME, "untrusted test root CA"))
    ur = ca_cert(ur_name, ur_key, ur_name, ur_key, None, GOOD, uri=TRUST_DOMAIN)
    write_pair("untrusted-root-ca", ur, ur_key)
    k = p256()
    write_pair("untrusted-orders-p256", leaf_cert("orders", k, (ur, ur_key), orders_san), k)

    # TLS for the local HTTPS Roles Anywhere double; unrelated to the SPIFFE PKI on purpose.
    tls_ca_key = p256()
    tls_ca_name = name((NameOID.COMMON_NAME, "spiffe-aws-agent dev TLS CA"),)
    tls_ca = ca_cert(tls_ca_name, tls_ca_key, tls_ca_name, tls_ca_key, 0, GOOD)
    write_pair("tls-ca", tls_ca, tls_ca_key)
    k = p256()
    tls_server = (
        x509.CertificateBuilder()
        .subject_name(name((NameOID.COMMON_NAME, "localhost"),))
        .issuer_name(tls_ca.subject)
        .public_key(k.public_key())
        .serial_number(serial())
        .not_valid_before(GOOD[0])
        .not_valid_after(GOOD[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            tls_ca_key.public_key()), critical=False)
        .sign(tls_ca_key, hashes.SHA256())
    )
    write_pair("tls-server", tls_server, k)

    print("done; now re-run: python3 tests/vectors/make_sigv4x509_vectors.py")


if __name__ == "__main__":
    main()
