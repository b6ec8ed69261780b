//! The double is exercised through the real `spiffe` crate client (the one the agent uses), so
//! these tests check wire compatibility and SPIRE-like behaviour, not our own reading of it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use spiffe::x509_source::SvidPicker;
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Source, X509SourceError, X509Svid};
use tokio_stream::StreamExt;
use tonic::Code;

use super::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use super::*;
use crate::dev::pki;

/// Upper bound for anything that should happen promptly; generous so slow CI does not flake,
/// and a hang still fails the test instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(15);
const HOUR: Duration = Duration::from_secs(3600);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `check` until it holds; for state the `spiffe` crate updates in the background.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn socket(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("agent.sock")
}

fn issuer() -> SvidIssuer {
    SvidIssuer::from_test_intermediate().unwrap()
}

fn with_hint(mut entry: SvidEntry, hint: &str) -> SvidEntry {
    entry.hint = hint.to_owned();
    entry
}

/// Two identities as SPIRE would send them: orders (the default) and reviews.
fn orders_and_reviews() -> Vec<SvidEntry> {
    let issuer = issuer();
    vec![
        with_hint(issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap(), "orders"),
        with_hint(
            issuer.issue(pki::REVIEWS_SPIFFE_ID, HOUR).unwrap(),
            "reviews",
        ),
    ]
}

async fn start(dir: &tempfile::TempDir, svids: Vec<SvidEntry>) -> WorkloadApiDouble {
    WorkloadApiDouble::start(socket(dir), svids, pki::root_bundle_der())
        .await
        .unwrap()
}

async fn client(double: &WorkloadApiDouble) -> WorkloadApiClient {
    within("connect", WorkloadApiClient::connect_to(double.endpoint()))
        .await
        .unwrap()
}

/// A client generated from our proto, for calls the `spiffe` crate would never send.
async fn raw_client(
    double: &WorkloadApiDouble,
) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let endpoint = spiffe::transport::Endpoint::parse(&double.endpoint()).unwrap();
    let channel = spiffe::transport::connect(&endpoint).await.unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_header<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SECURITY_HEADER, value.parse().unwrap());
    request
}

fn serial_of(svid: &X509Svid) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(svid.leaf().as_bytes()).unwrap();
    cert.raw_serial().to_vec()
}

struct ByHint(&'static str);

impl SvidPicker for ByHint {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids.iter().position(|svid| svid.hint() == Some(self.0))
    }
}

async fn source(double: &WorkloadApiDouble) -> spiffe::X509SourceBuilder {
    X509Source::builder()
        .endpoint(double.endpoint())
        .initial_sync_timeout(PATIENCE)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
}

#[tokio::test]
async fn serves_every_svid_with_chain_key_bundle_and_hint_and_the_first_is_default() {
    let dir = tempfile::tempdir().unwrap();
    let svids = orders_and_reviews();
    let double = start(&dir, svids.clone()).await;

    let context = within("fetch", client(&double).await.fetch_x509_context())
        .await
        .unwrap();

    assert_eq!(context.svids().len(), 2);
    for (got, sent) in context.svids().iter().zip(&svids) {
        assert_eq!(got.spiffe_id().to_string(), sent.spiffe_id);
        assert_eq!(got.hint(), Some(sent.hint.as_str()));
        let chain: Vec<&[u8]> = got.cert_chain().iter().map(|c| c.as_bytes()).collect();
        let sent_chain: Vec<&[u8]> = sent.chain_der.iter().map(Vec::as_slice).collect();
        assert_eq!(chain, sent_chain, "leaf first, then the intermediate");
        assert_eq!(got.private_key().as_bytes(), sent.key_pkcs8_der.as_slice());
    }
    let default = context.default_svid().unwrap();
    assert_eq!(default.spiffe_id().to_string(), pki::ORDERS_SPIFFE_ID);

    let trust_domain = spiffe::TrustDomain::new(pki::TRUST_DOMAIN).unwrap();
    let bundle = context.bundle_set().get(&trust_domain).unwrap();
    let authorities: Vec<&[u8]> = bundle.authorities().iter().map(|c| c.as_bytes()).collect();
    assert_eq!(authorities, vec![pki::root_bundle_der()[0].as_slice()]);
    double.shutdown().await;
}

#[tokio::test]
async fn x509_source_selects_the_default_or_the_picked_svid() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;

    let default = within("source", source(&double).await.build())
        .await
        .unwrap();
    assert_eq!(
        default.svid().unwrap().spiffe_id().to_string(),
        pki::ORDERS_SPIFFE_ID
    );
    let picked = within(
        "source",
        source(&double).await.picker(ByHint("reviews")).build(),
    )
    .await
    .unwrap();
    assert_eq!(
        picked.svid().unwrap().spiffe_id().to_string(),
        pki::REVIEWS_SPIFFE_ID
    );
    default.shutdown().await;
    picked.shutdown().await;
    double.shutdown().await;
}

#[tokio::test]
async fn rotation_is_pushed_to_open_streams_as_a_full_response() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer();
    let first = issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap();
    let double = start(&dir, vec![first]).await;
    let client = client(&double).await;
    let mut stream = within("stream", client.stream_x509_contexts())
        .await
        .unwrap();
    let initial = within("first message", stream.next())
        .await
        .unwrap()
        .unwrap();
    let initial_serial = serial_of(initial.default_svid().unwrap());

    let rotated = issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap();
    let reviews = issuer.issue(pki::REVIEWS_SPIFFE_ID, HOUR).unwrap();
    double.set_svids(vec![rotated.clone(), reviews]);

    let update = within("rotation", stream.next()).await.unwrap().unwrap();
    assert_eq!(update.svids().len(), 2, "a full response, not a delta");
    let new_default = update.default_svid().unwrap();
    assert_ne!(serial_of(new_default), initial_serial);
    assert_eq!(
        new_default.leaf().as_bytes(),
        rotated.chain_der[0].as_slice()
    );
    assert_eq!(
        double.fetch_x509_svid_calls(),
        1,
        "one stream, no reconnect"
    );
    double.shutdown().await;
}

#[tokio::test]
async fn x509_source_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer();
    let double = start(
        &dir,
        vec![issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap()],
    )
    .await;
    let source = within("source", source(&double).await.build())
        .await
        .unwrap();
    let before = serial_of(&source.svid().unwrap());

    let rotated = issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap();
    double.set_svids(vec![rotated.clone()]);
    eventually("rotated SVID in the source", || {
        source
            .svid()
            .is_ok_and(|svid| svid.leaf().as_bytes() == rotated.chain_der[0].as_slice())
    })
    .await;
    assert_ne!(serial_of(&source.svid().unwrap()), before);
    source.shutdown().await;
    double.shutdown().await;
}

#[tokio::test]
async fn deny_fails_open_streams_and_new_calls_until_set_svids() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let client = client(&double).await;
    let mut stream = within("stream", client.stream_x509_contexts())
        .await
        .unwrap();
    within("first message", stream.next())
        .await
        .unwrap()
        .unwrap();

    double.deny();
    let denied = within("denial on the open stream", stream.next())
        .await
        .unwrap();
    assert!(
        matches!(denied, Err(WorkloadApiError::NoIdentityIssued)),
        "got {denied:?}"
    );
    assert!(
        within("end of stream", stream.next()).await.is_none(),
        "the stream ends after the denial"
    );
    let again = within("fetch while denied", client.fetch_x509_context()).await;
    assert!(
        matches!(again, Err(WorkloadApiError::NoIdentityIssued)),
        "got {again:?}"
    );
    let bundles = within("bundles while denied", client.fetch_x509_bundles()).await;
    assert!(
        matches!(bundles, Err(WorkloadApiError::NoIdentityIssued)),
        "got {bundles:?}"
    );

    double.set_svids(vec![issuer().issue(pki::REVIEWS_SPIFFE_ID, HOUR).unwrap()]);
    let recovered = within("fetch after recovery", client.fetch_x509_context())
        .await
        .unwrap();
    assert_eq!(
        recovered.default_svid().unwrap().spiffe_id().to_string(),
        pki::REVIEWS_SPIFFE_ID
    );
    double.shutdown().await;
}

#[tokio::test]
async fn x509_source_withdraws_on_deny_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let source = within("source", source(&double).await.build())
        .await
        .unwrap();
    assert!(source.svid().is_ok());

    double.deny();
    eventually("withdrawal", || {
        matches!(source.svid(), Err(X509SourceError::Withdrawn(_)))
    })
    .await;

    double.set_svids(orders_and_reviews());
    eventually("recovery", || source.svid().is_ok()).await;
    assert!(
        double.fetch_x509_svid_calls() >= 2,
        "the source had to call again after the denial"
    );
    source.shutdown().await;
    double.shutdown().await;
}

#[tokio::test]
async fn no_svids_means_no_identity_and_an_empty_set_svids_keeps_it_so() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, Vec::new()).await;
    let client = client(&double).await;

    let result = within("fetch", client.fetch_x509_svid()).await;
    assert!(
        matches!(result, Err(WorkloadApiError::NoIdentityIssued)),
        "got {result:?}"
    );
    double.set_svids(Vec::new());
    let result = within("fetch", client.fetch_x509_svid()).await;
    assert!(
        matches!(result, Err(WorkloadApiError::NoIdentityIssued)),
        "got {result:?}"
    );
    assert_eq!(double.fetch_x509_svid_calls(), 2);

    double.set_svids(orders_and_reviews());
    let svid = within("fetch", client.fetch_x509_svid()).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), pki::ORDERS_SPIFFE_ID);
    double.shutdown().await;
}

#[tokio::test]
async fn calls_without_the_security_header_are_rejected_like_spire() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let mut raw = raw_client(&double).await;

    let missing = within(
        "call without header",
        raw.fetch_x509svid(pb::X509svidRequest {}),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(missing.message(), "security header missing from request");

    let wrong = within(
        "call with a wrong header",
        raw.fetch_x509svid(with_header(pb::X509svidRequest {}, "false")),
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);

    let bundles = within(
        "bundles without header",
        raw.fetch_x509_bundles(pb::X509BundlesRequest {}),
    )
    .await
    .unwrap_err();
    assert_eq!(bundles.code(), Code::InvalidArgument);
    assert_eq!(
        double.fetch_x509_svid_calls(),
        0,
        "rejected before counting"
    );

    // The same raw client with the header gets the SVIDs, so the rejections above are about
    // the header and nothing else.
    let mut ok = within(
        "call with header",
        raw.fetch_x509svid(with_header(pb::X509svidRequest {}, "true")),
    )
    .await
    .unwrap()
    .into_inner();
    let first = within("first message", ok.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.svids.len(), 2);
    assert_eq!(first.svids[0].spiffe_id, pki::ORDERS_SPIFFE_ID);
    assert_eq!(double.fetch_x509_svid_calls(), 1);
    double.shutdown().await;
}

#[tokio::test]
async fn fetch_jwt_svid_mints_verifiable_tokens_like_spire() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let mut raw = raw_client(&double).await;
    let request = |audience: Vec<&str>, spiffe_id: &str| pb::JwtsvidRequest {
        audience: audience.into_iter().map(str::to_owned).collect(),
        spiffe_id: spiffe_id.to_owned(),
    };

    // SPIRE: no audience is InvalidArgument; the header is required as for every call.
    let status = within(
        "no audience",
        raw.fetch_jwtsvid(with_header(request(vec![], ""), "true")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "audience must be specified");
    let status = within("no header", raw.fetch_jwtsvid(request(vec!["a"], "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "security header missing from request");

    // One token per identity, with its hint, signed by the key FetchJWTBundles publishes.
    let response = within(
        "FetchJWTSVID",
        raw.fetch_jwtsvid(with_header(request(vec!["sts.amazonaws.com"], ""), "true")),
    )
    .await
    .unwrap()
    .into_inner();
    let ids: Vec<(&str, &str)> = response
        .svids
        .iter()
        .map(|s| (s.spiffe_id.as_str(), s.hint.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (pki::ORDERS_SPIFFE_ID, "orders"),
            (pki::REVIEWS_SPIFFE_ID, "reviews")
        ]
    );
    let bundles = within("FetchJWTBundles", client(&double).await.fetch_jwt_bundles())
        .await
        .unwrap();
    let trust_domain = spiffe::TrustDomain::new(pki::TRUST_DOMAIN).unwrap();
    assert!(
        bundles.get(&trust_domain).is_some(),
        "the trust domain's JWKS"
    );
    let jwks = double.jwt_bundle();
    for svid in &response.svids {
        let verified = jwt::verify(&svid.svid, &jwks, std::time::SystemTime::now()).unwrap();
        assert_eq!(verified.str_claim("sub"), Some(svid.spiffe_id.as_str()));
        assert_eq!(verified.audiences(), vec!["sts.amazonaws.com"]);
        assert_eq!(verified.str_claim("iss"), Some(DEV_JWT_ISSUER));
        let lifetime =
            verified.claims["exp"].as_i64().unwrap() - verified.claims["iat"].as_i64().unwrap();
        assert_eq!(lifetime, DEV_JWT_TTL.as_secs() as i64);
    }
    // The spiffe crate reads them too.
    let parsed = within(
        "fetch_all_jwt_svids",
        client(&double).await.fetch_all_jwt_svids(["a", "b"], None),
    )
    .await
    .unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[1].hint(), Some("reviews"));
    assert_eq!(parsed[0].audience(), ["a", "b"]);

    // Asked by SPIFFE ID: that one only; an ID the workload does not have: no identity.
    let one = within(
        "by id",
        raw.fetch_jwtsvid(with_header(
            request(vec!["a"], pki::REVIEWS_SPIFFE_ID),
            "true",
        )),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(one.svids.len(), 1);
    assert_eq!(one.svids[0].spiffe_id, pki::REVIEWS_SPIFFE_ID);
    let status = within(
        "other id",
        raw.fetch_jwtsvid(with_header(
            request(vec!["a"], "spiffe://example.org/other"),
            "true",
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = within(
        "bad id",
        raw.fetch_jwtsvid(with_header(request(vec!["a"], "not an id"), "true")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        double.jwt_svid_requests().len(),
        6,
        "requests with the header are recorded: {:?}",
        double.jwt_svid_requests()
    );

    // Withdrawn: no identity issued.
    double.deny();
    let status = within(
        "denied",
        raw.fetch_jwtsvid(with_header(request(vec!["a"], ""), "true")),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
    double.shutdown().await;
}

#[tokio::test]
async fn jwt_bundles_follow_key_rotation_and_validate_checks_signature_and_audience() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let client = client(&double).await;
    let trust_domain = spiffe::TrustDomain::new(pki::TRUST_DOMAIN).unwrap();
    let mut stream = within("stream", client.stream_jwt_bundles()).await.unwrap();
    let first = within("first", stream.next()).await.unwrap().unwrap();
    let old_kid = first
        .get(&trust_domain)
        .unwrap()
        .jwt_authorities()
        .next()
        .unwrap()
        .key_id()
        .to_owned();

    let token = within("token", client.fetch_jwt_token(["svc"], None))
        .await
        .unwrap();
    let validated = within("validate", client.validate_jwt_token("svc", &token))
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), pki::ORDERS_SPIFFE_ID);
    let wrong = within("wrong audience", client.validate_jwt_token("other", &token)).await;
    assert!(wrong.is_err(), "{wrong:?}");

    double.rotate_jwt_authority().unwrap();
    let second = within("rotated", stream.next()).await.unwrap().unwrap();
    let new_kid = second
        .get(&trust_domain)
        .unwrap()
        .jwt_authorities()
        .next()
        .unwrap()
        .key_id()
        .to_owned();
    assert_ne!(old_kid, new_kid);
    // A token of the old key no longer validates; a new one does.
    let old = within("old token", client.validate_jwt_token("svc", &token)).await;
    assert!(old.is_err(), "{old:?}");
    let token = within("new token", client.fetch_jwt_token(["svc"], None))
        .await
        .unwrap();
    within("validate new", client.validate_jwt_token("svc", &token))
        .await
        .unwrap();
    double.shutdown().await;
}

#[tokio::test]
async fn x509_bundles_stream_keys_the_bundle_by_trust_domain_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let client = client(&double).await;
    let trust_domain = spiffe::TrustDomain::new(pki::TRUST_DOMAIN).unwrap();

    let mut stream = within("bundle stream", client.stream_x509_bundles())
        .await
        .unwrap();
    let first = within("first bundles", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.len(), 1);
    let bundle = first.get(&trust_domain).unwrap();
    assert_eq!(
        bundle.authorities()[0].as_bytes(),
        pki::root_bundle_der()[0].as_slice()
    );

    // A CA rotation: the bundle now holds the root and the intermediate.
    let intermediate = CertificateDer::from_pem_slice(pki::INTERMEDIATE_CA_PEM.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    double.set_bundle(vec![pki::root_bundle_der()[0].clone(), intermediate]);
    let second = within("updated bundles", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.get(&trust_domain).unwrap().authorities().len(), 2);

    double.deny();
    let denied = within("denial", stream.next()).await.unwrap();
    assert!(
        matches!(denied, Err(WorkloadApiError::NoIdentityIssued)),
        "got {denied:?}"
    );
    double.shutdown().await;
}

#[tokio::test]
async fn issued_svid_parses_with_the_right_id_and_a_spire_like_profile() {
    use x509_parser::extensions::GeneralName;

    let issuer = issuer();
    let entry = issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap();
    let svid = X509Svid::parse_from_der(&entry.concatenated_chain(), &entry.key_pkcs8_der).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), pki::ORDERS_SPIFFE_ID);
    assert_eq!(svid.cert_chain().len(), 2);

    let (_, leaf) = x509_parser::parse_x509_certificate(&entry.chain_der[0]).unwrap();
    let (_, intermediate) = x509_parser::parse_x509_certificate(&entry.chain_der[1]).unwrap();
    let intermediate_pem =
        CertificateDer::from_pem_slice(pki::INTERMEDIATE_CA_PEM.as_bytes()).unwrap();
    assert_eq!(entry.chain_der[1].as_slice(), intermediate_pem.as_ref());
    leaf.verify_signature(Some(intermediate.public_key()))
        .expect("the leaf is signed by the test intermediate");
    assert_eq!(leaf.issuer(), intermediate.subject());

    let basic = leaf.basic_constraints().unwrap().unwrap();
    assert!(!basic.value.ca);
    let key_usage = leaf.key_usage().unwrap().unwrap();
    assert!(key_usage.critical);
    assert!(key_usage.value.digital_signature());
    assert!(!key_usage.value.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names.len(), 1);
    assert!(matches!(san.general_names[0], GeneralName::URI(uri) if uri == pki::ORDERS_SPIFFE_ID));
    let aki = leaf
        .iter_extensions()
        .find(|ext| ext.oid == x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER);
    assert!(
        aki.is_some(),
        "an authority key identifier links the leaf to its CA"
    );

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    assert!((now - 70..=now - 50).contains(&not_before), "backdated 60s");
    assert!(
        (now + 3590..=now + 3610).contains(&not_after),
        "valid for the ttl"
    );

    let serial = leaf.raw_serial();
    assert_eq!(serial.len(), 16);
    assert!(
        serial[0] & 0x80 == 0 && serial[0] != 0,
        "positive, full length"
    );
    let other = issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap();
    let (_, other_leaf) = x509_parser::parse_x509_certificate(&other.chain_der[0]).unwrap();
    assert_ne!(other_leaf.raw_serial(), serial, "serials are random");
}

#[test]
fn issuer_rejects_bad_spiffe_ids_and_lifetimes() {
    let issuer = issuer();
    assert!(matches!(
        issuer.issue("https://example.org/orders", HOUR),
        Err(WorkloadApiDoubleError::InvalidSpiffeId { .. })
    ));
    assert!(matches!(
        issuer.issue(pki::ORDERS_SPIFFE_ID, Duration::MAX),
        Err(WorkloadApiDoubleError::Ttl { .. })
    ));
}

#[tokio::test]
async fn from_pem_entries_are_served_as_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let orders = SvidEntry::from_pem(
        pki::ORDERS_SPIFFE_ID,
        &format!("{}{}", pki::ORDERS_P256_PEM, pki::INTERMEDIATE_CA_PEM),
        pki::ORDERS_P256_KEY_PEM,
        "",
    )
    .unwrap();
    assert_eq!(orders.chain_der.len(), 2);
    let double = start(&dir, vec![orders.clone()]).await;

    let svid = within("fetch", client(&double).await.fetch_x509_svid())
        .await
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), pki::ORDERS_SPIFFE_ID);
    assert_eq!(svid.hint(), None, "an empty hint is no hint");
    assert_eq!(
        svid.private_key().as_bytes(),
        orders.key_pkcs8_der.as_slice()
    );
    double.shutdown().await;
}

#[test]
fn from_pem_converts_sec1_and_pkcs1_keys_to_the_same_pkcs8() {
    let certs = pki::certs_dir();
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    let der = |pem: &str| {
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .secret_pkcs8_der()
            .to_vec()
    };

    let ec = SvidEntry::from_pem(
        pki::ORDERS_SPIFFE_ID,
        pki::ORDERS_P256_PEM,
        &read("orders-p256.sec1.key"),
        "",
    )
    .unwrap();
    assert_eq!(ec.key_pkcs8_der, der(pki::ORDERS_P256_KEY_PEM));
    X509Svid::parse_from_der(&ec.concatenated_chain(), &ec.key_pkcs8_der).unwrap();

    let rsa = SvidEntry::from_pem(
        pki::ORDERS_SPIFFE_ID,
        &read("orders-rsa2048.pem"),
        &read("orders-rsa2048.pkcs1.key"),
        "",
    )
    .unwrap();
    assert_eq!(rsa.key_pkcs8_der, der(&read("orders-rsa2048.key")));
}

#[test]
fn from_pem_reports_bad_input_without_quoting_the_key() {
    let no_cert = SvidEntry::from_pem(pki::ORDERS_SPIFFE_ID, "", pki::ORDERS_P256_KEY_PEM, "");
    assert!(matches!(
        no_cert,
        Err(WorkloadApiDoubleError::CertificatePem { .. })
    ));

    let encrypted =
        std::fs::read_to_string(pki::certs_dir().join("orders-p256.encrypted.key")).unwrap();
    let err = SvidEntry::from_pem(pki::ORDERS_SPIFFE_ID, pki::ORDERS_P256_PEM, &encrypted, "")
        .unwrap_err();
    assert!(
        matches!(err, WorkloadApiDoubleError::KeyPem { .. }),
        "{err:?}"
    );

    let garbage = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!\n-----END PRIVATE KEY-----\n";
    let err =
        SvidEntry::from_pem(pki::ORDERS_SPIFFE_ID, pki::ORDERS_P256_PEM, garbage, "").unwrap_err();
    assert!(!err.to_string().contains("SECRET"), "{err}");
    assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
}

#[test]
fn debug_output_never_contains_the_key() {
    let entry = SvidEntry::from_pem(
        pki::ORDERS_SPIFFE_ID,
        pki::ORDERS_P256_PEM,
        pki::ORDERS_P256_KEY_PEM,
        "orders",
    )
    .unwrap();
    // Any run of the key's bytes, as Debug would print a Vec<u8>.
    let key_fragment = format!("{:?}", &entry.key_pkcs8_der[36..44]);
    let key_fragment = key_fragment.trim_matches(|c| c == '[' || c == ']');

    let entry_debug = format!("{entry:?}");
    assert!(entry_debug.contains(pki::ORDERS_SPIFFE_ID));
    assert!(entry_debug.contains("redacted"));
    assert!(!entry_debug.contains(key_fragment), "{entry_debug}");

    let message = pb::X509svid {
        spiffe_id: entry.spiffe_id.clone(),
        x509_svid: entry.concatenated_chain(),
        x509_svid_key: entry.key_pkcs8_der.clone(),
        bundle: Vec::new(),
        hint: entry.hint.clone(),
    };
    let message_debug = format!("{message:?}");
    assert!(message_debug.contains("redacted"));
    assert!(!message_debug.contains(key_fragment), "{message_debug}");

    let issuer_debug = format!("{:?}", issuer());
    assert!(
        !issuer_debug.to_lowercase().contains("key_pair"),
        "{issuer_debug}"
    );
}

#[tokio::test]
async fn start_replaces_a_stale_socket_but_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket(&dir);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket file is left behind");

    let double = start(&dir, orders_and_reviews()).await;
    assert_eq!(double.socket_path(), path.as_path());
    assert_eq!(double.endpoint(), format!("unix://{}", path.display()));
    within("fetch", client(&double).await.fetch_x509_svid())
        .await
        .unwrap();
    double.shutdown().await;
    assert!(!path.exists(), "shutdown removes the socket");

    std::fs::write(&path, b"not a socket").unwrap();
    let err = WorkloadApiDouble::start(&path, orders_and_reviews(), pki::root_bundle_der())
        .await
        .unwrap_err();
    assert!(
        matches!(err, WorkloadApiDoubleError::SocketPathOccupied { .. }),
        "{err:?}"
    );
    assert!(path.is_file(), "the file is left alone");
}

#[tokio::test]
async fn start_rejects_an_empty_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let err = WorkloadApiDouble::start(socket(&dir), orders_and_reviews(), Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, WorkloadApiDoubleError::EmptyBundle),
        "{err:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let double = start(&dir, orders_and_reviews()).await;
    let client = client(&double).await;
    let mut stream = within("stream", client.stream_x509_contexts())
        .await
        .unwrap();
    within("first message", stream.next())
        .await
        .unwrap()
        .unwrap();

    let started = std::time::Instant::now();
    within("shutdown", double.shutdown()).await;
    assert!(
        started.elapsed() < SHUTDOWN_GRACE,
        "open streams end at once instead of holding shutdown until the grace period"
    );
    let end = within("end of stream", stream.next()).await;
    assert!(
        !matches!(end, Some(Ok(_))),
        "no further SVIDs after shutdown"
    );
}

#[tokio::test]
async fn x509_source_reconnects_to_a_restarted_double_on_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = issuer();
    let first = start(
        &dir,
        vec![issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap()],
    )
    .await;
    let source = within("source", source(&first).await.build())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    first.shutdown().await;
    assert!(
        started.elapsed() < SHUTDOWN_GRACE,
        "a connected X509Source does not hold shutdown open"
    );

    // The agent comes back with a rotated SVID, as after a SPIRE agent restart.
    let rotated = issuer.issue(pki::ORDERS_SPIFFE_ID, HOUR).unwrap();
    let second = start(&dir, vec![rotated.clone()]).await;
    eventually("the source to pick up the restarted agent's SVID", || {
        source
            .svid()
            .is_ok_and(|svid| svid.leaf().as_bytes() == rotated.chain_der[0].as_slice())
    })
    .await;
    assert_eq!(second.fetch_x509_svid_calls(), 1);
    source.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn dropping_an_old_double_leaves_a_newer_socket_alone() {
    let dir = tempfile::tempdir().unwrap();
    let old = start(&dir, orders_and_reviews()).await;
    let new = start(&dir, orders_and_reviews()).await;
    drop(old);
    assert!(new.socket_path().exists());
    within(
        "fetch from the newer double",
        client(&new).await.fetch_x509_svid(),
    )
    .await
    .unwrap();
    new.shutdown().await;
}
