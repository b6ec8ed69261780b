//! Tests of the Roles Anywhere double through its HTTPS interface.
//!
//! Requests are built byte by byte and signed by a small SigV4-X509 signer local to this file
//! (ring for RSA/P-256, the p384 crate for P-384 with SHA-256); it shares no code with the
//! double's verifier or with the agent's signer. Certificates come from a PKI generated per test
//! with rcgen, so expired, CA and otherwise bad leaves are easy to make.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::macros::format_description;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::FromDer;

use super::verify::{self, ChainError};
use super::*;

/// A 2048-bit RSA key for RSA leaves (ring cannot generate RSA keys), from the committed PKI.
fn rsa_2048_pkcs8_pem() -> String {
    std::fs::read_to_string(pki::certs_dir().join("orders-rsa2048.key")).expect("read RSA key")
}

const SPIFFE_ORDERS: &str = "spiffe://example.org/service/orders";

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
    pem: String,
}

impl Ca {
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - days(1);
    p.not_after = now + days(365);
    p
}

/// A CA with the given params, self-signed or issued by `parent`.
fn make_ca(params: CertificateParams, parent: Option<&Ca>) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
    let cert = match parent {
        Some(parent) => params.signed_by(&key, &parent.issuer()),
        None => params.self_signed(&key),
    }
    .expect("CA certificate");
    Ca {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        params,
        key,
    }
}

struct Pki {
    root: Ca,
    intermediate: Ca,
    untrusted_root: Ca,
}

fn pki() -> Pki {
    let root = make_ca(ca_params("Test Root CA"), None);
    let intermediate = make_ca(ca_params("Test Intermediate CA"), Some(&root));
    let untrusted_root = make_ca(ca_params("Untrusted Root CA"), None);
    Pki {
        root,
        intermediate,
        untrusted_root,
    }
}

#[derive(Clone, Copy, Debug)]
enum KeyKind {
    P256,
    P384,
    Rsa2048,
}

enum LeafKey {
    P256(Vec<u8>),
    P384(Vec<u8>),
    Rsa(Vec<u8>),
}

struct Leaf {
    der: Vec<u8>,
    chain: Vec<Vec<u8>>,
    key: LeafKey,
    serial_decimal: String,
    serial_hex: String,
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.subject_alt_names = vec![SanType::URI(
        SPIFFE_ORDERS.try_into().expect("URI SAN is IA5"),
    )];
    let mut serial = [0u8; 12];
    SystemRandom::new().fill(&mut serial).expect("rng");
    serial[0] = (serial[0] & 0x7f) | 0x10; // positive, no leading zero byte
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = OffsetDateTime::now_utc();
    p.not_before = now - days(1);
    p.not_after = now + days(30);
    p
}

/// A leaf of `kind` issued by `issuer`, presenting `chain` as its intermediates.
fn make_leaf_with(kind: KeyKind, issuer: &Ca, chain: &[&Ca], params: CertificateParams) -> Leaf {
    let (key_pair, key) = match kind {
        KeyKind::P256 => {
            let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
            let der = kp.serialize_der();
            (kp, LeafKey::P256(der))
        }
        KeyKind::P384 => {
            let kp = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("P-384 key");
            let der = kp.serialize_der();
            (kp, LeafKey::P384(der))
        }
        KeyKind::Rsa2048 => {
            let kp = KeyPair::from_pem(&rsa_2048_pkcs8_pem()).expect("RSA key");
            let der = kp.serialize_der();
            (kp, LeafKey::Rsa(der))
        }
    };
    let cert = params
        .signed_by(&key_pair, &issuer.issuer())
        .expect("leaf certificate");
    let der = cert.der().to_vec();
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(&der).expect("parse leaf");
    Leaf {
        serial_decimal: parsed.tbs_certificate.serial.to_str_radix(10),
        serial_hex: parsed.tbs_certificate.serial.to_str_radix(16),
        chain: chain.iter().map(|c| c.der.clone()).collect(),
        key,
        der,
    }
}

fn make_leaf(kind: KeyKind, issuer: &Ca, chain: &[&Ca]) -> Leaf {
    make_leaf_with(kind, issuer, chain, leaf_params("orders"))
}

// ---------------------------------------------------------------------------------------------
// An independent SigV4-X509 signer for test requests
// ---------------------------------------------------------------------------------------------

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn sign_bytes(key: &LeafKey, msg: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    match key {
        LeafKey::P256(der) => {
            let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                der,
                &rng,
            )
            .expect("P-256 key");
            kp.sign(&rng, msg).expect("sign").as_ref().to_vec()
        }
        LeafKey::P384(der) => {
            use p384::ecdsa::signature::hazmat::PrehashSigner;
            use p384::pkcs8::DecodePrivateKey;
            let sk = p384::ecdsa::SigningKey::from_pkcs8_der(der).expect("P-384 key");
            let digest = ring::digest::digest(&ring::digest::SHA256, msg);
            let sig: p384::ecdsa::Signature = sk.sign_prehash(digest.as_ref()).expect("sign");
            sig.to_der().as_bytes().to_vec()
        }
        LeafKey::Rsa(der) => {
            let kp = ring::signature::RsaKeyPair::from_pkcs8(der).expect("RSA key");
            let mut sig = vec![0u8; kp.public().modulus_len()];
            kp.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                .expect("sign");
            sig
        }
    }
}

fn default_alg(key: &LeafKey) -> &'static str {
    match key {
        LeafKey::Rsa(_) => "AWS4-X509-RSA-SHA256",
        LeafKey::P256(_) | LeafKey::P384(_) => "AWS4-X509-ECDSA-SHA256",
    }
}

/// AWS URI-encoding, written again here on purpose.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn amz_date(t: OffsetDateTime) -> String {
    t.format(format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .expect("format date")
}

/// A request as it goes on the wire.
struct TestRequest {
    method: String,
    path: String,
    /// Unencoded query pairs, sent in this order.
    query: Vec<(String, String)>,
    /// Header lines as sent (name as written, value as written).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl TestRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn raw_query(&self) -> String {
        self.query
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Knobs for deliberately wrong signatures.
struct Sign<'a> {
    leaf: &'a Leaf,
    alg: Option<&'a str>,
    serial: Option<&'a str>,
    scope_date: Option<&'a str>,
    region: &'a str,
    service: &'a str,
    /// Header names to sign; default: every header of the request.
    signed: Option<Vec<&'a str>>,
}

impl<'a> Sign<'a> {
    fn new(leaf: &'a Leaf) -> Self {
        Sign {
            leaf,
            alg: None,
            serial: None,
            scope_date: None,
            region: DEV_REGION,
            service: "rolesanywhere",
            signed: None,
        }
    }

    /// Adds `Authorization` to `req`.
    fn apply(&self, req: &mut TestRequest) {
        let date = req.header("x-amz-date").unwrap_or("").to_owned();
        let mut signed: Vec<String> = match &self.signed {
            Some(names) => names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            None => req
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .collect(),
        };
        signed.sort();
        signed.dedup();
        let mut canonical_headers = String::new();
        for name in &signed {
            let values: Vec<String> = req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        let mut query: Vec<(String, String)> =
            req.query.iter().map(|(k, v)| (enc(k), enc(v))).collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            req.method,
            req.path,
            canonical_query,
            canonical_headers,
            signed.join(";"),
            sha256_hex(&req.body)
        );
        let alg = self.alg.unwrap_or(default_alg(&self.leaf.key));
        let today = amz_date(OffsetDateTime::now_utc())[..8].to_owned();
        let scope = format!(
            "{}/{}/{}/aws4_request",
            self.scope_date.unwrap_or(
                // A missing or malformed X-Amz-Date still gets a plausible scope, so the
                // date check itself is what fails.
                date.get(..8)
                    .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                    .unwrap_or(&today)
            ),
            self.region,
            self.service
        );
        let sts = format!(
            "{alg}\n{date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let sig = sign_bytes(&self.leaf.key, sts.as_bytes());
        let serial = self.serial.unwrap_or(&self.leaf.serial_decimal);
        req.set_header(
            "Authorization",
            &format!(
                "{alg} Credential={serial}/{scope}, SignedHeaders={}, Signature={}",
                signed.join(";"),
                hex::encode(sig)
            ),
        );
    }
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn dev_body(duration: Option<u64>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "profileArn": DEV_PROFILE_ARN,
        "roleArn": DEV_ROLE_ARN_ORDERS,
        "trustAnchorArn": DEV_TRUST_ANCHOR_ARN,
    });
    if let (Some(d), Some(obj)) = (duration, body.as_object_mut()) {
        obj.insert("durationSeconds".to_owned(), d.into());
    }
    body
}

/// An unsigned CreateSession request for `leaf`, dated `at`.
fn create_session_at(
    double: &RolesAnywhereDouble,
    leaf: &Leaf,
    body: &serde_json::Value,
    at: OffsetDateTime,
) -> TestRequest {
    let mut headers = vec![
        (
            "Host".to_owned(),
            format!("localhost:{}", double.local_addr().port()),
        ),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Amz-Date".to_owned(), amz_date(at)),
        ("X-Amz-X509".to_owned(), b64(&leaf.der)),
    ];
    if !leaf.chain.is_empty() {
        let chain: Vec<String> = leaf.chain.iter().map(|d| b64(d)).collect();
        headers.push(("X-Amz-X509-Chain".to_owned(), chain.join(",")));
    }
    TestRequest {
        method: "POST".to_owned(),
        path: "/sessions".to_owned(),
        query: Vec::new(),
        headers,
        body: body.to_string().into_bytes(),
    }
}

fn create_session(
    double: &RolesAnywhereDouble,
    leaf: &Leaf,
    body: &serde_json::Value,
) -> TestRequest {
    create_session_at(double, leaf, body, OffsetDateTime::now_utc())
}

fn signed(double: &RolesAnywhereDouble, leaf: &Leaf, body: &serde_json::Value) -> TestRequest {
    let mut req = create_session(double, leaf, body);
    Sign::new(leaf).apply(&mut req);
    req
}

// ---------------------------------------------------------------------------------------------
// A raw HTTPS client: exact bytes on the wire
// ---------------------------------------------------------------------------------------------

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error_type(&self) -> Option<&str> {
        self.header("x-amzn-errortype")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }

    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[track_caller]
    fn assert_error(&self, status: u16, error_type: &str, message_part: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.error_type(), Some(error_type), "body: {}", self.body);
        let message = self.message();
        assert!(
            message.contains(message_part),
            "message {message:?} lacks {message_part:?}"
        );
    }
}

fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(RolesAnywhereDouble::ca_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Sends raw bytes over TLS and reads until the server closes.
async fn send_raw(double: &RolesAnywhereDouble, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(double.local_addr()).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_client_config());
    let server_name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector.connect(server_name, tcp).await?;
    tls.write_all(bytes).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out).await {
        Ok(_) => Ok(out),
        // A peer that closes without close_notify still delivered what it sent.
        Err(e) if !out.is_empty() => {
            let _ = e;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

fn parse_response(raw: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn wire_bytes(req: &TestRequest) -> Vec<u8> {
    let query = req.raw_query();
    let target = if query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{query}", req.path)
    };
    let mut out = format!("{} {target} HTTP/1.1\r\n", req.method);
    for (n, v) in &req.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&req.body);
    bytes
}

async fn send(double: &RolesAnywhereDouble, req: &TestRequest) -> Resp {
    let raw = send_raw(double, &wire_bytes(req)).await.expect("send");
    parse_response(&raw).expect("HTTP response")
}

async fn start(pki: &Pki) -> RolesAnywhereDouble {
    RolesAnywhereDouble::start(config(pki))
        .await
        .expect("start double")
}

fn config(pki: &Pki) -> RolesAnywhereDoubleConfig {
    RolesAnywhereDoubleConfig {
        trust_anchors: vec![TrustAnchor {
            arn: DEV_TRUST_ANCHOR_ARN.to_owned(),
            ca_certs_pem: pki.root.pem.clone(),
            enabled: true,
        }],
        ..RolesAnywhereDoubleConfig::default()
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Success paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p256_leaf_via_intermediate_gets_credentials() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.intermediate, &[&pki.intermediate]);
    let double = start(&pki).await;
    let before = SystemTime::now();
    let resp = send(&double, &signed(&double, &leaf, &dev_body(Some(1800)))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    assert_eq!(resp.error_type(), None);

    let body = resp.json();
    let set = &body["credentialSet"][0];
    let creds = &set["credentials"];
    let access_key = creds["accessKeyId"].as_str().expect("accessKeyId");
    assert!(access_key.starts_with("ASIA") && access_key.len() == 20);
    assert_eq!(creds["secretAccessKey"].as_str().map(str::len), Some(40));
    assert!(creds["sessionToken"]
        .as_str()
        .is_some_and(|t| t.len() > 100));
    assert_eq!(set["roleArn"], DEV_ROLE_ARN_ORDERS);
    assert_eq!(set["packedPolicySize"], 0);
    assert_eq!(set["sourceIdentity"], "orders");
    let session_name = &leaf.serial_hex;
    assert_eq!(
        set["assumedRoleUser"]["arn"],
        format!("arn:aws:sts::{DEV_ACCOUNT}:assumed-role/orders/{session_name}")
    );
    let role_id = set["assumedRoleUser"]["assumedRoleId"]
        .as_str()
        .expect("assumedRoleId");
    assert!(role_id.starts_with("AROA") && role_id.ends_with(&format!(":{session_name}")));
    let subject = body["subjectArn"].as_str().expect("subjectArn");
    assert!(subject.starts_with(&format!(
        "arn:aws:rolesanywhere:{DEV_REGION}:{DEV_ACCOUNT}:subject/"
    )));

    // Expiration: about now + 1800 s, in the documented format.
    let exp_text = creds["expiration"].as_str().expect("expiration");
    let exp = time::PrimitiveDateTime::parse(
        exp_text,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
    .expect("expiration format")
    .assume_utc();
    let delta = exp.unix_timestamp() - unix(before);
    assert!((1798..=1802).contains(&delta), "expires in {delta} s");

    // The issued session is recorded with its secrets.
    let issued = double.issued();
    assert_eq!(issued.len(), 1);
    let s = &issued[0];
    assert_eq!(s.access_key_id, access_key);
    assert_eq!(
        s.secret_access_key,
        creds["secretAccessKey"].as_str().unwrap_or("")
    );
    assert_eq!(
        s.session_token,
        creds["sessionToken"].as_str().unwrap_or("")
    );
    assert_eq!(unix(s.expiration), exp.unix_timestamp());
    assert_eq!(s.role_arn, DEV_ROLE_ARN_ORDERS);
    assert_eq!(&s.role_session_name, session_name);
    assert_eq!(s.account, DEV_ACCOUNT);
    assert_eq!(s.spiffe_id.as_deref(), Some(SPIFFE_ORDERS));
    assert_eq!(s.leaf_serial_decimal, leaf.serial_decimal);
    assert_eq!(
        double
            .session_for_access_key(access_key)
            .map(|s| s.secret_access_key),
        Some(s.secret_access_key.clone())
    );
    assert!(double.session_for_access_key("ASIANOTISSUED").is_none());

    // And the call is recorded.
    let calls = double.calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.status, 201);
    assert_eq!(c.error_type, None);
    assert_eq!(
        c.leaf_serial_decimal.as_deref(),
        Some(&*leaf.serial_decimal)
    );
    assert_eq!(c.leaf_sha256_hex.as_deref(), Some(&*sha256_hex(&leaf.der)));
    assert_eq!(c.spiffe_id.as_deref(), Some(SPIFFE_ORDERS));
    assert_eq!(c.role_arn.as_deref(), Some(DEV_ROLE_ARN_ORDERS));
    assert_eq!(c.duration_seconds, Some(1800));
    double.shutdown().await;
}

#[tokio::test]
async fn p384_leaf_signed_with_sha256_is_accepted() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P384, &pki.root, &[]);
    let double = start(&pki).await;
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    double.shutdown().await;
}

#[tokio::test]
async fn rsa2048_leaf_is_accepted() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::Rsa2048, &pki.intermediate, &[&pki.intermediate]);
    let double = start(&pki).await;
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    // Default duration is 3600 s.
    let exp = unix(double.issued()[0].expiration);
    let delta = exp - unix(SystemTime::now());
    assert!((3595..=3601).contains(&delta), "expires in {delta} s");
    double.shutdown().await;
}

#[tokio::test]
async fn reqwest_client_works_against_endpoint_and_ca() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    assert!(double.endpoint().starts_with("https://localhost:"));
    let req = signed(&double, &leaf, &dev_body(None));
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls_client_config()).clone())
        .build()
        .expect("client");
    let mut builder = client.post(format!("{}/sessions", double.endpoint()));
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let resp = builder.body(req.body.clone()).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 201);
    double.shutdown().await;
}

#[tokio::test]
async fn arns_in_query_string_and_messy_header_whitespace() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.intermediate, &[&pki.intermediate]);
    let double = start(&pki).await;
    let mut req = create_session(&double, &leaf, &serde_json::json!({"durationSeconds": 900}));
    req.query = vec![
        ("trustAnchorArn".to_owned(), DEV_TRUST_ANCHOR_ARN.to_owned()),
        ("roleArn".to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned()),
        ("profileArn".to_owned(), DEV_PROFILE_ARN.to_owned()),
    ];
    // Extra spaces inside a signed value must be collapsed by the verifier.
    req.set_header("X-Custom", "a    b   c");
    Sign::new(&leaf).apply(&mut req);
    let resp = send(&double, &req).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    assert_eq!(double.issued()[0].role_arn, DEV_ROLE_ARN_REVIEWS);
    assert_eq!(
        double.calls()[0].role_arn.as_deref(),
        Some(DEV_ROLE_ARN_REVIEWS)
    );
    double.shutdown().await;
}

#[tokio::test]
async fn role_session_name_and_duration_bounds() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    let mut body = dev_body(Some(43_200));
    body["roleSessionName"] = "orders-node-1".into();
    let resp = send(&double, &signed(&double, &leaf, &body)).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    let s = &double.issued()[0];
    assert_eq!(s.role_session_name, "orders-node-1");
    assert_eq!(
        s.assumed_role_arn,
        format!("arn:aws:sts::{DEV_ACCOUNT}:assumed-role/orders/orders-node-1")
    );
    let resp = send(&double, &signed(&double, &leaf, &dev_body(Some(900)))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    double.shutdown().await;
}

#[tokio::test]
async fn credential_lifetime_overrides_duration_and_keys_are_unique() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig {
        credential_lifetime: Some(Duration::from_secs(5)),
        ..config(&pki)
    })
    .await
    .expect("start");
    for _ in 0..2 {
        let resp = send(&double, &signed(&double, &leaf, &dev_body(Some(3600)))).await;
        assert_eq!(resp.status, 201, "body: {}", resp.body);
    }
    let issued = double.issued();
    let delta = unix(issued[0].expiration) - unix(SystemTime::now());
    assert!((3..=5).contains(&delta), "expires in {delta} s");
    assert_ne!(issued[0].access_key_id, issued[1].access_key_id);
    assert_ne!(issued[0].secret_access_key, issued[1].secret_access_key);
    assert_ne!(issued[0].session_token, issued[1].session_token);
    double.shutdown().await;
}

#[tokio::test]
async fn issued_session_debug_hides_secrets() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201);
    let s = double.issued().remove(0);
    let dbg = format!("{s:?}");
    assert!(dbg.contains(&s.access_key_id));
    assert!(!dbg.contains(&s.secret_access_key));
    assert!(!dbg.contains(&s.session_token));
    double.shutdown().await;
}

#[tokio::test]
async fn chain_in_any_order_with_root_included() {
    let pki = pki();
    let leaf = make_leaf(
        KeyKind::P256,
        &pki.intermediate,
        &[&pki.root, &pki.intermediate],
    );
    let double = start(&pki).await;
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    double.shutdown().await;
}

#[tokio::test]
async fn default_config_starts_with_the_compiled_in_pki() {
    let double = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig::default())
        .await
        .expect("start");
    assert!(double.local_addr().ip().is_loopback());
    let cfg = RolesAnywhereDoubleConfig::default();
    assert_eq!(cfg.profiles[0].role_arns.len(), 2);
    assert_eq!(cfg.max_clock_skew, Duration::from_secs(300));
    double.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Authentication failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_headers_are_refused() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;

    let mut req = signed(&double, &leaf, &dev_body(None));
    req.remove_header("Authorization");
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "Missing Authentication Token",
    );

    let mut req = create_session(&double, &leaf, &dev_body(None));
    req.remove_header("X-Amz-Date");
    Sign::new(&leaf).apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "X-Amz-Date");

    let mut req = create_session(&double, &leaf, &dev_body(None));
    req.remove_header("X-Amz-X509");
    Sign::new(&leaf).apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "x-amz-x509");

    // Host present but not signed.
    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        signed: Some(vec!["content-type", "x-amz-date", "x-amz-x509"]),
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "'host' must be a 'SignedHeader'",
    );

    // Chain sent but not signed.
    let leaf_i = make_leaf(KeyKind::P256, &pki.intermediate, &[&pki.intermediate]);
    let mut req = create_session(&double, &leaf_i, &dev_body(None));
    Sign {
        signed: Some(vec!["host", "x-amz-date", "x-amz-x509"]),
        ..Sign::new(&leaf_i)
    }
    .apply(&mut req);
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "'x-amz-x509-chain' must be a 'SignedHeader'",
    );

    // A header listed in SignedHeaders but absent.
    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        signed: Some(vec!["host", "x-amz-date", "x-amz-x509", "x-not-sent"]),
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "x-not-sent");

    assert!(double.issued().is_empty());
    assert!(double.calls().iter().all(|c| c.status == 403));
    double.shutdown().await;
}

#[tokio::test]
async fn dates_and_clock_skew() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    let now = OffsetDateTime::now_utc();

    let mut req = create_session_at(
        &double,
        &leaf,
        &dev_body(None),
        now - time::Duration::minutes(10),
    );
    Sign::new(&leaf).apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Signature expired");

    let mut req = create_session_at(
        &double,
        &leaf,
        &dev_body(None),
        now + time::Duration::minutes(10),
    );
    Sign::new(&leaf).apply(&mut req);
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "Signature not yet current",
    );

    // Within the window is fine.
    let mut req = create_session_at(
        &double,
        &leaf,
        &dev_body(None),
        now - time::Duration::minutes(4),
    );
    Sign::new(&leaf).apply(&mut req);
    assert_eq!(send(&double, &req).await.status, 201);

    for bad in [
        "2024-01-01T00:00:00Z",
        "20240101T000000",
        "20241301T000000Z",
        "x",
    ] {
        let mut req = create_session(&double, &leaf, &dev_body(None));
        req.set_header("X-Amz-Date", bad);
        Sign::new(&leaf).apply(&mut req);
        send(&double, &req)
            .await
            .assert_error(403, "AccessDeniedException", "X-Amz-Date");
    }

    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        scope_date: Some("20200101"),
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "Date in Credential scope",
    );
    double.shutdown().await;
}

#[tokio::test]
async fn scope_and_serial_must_match() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;

    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        region: "us-west-2",
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "valid region");

    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        service: "sts",
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "correct service");

    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        serial: Some("12345"),
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "serial number");

    // The algorithm must fit the key type.
    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        alg: Some("AWS4-X509-RSA-SHA256"),
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "does not match");

    let mut req = create_session(&double, &leaf, &dev_body(None));
    Sign {
        alg: Some("AWS4-HMAC-SHA256"),
        ..Sign::new(&leaf)
    }
    .apply(&mut req);
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "Unsupported signing algorithm",
    );
    double.shutdown().await;
}

#[tokio::test]
async fn tampering_after_signing_is_detected() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::Rsa2048, &pki.intermediate, &[&pki.intermediate]);
    let double = start(&pki).await;

    // Body changed after signing (still valid JSON asking for another role).
    let mut req = signed(&double, &leaf, &dev_body(None));
    req.body = dev_body(Some(43_200)).to_string().into_bytes();
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Invalid signature");

    // A signed header changed.
    let mut req = signed(&double, &leaf, &dev_body(None));
    req.set_header("Content-Type", "text/plain");
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Invalid signature");

    // A query parameter added after signing.
    let mut req = signed(&double, &leaf, &dev_body(None));
    req.query
        .push(("roleArn".to_owned(), DEV_ROLE_ARN_ORDERS.to_owned()));
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Invalid signature");

    // Signature bytes flipped.
    let mut req = signed(&double, &leaf, &dev_body(None));
    let authz = req.header("Authorization").unwrap_or_default().to_owned();
    let (head, sig) = authz.split_once("Signature=").expect("signature");
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    req.set_header(
        "Authorization",
        &format!("{head}Signature={flipped}{}", &sig[1..]),
    );
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Invalid signature");

    // Signed by another key than the presented certificate's.
    let other = make_leaf(KeyKind::Rsa2048, &pki.intermediate, &[&pki.intermediate]);
    let impostor = Leaf {
        key: LeafKey::P256(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .expect("key")
                .serialize_der(),
        ),
        der: other.der.clone(),
        chain: other.chain.clone(),
        serial_decimal: other.serial_decimal.clone(),
        serial_hex: other.serial_hex.clone(),
    };
    let mut req = create_session(&double, &impostor, &dev_body(None));
    Sign {
        alg: Some("AWS4-X509-RSA-SHA256"),
        ..Sign::new(&impostor)
    }
    .apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Invalid signature");

    assert!(double.issued().is_empty());
    double.shutdown().await;
}

#[tokio::test]
async fn untrusted_certificates_are_refused() {
    let pki = pki();
    let double = start(&pki).await;

    let cases: Vec<(&str, Leaf)> = vec![
        (
            "untrusted root",
            make_leaf(KeyKind::P256, &pki.untrusted_root, &[]),
        ),
        (
            "missing intermediate",
            make_leaf(KeyKind::P256, &pki.intermediate, &[]),
        ),
        (
            "issuer name of the root, other key",
            make_leaf(
                KeyKind::P256,
                &make_ca(ca_params("Test Root CA"), None),
                &[],
            ),
        ),
        (
            "expired leaf",
            make_leaf_with(KeyKind::P256, &pki.root, &[], {
                let mut p = leaf_params("orders");
                p.not_before = OffsetDateTime::now_utc() - days(10);
                p.not_after = OffsetDateTime::now_utc() - days(1);
                p
            }),
        ),
        (
            "CA leaf",
            make_leaf_with(KeyKind::P256, &pki.root, &[], {
                let mut p = leaf_params("orders");
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p
            }),
        ),
        (
            "leaf without digitalSignature",
            make_leaf_with(KeyKind::P256, &pki.root, &[], {
                let mut p = leaf_params("orders");
                p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
                p
            }),
        ),
    ];
    for (what, leaf) in &cases {
        let resp = send(&double, &signed(&double, leaf, &dev_body(None))).await;
        assert_eq!(resp.status, 403, "{what}: {}", resp.body);
        assert_eq!(resp.message(), "Untrusted signing certificate", "{what}");
    }
    let calls = double.calls();
    assert_eq!(calls.len(), cases.len());
    // Refused calls still record who tried.
    for (call, (_, leaf)) in calls.iter().zip(&cases) {
        assert_eq!(
            call.leaf_serial_decimal.as_deref(),
            Some(&*leaf.serial_decimal)
        );
        assert_eq!(call.error_type.as_deref(), Some("AccessDeniedException"));
    }
    assert!(double.issued().is_empty());
    double.shutdown().await;
}

#[tokio::test]
async fn garbage_certificates_are_refused() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    for bad in ["!!!not base64!!!", "", "aGVsbG8gd29ybGQ=", "MIIB"] {
        let mut req = create_session(&double, &leaf, &dev_body(None));
        req.set_header("X-Amz-X509", bad);
        Sign::new(&leaf).apply(&mut req);
        send(&double, &req).await.assert_error(
            403,
            "AccessDeniedException",
            "Invalid signing certificate",
        );
    }
    for bad in [
        "!!!",
        "aGVsbG8=",
        &format!("{},", b64(&pki.intermediate.der)),
    ] {
        let mut req = create_session(&double, &leaf, &dev_body(None));
        req.set_header("X-Amz-X509-Chain", bad);
        Sign::new(&leaf).apply(&mut req);
        send(&double, &req).await.assert_error(
            403,
            "AccessDeniedException",
            "Invalid certificate chain",
        );
    }
    // A leaf with trailing garbage after the DER.
    let mut der = leaf.der.clone();
    der.extend_from_slice(b"junk");
    let mut req = create_session(&double, &leaf, &dev_body(None));
    req.set_header("X-Amz-X509", &b64(&der));
    Sign::new(&leaf).apply(&mut req);
    send(&double, &req).await.assert_error(
        403,
        "AccessDeniedException",
        "Invalid signing certificate",
    );
    double.shutdown().await;
}

#[tokio::test]
async fn malformed_authorization_headers_are_refused() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    let good = signed(&double, &leaf, &dev_body(None));
    let good_authz = good.header("Authorization").unwrap_or_default().to_owned();
    let serial = &leaf.serial_decimal;
    let date = &good.header("X-Amz-Date").unwrap_or_default()[..8];
    let cred = format!("{serial}/{date}/{DEV_REGION}/rolesanywhere/aws4_request");
    let cases = [
        String::new(),
        "AWS4-X509-ECDSA-SHA256".to_owned(),
        "AWS4-X509-ECDSA-SHA256 ".to_owned(),
        "AWS4-X509-ECDSA-SHA256 Credential=".to_owned(),
        format!("AWS4-X509-ECDSA-SHA256 Credential={cred}, SignedHeaders=host"),
        format!("AWS4-X509-ECDSA-SHA256 Credential={cred}, SignedHeaders=host, Signature=zz"),
        format!("AWS4-X509-ECDSA-SHA256 Credential={cred}, SignedHeaders=host, Signature="),
        format!(
            "AWS4-X509-ECDSA-SHA256 Credential={serial}/{date}, SignedHeaders=host, Signature=00"
        ),
        format!(
            "AWS4-X509-ECDSA-SHA256 Credential={cred}, SignedHeaders=x-amz-date;host, Signature=00"
        ),
        format!(
            "AWS4-X509-ECDSA-SHA256 Credential={cred}, SignedHeaders=Host;x-amz-date, Signature=00"
        ),
        format!("AWS4-X509-ECDSA-SHA256 Credential={cred}, SignedHeaders=host;;x, Signature=00"),
        format!("{good_authz}, Signature=00"),
        format!("{good_authz}, Extra=1"),
        "\u{00e9}\u{00e9}\u{00e9}".to_owned(),
    ];
    for authz in &cases {
        let mut req = create_session(&double, &leaf, &dev_body(None));
        req.set_header("Authorization", authz);
        let resp = send(&double, &req).await;
        assert_eq!(resp.status, 403, "{authz:?}: {}", resp.body);
        assert_eq!(
            resp.error_type(),
            Some("AccessDeniedException"),
            "{authz:?}"
        );
    }
    // Authorization sent twice.
    let mut req = signed(&double, &leaf, &dev_body(None));
    req.headers
        .push(("Authorization".to_owned(), good_authz.clone()));
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "only once");
    assert!(double.issued().is_empty());
    double.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Parameter and resource failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_parameters_are_validation_errors() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;

    for (d, want) in [
        (serde_json::json!(899), "greater than or equal to 900"),
        (serde_json::json!(43_201), "less than or equal to 43200"),
        (serde_json::json!("3600"), "integer"),
        (serde_json::json!(-1), "integer"),
        (serde_json::json!(1000.5), "integer"),
    ] {
        let mut body = dev_body(None);
        body["durationSeconds"] = d;
        send(&double, &signed(&double, &leaf, &body))
            .await
            .assert_error(400, "ValidationException", want);
    }

    let mut body = dev_body(None);
    body.as_object_mut().map(|o| o.remove("roleArn"));
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(400, "ValidationException", "'roleArn'");

    let mut body = dev_body(None);
    body["roleArn"] = "orders".into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(400, "ValidationException", "roleArn");

    let mut body = dev_body(None);
    body["roleSessionName"] = "has spaces".into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(400, "ValidationException", "roleSessionName");

    // Query and body disagree.
    let mut req = create_session(&double, &leaf, &dev_body(None));
    req.query = vec![("roleArn".to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned())];
    Sign::new(&leaf).apply(&mut req);
    send(&double, &req)
        .await
        .assert_error(400, "ValidationException", "differs");

    // Signed, but not JSON.
    for garbage in [&b"{not json"[..], b"[1,2]", b"\"str\"", &[0xff, 0xfe, 0x00]] {
        let mut req = create_session(&double, &leaf, &dev_body(None));
        req.body = garbage.to_vec();
        Sign::new(&leaf).apply(&mut req);
        send(&double, &req)
            .await
            .assert_error(400, "ValidationException", "json");
    }
    assert!(double.issued().is_empty());
    double.shutdown().await;
}

#[tokio::test]
async fn unknown_or_disabled_resources_are_refused() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let disabled_anchor = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/disabled";
    let disabled_profile = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/disabled";
    let mut cfg = config(&pki);
    cfg.trust_anchors.push(TrustAnchor {
        arn: disabled_anchor.to_owned(),
        ca_certs_pem: pki.root.pem.clone(),
        enabled: false,
    });
    cfg.profiles.push(Profile {
        arn: disabled_profile.to_owned(),
        role_arns: vec![DEV_ROLE_ARN_ORDERS.to_owned()],
        enabled: false,
    });
    let double = RolesAnywhereDouble::start(cfg).await.expect("start");

    let mut body = dev_body(None);
    body["trustAnchorArn"] =
        "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/nope".into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(404, "ResourceNotFoundException", "Trust anchor");

    let mut body = dev_body(None);
    body["trustAnchorArn"] = disabled_anchor.into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(403, "AccessDeniedException", "disabled");

    let mut body = dev_body(None);
    body["profileArn"] = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/nope".into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(404, "ResourceNotFoundException", "Profile");

    let mut body = dev_body(None);
    body["profileArn"] = disabled_profile.into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(403, "AccessDeniedException", "disabled");

    let mut body = dev_body(None);
    body["roleArn"] = "arn:aws:iam::123456789012:role/admin".into();
    send(&double, &signed(&double, &leaf, &body))
        .await
        .assert_error(403, "AccessDeniedException", "Role");

    assert!(double.issued().is_empty());
    double.shutdown().await;
}

#[tokio::test]
async fn trust_anchor_is_checked_against_the_requested_anchor() {
    // The leaf chains to the untrusted root, which is configured, but under another ARN.
    let pki = pki();
    let other_anchor = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/other";
    let mut cfg = config(&pki);
    cfg.trust_anchors.push(TrustAnchor {
        arn: other_anchor.to_owned(),
        ca_certs_pem: pki.untrusted_root.pem.clone(),
        enabled: true,
    });
    let double = RolesAnywhereDouble::start(cfg).await.expect("start");
    let leaf = make_leaf(KeyKind::P256, &pki.untrusted_root, &[]);
    send(&double, &signed(&double, &leaf, &dev_body(None)))
        .await
        .assert_error(
            403,
            "AccessDeniedException",
            "Untrusted signing certificate",
        );
    let mut body = dev_body(None);
    body["trustAnchorArn"] = other_anchor.into();
    let resp = send(&double, &signed(&double, &leaf, &body)).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    double.shutdown().await;
}

#[tokio::test]
async fn bad_trust_anchor_pem_fails_start() {
    let pki = pki();
    let mut cfg = config(&pki);
    cfg.trust_anchors[0].ca_certs_pem = "not a pem".to_owned();
    let err = RolesAnywhereDouble::start(cfg)
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, RolesAnywhereDoubleError::TrustAnchor { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Routing, limits and garbage on the wire
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn other_paths_and_methods() {
    let pki = pki();
    let double = start(&pki).await;
    let host = format!("localhost:{}", double.local_addr().port());
    let raw = send_raw(
        &double,
        format!("GET /sessions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let resp = parse_response(&raw).expect("response");
    resp.assert_error(405, "MethodNotAllowedException", "");
    assert_eq!(resp.header("allow"), Some("POST"));

    let raw = send_raw(
        &double,
        format!("POST /other HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("send");
    parse_response(&raw)
        .expect("response")
        .assert_error(404, "UnknownOperationException", "");
    let statuses: Vec<u16> = double.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![405, 404]);
    double.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    let mut req = create_session(&double, &leaf, &dev_body(None));
    req.body = vec![b' '; 64 * 1024 + 1];
    Sign::new(&leaf).apply(&mut req);
    let resp = send(&double, &req).await;
    assert_eq!(resp.status, 413, "body: {}", resp.body);

    // Chunked, without Content-Length.
    let host = format!("localhost:{}", double.local_addr().port());
    let chunk = vec![b'a'; 40 * 1024];
    let mut bytes = format!(
        "POST /sessions HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..2 {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let raw = send_raw(&double, &bytes).await.expect("send");
    assert_eq!(parse_response(&raw).expect("response").status, 413);
    double.shutdown().await;
}

#[tokio::test]
async fn wire_garbage_does_not_hurt_the_server() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    let garbage: [&[u8]; 5] = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"POST /sessions HTTP/1.1\r\nHost\r\n\r\n",
        b"POST /sessions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /sessions HTTP/9.9\r\n\r\n",
        b"POST /sessions HTTP/1.1\r\nX-Amz-X509: \xff\xfe\r\nAuthorization: \xc3\x28\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ];
    for bytes in garbage {
        // Any outcome is fine except the server going away.
        let _ = send_raw(&double, bytes).await;
    }
    // Plain TCP junk instead of a TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(double.local_addr())
        .await
        .expect("connect");
    let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    drop(tcp);

    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    double.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn status_fault_applies_the_given_number_of_times() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    double.inject(
        Fault::Status {
            status: 429,
            error_type: "ThrottlingException".to_owned(),
            message: "Rate exceeded".to_owned(),
        },
        2,
    );
    for _ in 0..2 {
        send(&double, &signed(&double, &leaf, &dev_body(None)))
            .await
            .assert_error(429, "ThrottlingException", "Rate exceeded");
    }
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    let calls = double.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].error_type.as_deref(), Some("ThrottlingException"));
    assert_eq!(
        calls[0].leaf_serial_decimal.as_deref(),
        Some(&*leaf.serial_decimal)
    );
    assert_eq!(double.issued().len(), 1);

    double.inject(
        Fault::Status {
            status: 500,
            error_type: "InternalServerException".to_owned(),
            message: "boom".to_owned(),
        },
        1,
    );
    send(&double, &signed(&double, &leaf, &dev_body(None)))
        .await
        .assert_error(500, "InternalServerException", "boom");
    double.shutdown().await;
}

#[tokio::test]
async fn fail_every_fails_each_nth_create_session_with_500() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    double.fail_every(3);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
        if resp.status == 500 {
            resp.assert_error(
                500,
                "InternalServerException",
                "injected failure (one CreateSession in 3)",
            );
        }
        statuses.push(resp.status);
    }
    assert_eq!(statuses, [201, 201, 500, 201, 201, 500, 201]);
    assert_eq!(double.issued().len(), 5);
    double.fail_every(0);
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201);
    double.shutdown().await;
}

#[tokio::test]
async fn faults_queue_in_order_and_skip_non_create_session_requests() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    double.inject(Fault::GarbageBody, 1);
    double.inject(Fault::EmptyCredentialSet, 1);
    double.inject(Fault::CloseConnection, 0); // no-op

    // A request to another path does not consume a fault.
    let host = format!("localhost:{}", double.local_addr().port());
    let raw = send_raw(
        &double,
        format!(
            "POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(parse_response(&raw).expect("response").status, 404);

    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201);
    assert!(serde_json::from_str::<serde_json::Value>(&resp.body).is_err());

    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["credentialSet"], serde_json::json!([]));

    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201);
    assert!(resp.json()["credentialSet"][0]["credentials"]["accessKeyId"].is_string());
    // Only the last one issued anything.
    assert_eq!(double.issued().len(), 1);
    double.shutdown().await;
}

#[tokio::test]
async fn close_connection_fault_sends_nothing() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    double.inject(Fault::CloseConnection, 1);
    let req = signed(&double, &leaf, &dev_body(None));
    let raw = send_raw(&double, &wire_bytes(&req)).await;
    assert!(
        raw.as_ref().map_or(true, |r| r.is_empty()),
        "got a response: {raw:?}"
    );
    let calls = double.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, 0);
    assert!(double.issued().is_empty());
    // The next call is normal.
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert_eq!(resp.status, 201);
    double.shutdown().await;
}

#[tokio::test]
async fn delay_fault_delays_then_handles_normally() {
    let pki = pki();
    let leaf = make_leaf(KeyKind::P256, &pki.root, &[]);
    let double = start(&pki).await;
    double.inject(Fault::Delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status, 201, "body: {}", resp.body);
    let started = Instant::now();
    let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(resp.status, 201);
    double.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let pki = pki();
    let double = start(&pki).await;
    let addr = double.local_addr();
    double.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// Certificate path checks, unit level (typed reasons)
// ---------------------------------------------------------------------------------------------

fn check_path(leaf: &Leaf, anchors: &[&Ca]) -> Result<(), ChainError> {
    let leaf_cert = verify::parse_cert(&leaf.der).expect("leaf");
    let chain: Vec<_> = leaf
        .chain
        .iter()
        .map(|d| verify::parse_cert(d).expect("chain"))
        .collect();
    let anchors: Vec<_> = anchors
        .iter()
        .map(|a| verify::parse_cert(&a.der).expect("anchor"))
        .collect();
    verify::validate_chain(
        &leaf_cert,
        &chain,
        &anchors,
        OffsetDateTime::now_utc().unix_timestamp(),
    )
}

#[test]
fn path_validation_reasons() {
    let pki = pki();
    let ok = make_leaf(KeyKind::P256, &pki.intermediate, &[&pki.intermediate]);
    assert_eq!(check_path(&ok, &[&pki.root]), Ok(()));
    // The intermediate itself may be the anchor.
    assert_eq!(check_path(&ok, &[&pki.intermediate]), Ok(()));
    assert_eq!(
        check_path(&ok, &[&pki.untrusted_root]),
        Err(ChainError::NoPathToAnchor)
    );

    let mut p = leaf_params("orders");
    p.not_after = OffsetDateTime::now_utc() - days(1);
    p.not_before = OffsetDateTime::now_utc() - days(2);
    let expired = make_leaf_with(KeyKind::P256, &pki.root, &[], p);
    assert!(matches!(
        check_path(&expired, &[&pki.root]),
        Err(ChainError::NotValidNow(_))
    ));

    let mut p = leaf_params("orders");
    p.not_before = OffsetDateTime::now_utc() + days(1);
    let future = make_leaf_with(KeyKind::P256, &pki.root, &[], p);
    assert!(matches!(
        check_path(&future, &[&pki.root]),
        Err(ChainError::NotValidNow(_))
    ));

    let mut p = leaf_params("orders");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_leaf = make_leaf_with(KeyKind::P256, &pki.root, &[], p);
    assert_eq!(
        check_path(&ca_leaf, &[&pki.root]),
        Err(ChainError::LeafIsCa)
    );

    let mut p = leaf_params("orders");
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let no_ds = make_leaf_with(KeyKind::P256, &pki.root, &[], p);
    assert_eq!(
        check_path(&no_ds, &[&pki.root]),
        Err(ChainError::LeafKeyUsage)
    );

    // No key usage extension at all is fine.
    let mut p = leaf_params("orders");
    p.key_usages = vec![];
    let no_ku = make_leaf_with(KeyKind::P256, &pki.root, &[], p);
    assert_eq!(check_path(&no_ku, &[&pki.root]), Ok(()));

    // An intermediate without CA:TRUE.
    let mut p = ca_params("Not A CA");
    p.is_ca = IsCa::ExplicitNoCa;
    let not_ca = make_ca(p, Some(&pki.root));
    let leaf = make_leaf(KeyKind::P256, &not_ca, &[&not_ca]);
    assert!(matches!(
        check_path(&leaf, &[&pki.root]),
        Err(ChainError::IssuerNotCa(_))
    ));

    // An expired intermediate.
    let mut p = ca_params("Expired Intermediate");
    p.not_before = OffsetDateTime::now_utc() - days(10);
    p.not_after = OffsetDateTime::now_utc() - days(1);
    let old = make_ca(p, Some(&pki.root));
    let leaf = make_leaf(KeyKind::P256, &old, &[&old]);
    assert!(matches!(
        check_path(&leaf, &[&pki.root]),
        Err(ChainError::NotValidNow(_))
    ));

    // pathLenConstraint 0 on the root forbids an intermediate below it.
    let mut p = ca_params("Constrained Root");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let croot = make_ca(p, None);
    let inter = make_ca(ca_params("Below Constrained"), Some(&croot));
    let leaf = make_leaf(KeyKind::P256, &inter, &[&inter]);
    assert!(matches!(
        check_path(&leaf, &[&croot]),
        Err(ChainError::PathLenExceeded(_))
    ));
    let direct = make_leaf(KeyKind::P256, &croot, &[]);
    assert_eq!(check_path(&direct, &[&croot]), Ok(()));

    // A CA without keyCertSign.
    let mut p = ca_params("No CertSign");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let weak_ca = make_ca(p, Some(&pki.root));
    let leaf = make_leaf(KeyKind::P256, &weak_ca, &[&weak_ca]);
    assert!(matches!(
        check_path(&leaf, &[&pki.root]),
        Err(ChainError::IssuerKeyUsage(_))
    ));

    // Same issuer names as the real CAs, other keys: names alone must not make a path.
    let fake_root = make_ca(ca_params("Test Root CA"), None);
    let forged = make_leaf(KeyKind::P256, &fake_root, &[]);
    assert_eq!(
        check_path(&forged, &[&pki.root]),
        Err(ChainError::NoPathToAnchor)
    );
    let fake_inter = make_ca(ca_params("Test Intermediate CA"), Some(&fake_root));
    let forged = Leaf {
        chain: vec![pki.intermediate.der.clone()],
        ..make_leaf(KeyKind::P256, &fake_inter, &[])
    };
    assert_eq!(
        check_path(&forged, &[&pki.root]),
        Err(ChainError::NoPathToAnchor)
    );

    // An RSA-1024 leaf.
    let weak_pem = std::fs::read(pki::certs_dir().join("bad-rsa1024.pem")).expect("read");
    let weak_der = CertificateDer::from_pem_slice(&weak_pem).expect("PEM");
    let (_, weak_cert) =
        x509_parser::certificate::X509Certificate::from_der(&weak_der).expect("parse");
    let spki = rcgen::SubjectPublicKeyInfo::from_der(weak_cert.public_key().raw).expect("spki");
    let cert = leaf_params("weak")
        .signed_by(&spki, &pki.root.issuer())
        .expect("weak leaf");
    let weak = Leaf {
        der: cert.der().to_vec(),
        chain: vec![],
        key: LeafKey::Rsa(vec![]),
        serial_decimal: String::new(),
        serial_hex: String::new(),
    };
    assert_eq!(
        check_path(&weak, &[&pki.root]),
        Err(ChainError::WeakRsaKey(1024))
    );

    // Too many intermediates.
    let many = Leaf {
        chain: vec![pki.intermediate.der.clone(); 9],
        ..make_leaf(KeyKind::P256, &pki.intermediate, &[])
    };
    assert_eq!(
        check_path(&many, &[&pki.root]),
        Err(ChainError::TooManyIntermediates)
    );
}

#[test]
fn authorization_parsing() {
    let ok = verify::parse_authorization(
        "AWS4-X509-RSA-SHA256 Credential=123/20240101/us-east-1/rolesanywhere/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00ff",
    )
    .expect("parse");
    assert_eq!(ok.algorithm, verify::Algorithm::Rsa);
    assert_eq!(ok.serial, "123");
    assert_eq!(ok.scope(), "20240101/us-east-1/rolesanywhere/aws4_request");
    assert_eq!(ok.signed_headers, vec!["host", "x-amz-date"]);
    assert_eq!(ok.signature, vec![0x00, 0xff]);

    // Components in another order, no spaces.
    let ok2 = verify::parse_authorization(
        "AWS4-X509-ECDSA-SHA256 Signature=01,SignedHeaders=host,Credential=1/2/3/4/5",
    )
    .expect("parse");
    assert_eq!(ok2.algorithm, verify::Algorithm::Ecdsa);

    for bad in [
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4, SignedHeaders=host, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5/6, SignedHeaders=host, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=/2/3/4/5, SignedHeaders=host, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5, SignedHeaders=b;a, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5, SignedHeaders=a;a, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5, SignedHeaders=A, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5, SignedHeaders=, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5, SignedHeaders=a, Signature=0",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5, Credential=1/2/3/4/5, SignedHeaders=a, Signature=00",
        "AWS4-X509-RSA-SHA256 Credential=1/2/3/4/5 SignedHeaders=a Signature=00",
        "AWS4-HMAC-SHA256 Credential=1/2/3/4/5, SignedHeaders=a, Signature=00",
    ] {
        assert!(verify::parse_authorization(bad).is_err(), "{bad}");
    }
}

#[test]
fn amz_date_parsing() {
    let t = verify::parse_amz_date("20261124T210000Z").expect("parse");
    assert_eq!(t.unix_timestamp(), 1_795_554_000);
    assert_eq!(verify::format_amz_date(t), "20261124T210000Z");
    for bad in [
        "20261124T210000",
        "2026-11-24T21:00:00Z",
        "20261124T250000Z",
        "20261124t210000z",
        "２0261124T210000Z",
    ] {
        assert!(verify::parse_amz_date(bad).is_err(), "{bad}");
    }
}

#[test]
fn unsupported_leaf_keys_are_refused() {
    // An Ed25519 leaf: neither RSA nor P-256/P-384.
    let pki = pki();
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
    let cert = leaf_params("ed")
        .signed_by(&key, &pki.root.issuer())
        .expect("leaf");
    let parsed = verify::parse_cert(cert.der()).expect("parse");
    assert_eq!(
        verify::verify_request_signature(&parsed, verify::Algorithm::Ecdsa, b"m", b"s"),
        Err(verify::SignatureError::UnsupportedKey)
    );
}

#[test]
fn tls_identity_is_loadable() {
    // The double must be able to build its acceptor from the compiled-in PKI.
    assert!(tls_acceptor().is_ok());
    let key = PrivateKeyDer::from_pem_slice(pki::TLS_SERVER_KEY_PEM.as_bytes());
    assert!(key.is_ok());
}

// ---------------------------------------------------------------------------------------------
// The committed test PKI (certs/) and the agent's own signer
// ---------------------------------------------------------------------------------------------

/// A request signed by the agent's signer (`crate::rolesanywhere::signer`): the double must
/// accept what the real client sends, verified by the double's independent code.
fn agent_signed(
    double: &RolesAnywhereDouble,
    identity: &crate::identity::X509Identity,
    query: &[(String, String)],
    body: &serde_json::Value,
) -> TestRequest {
    let host = format!("localhost:{}", double.local_addr().port());
    let body = body.to_string().into_bytes();
    let signed = crate::rolesanywhere::signer::sign(
        &crate::rolesanywhere::signer::Request {
            method: "POST",
            host: &host,
            path: "/sessions",
            query,
            content_type: "application/json",
            body: &body,
        },
        DEV_REGION,
        SystemTime::now(),
        identity,
    )
    .expect("agent signer");
    TestRequest {
        method: "POST".to_owned(),
        path: "/sessions".to_owned(),
        query: query.to_vec(),
        headers: signed
            .headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        body,
    }
}

fn committed_identity(leaf: &str, with_intermediate: bool) -> crate::identity::X509Identity {
    let dir = pki::certs_dir();
    let intermediate = dir.join("intermediate-ca.pem");
    crate::identity::files::load(
        &dir.join(format!("{leaf}.pem")),
        &dir.join(format!("{leaf}.key")),
        with_intermediate.then_some(intermediate.as_path()),
        SystemTime::now(),
    )
    .expect("committed identity")
}

#[tokio::test]
async fn agent_signer_with_committed_svids_is_accepted_by_the_dev_config() {
    let double = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig::default())
        .await
        .expect("start");
    let cases = [
        ("orders-rsa2048", true),
        ("orders-p256", true),
        ("orders-p384", true),
        ("reviews-p256", true),
        ("orders-rsa2048-direct", false),
        ("orders-p256-direct", false),
        ("orders-p384-direct", false),
    ];
    for (leaf, with_intermediate) in cases {
        let identity = committed_identity(leaf, with_intermediate);
        let resp = send(
            &double,
            &agent_signed(&double, &identity, &[], &dev_body(Some(900))),
        )
        .await;
        assert_eq!(resp.status, 201, "{leaf}: {}", resp.body);
        let s = double.issued().pop().expect("issued");
        assert_eq!(s.leaf_serial_decimal, identity.serial_decimal(), "{leaf}");
        assert_eq!(s.spiffe_id.as_deref(), identity.spiffe_id(), "{leaf}");
    }
    assert_eq!(double.issued().len(), cases.len());

    // ARNs as query parameters, through the agent's canonical query.
    let identity = committed_identity("orders-p256", true);
    let query = vec![
        ("roleArn".to_owned(), DEV_ROLE_ARN_REVIEWS.to_owned()),
        ("profileArn".to_owned(), DEV_PROFILE_ARN.to_owned()),
        ("trustAnchorArn".to_owned(), DEV_TRUST_ANCHOR_ARN.to_owned()),
    ];
    let resp = send(
        &double,
        &agent_signed(&double, &identity, &query, &serde_json::json!({})),
    )
    .await;
    assert_eq!(resp.status, 201, "body: {}", resp.body);

    // Tampering with what the agent signed is caught.
    let mut req = agent_signed(&double, &identity, &[], &dev_body(None));
    req.body = dev_body(Some(1200)).to_string().into_bytes();
    send(&double, &req)
        .await
        .assert_error(403, "AccessDeniedException", "Invalid signature");
    double.shutdown().await;
}

/// A committed leaf with its PKCS#8 key, for certificates the agent itself refuses to load.
fn committed_leaf(name: &str, kind: KeyKind, chain: &[&str]) -> Leaf {
    let dir = pki::certs_dir();
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read committed PKI");
    let der = CertificateDer::from_pem_slice(&read(&format!("{name}.pem")))
        .expect("leaf PEM")
        .to_vec();
    let key_der = PrivateKeyDer::from_pem_slice(&read(&format!("{name}.key")))
        .expect("key PEM")
        .secret_der()
        .to_vec();
    let key = match kind {
        KeyKind::P256 => LeafKey::P256(key_der),
        KeyKind::P384 => LeafKey::P384(key_der),
        KeyKind::Rsa2048 => LeafKey::Rsa(key_der),
    };
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(&der).expect("parse leaf");
    Leaf {
        serial_decimal: parsed.tbs_certificate.serial.to_str_radix(10),
        serial_hex: parsed.tbs_certificate.serial.to_str_radix(16),
        chain: chain
            .iter()
            .map(|c| {
                CertificateDer::from_pem_slice(&read(c))
                    .expect("chain PEM")
                    .to_vec()
            })
            .collect(),
        key,
        der,
    }
}

#[tokio::test]
async fn committed_bad_certificates_are_refused() {
    let double = RolesAnywhereDouble::start(RolesAnywhereDoubleConfig::default())
        .await
        .expect("start");
    let inter = "intermediate-ca.pem";
    for (name, chain) in [
        ("bad-expired", vec![inter]),
        ("bad-not-yet-valid", vec![inter]),
        ("bad-ca-leaf", vec![inter]),
        ("untrusted-orders-p256", vec![]),
        // The leaf alone: the intermediate is needed to reach the root.
        ("orders-p256", vec![]),
    ] {
        let leaf = committed_leaf(name, KeyKind::P256, &chain);
        let resp = send(&double, &signed(&double, &leaf, &dev_body(None))).await;
        assert_eq!(resp.status, 403, "{name}: {}", resp.body);
        assert_eq!(resp.message(), "Untrusted signing certificate", "{name}");
    }

    // Key types the service does not accept: a syntactically valid signature is not enough.
    for (name, alg, want) in [
        (
            "bad-p521",
            "AWS4-X509-ECDSA-SHA256",
            "Unsupported signing certificate key type",
        ),
        (
            "bad-ed25519",
            "AWS4-X509-ECDSA-SHA256",
            "Unsupported signing certificate key type",
        ),
        (
            "bad-rsa1024",
            "AWS4-X509-RSA-SHA256",
            "Unsupported signing certificate key type",
        ),
    ] {
        let dir = pki::certs_dir();
        let der = CertificateDer::from_pem_slice(
            &std::fs::read(dir.join(format!("{name}.pem"))).expect("read"),
        )
        .expect("PEM")
        .to_vec();
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&der).expect("parse");
        let serial = parsed.tbs_certificate.serial.to_str_radix(10);
        let mut req = TestRequest {
            method: "POST".to_owned(),
            path: "/sessions".to_owned(),
            query: vec![],
            headers: vec![
                (
                    "Host".to_owned(),
                    format!("localhost:{}", double.local_addr().port()),
                ),
                ("X-Amz-Date".to_owned(), amz_date(OffsetDateTime::now_utc())),
                ("X-Amz-X509".to_owned(), b64(&der)),
            ],
            body: dev_body(None).to_string().into_bytes(),
        };
        let date = amz_date(OffsetDateTime::now_utc());
        req.set_header(
            "Authorization",
            &format!(
                "{alg} Credential={serial}/{}/{DEV_REGION}/rolesanywhere/aws4_request, \
                 SignedHeaders=host;x-amz-date;x-amz-x509, Signature={}",
                &date[..8],
                "30".repeat(64)
            ),
        );
        send(&double, &req)
            .await
            .assert_error(403, "AccessDeniedException", want);
    }
    assert!(double.issued().is_empty());
    double.shutdown().await;
}
