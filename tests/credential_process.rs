//! `spiffe-aws-agent credential-process`, run as a process against the Workload API double
//! and the verifying Roles Anywhere double.

mod common;

use common::stack::{failure_line, parse_process_output, run_agent, svid_from_files, Stack};
use spiffe_aws_agent::dev::pki;
use spiffe_aws_agent::dev::rolesanywhere::Fault;

const ORDERS: &str = "spiffe://example.org/service/orders";
const REVIEWS: &str = "spiffe://example.org/service/reviews";

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn leaf_der(file: &str) -> Vec<u8> {
    common::stack::pem_to_der(&std::fs::read_to_string(common::cert(file)).unwrap()).remove(0)
}

/// Checks stdout against what the double issued, and that the double saw `leaf`.
fn assert_issued_to(stack: &Stack, json: &serde_json::Value, leaf: &str) {
    let akid = json["AccessKeyId"].as_str().unwrap();
    let session = stack
        .rolesanywhere
        .session_for_access_key(akid)
        .expect("the double issued these credentials");
    assert_eq!(json["SecretAccessKey"], session.secret_access_key.as_str());
    assert_eq!(json["SessionToken"], session.session_token.as_str());
    let expiration = time::OffsetDateTime::parse(
        json["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("Expiration is RFC 3339");
    let issued = time::OffsetDateTime::from(session.expiration);
    assert!((expiration - issued).whole_seconds().abs() <= 1);
    let calls = stack.rolesanywhere.calls();
    let accepted: Vec<_> = calls.iter().filter(|c| c.status == 201).collect();
    assert_eq!(accepted.len(), 1, "one CreateSession: {calls:?}");
    assert_eq!(
        accepted[0].leaf_sha256_hex.as_deref(),
        Some(sha256_hex(&leaf_der(leaf)).as_str()),
        "signed with {leaf}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_svid_of_each_key_type_with_and_without_intermediates() {
    for (leaf, key, with_intermediate) in [
        ("orders-rsa2048.pem", "orders-rsa2048.key", true),
        ("orders-p256.pem", "orders-p256.key", true),
        ("orders-p384.pem", "orders-p384.key", true),
        (
            "orders-rsa2048-direct.pem",
            "orders-rsa2048-direct.key",
            false,
        ),
        ("orders-p256-direct.pem", "orders-p256-direct.key", false),
        ("orders-p384-direct.pem", "orders-p384-direct.key", false),
    ] {
        let stack = Stack::start(vec![svid_from_files(ORDERS, leaf, key, with_intermediate)]).await;
        let out = stack.credential_process_wl(&[]).await;
        let json = parse_process_output(&out);
        assert_issued_to(&stack, &json, leaf);
        let session = stack
            .rolesanywhere
            .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
            .unwrap();
        assert_eq!(session.spiffe_id.as_deref(), Some(ORDERS), "{leaf}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_of_each_key_type_with_and_without_intermediates() {
    let stack = Stack::start(vec![]).await;
    for (leaf, key, intermediates) in [
        (
            "orders-rsa2048.pem",
            "orders-rsa2048.key",
            Some("intermediate-ca.pem"),
        ),
        (
            "orders-p256.pem",
            "orders-p256.key",
            Some("intermediate-ca.pem"),
        ),
        (
            "orders-p384.pem",
            "orders-p384.key",
            Some("intermediate-ca.pem"),
        ),
        ("orders-p256-fullchain.pem", "orders-p256.sec1.key", None),
        (
            "orders-rsa2048-direct.pem",
            "orders-rsa2048-direct.key",
            None,
        ),
        ("orders-p256-direct.pem", "orders-p256-direct.key", None),
        ("orders-p384-direct.pem", "orders-p384-direct.key", None),
    ] {
        let mut args = vec![
            "credential-process".to_string(),
            "--certificate".into(),
            common::cert(leaf).display().to_string(),
            "--private-key".into(),
            common::cert(key).display().to_string(),
        ];
        if let Some(i) = intermediates {
            args.push("--intermediates".into());
            args.push(common::cert(i).display().to_string());
        }
        args.extend(stack.session_args());
        let json = parse_process_output(&run_agent(args).await);
        let session = stack
            .rolesanywhere
            .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
            .expect("issued by the double");
        assert_eq!(
            json["SessionToken"],
            session.session_token.as_str(),
            "{leaf}"
        );
        let last = stack.rolesanywhere.calls().pop().unwrap();
        assert_eq!(last.status, 201);
        assert_eq!(
            last.leaf_sha256_hex.as_deref(),
            Some(sha256_hex(&leaf_der(leaf)).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_id_flag_selects_among_several_svids() {
    let stack = Stack::start(vec![
        svid_from_files(ORDERS, "orders-p256.pem", "orders-p256.key", true),
        svid_from_files(REVIEWS, "reviews-p256.pem", "reviews-p256.key", true),
    ])
    .await;
    // Default: the first SVID.
    let json = parse_process_output(&stack.credential_process_wl(&[]).await);
    let s = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .unwrap();
    assert_eq!(s.spiffe_id.as_deref(), Some(ORDERS));
    // Asked for: the reviews SVID.
    let json = parse_process_output(&stack.credential_process_wl(&["--spiffe-id", REVIEWS]).await);
    let s = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .unwrap();
    assert_eq!(s.spiffe_id.as_deref(), Some(REVIEWS));
    // Not there: an error listing what is.
    let line = failure_line(
        &stack
            .credential_process_wl(&["--spiffe-id", "spiffe://example.org/nope"])
            .await,
    );
    assert!(
        line.contains("has no SVID with SPIFFE ID") && line.contains(REVIEWS),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_session_name_and_duration_reach_the_service() {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    let json = parse_process_output(
        &stack
            .credential_process_wl(&[
                "--role-session-name",
                "orders-batch",
                "--session-duration",
                "900",
            ])
            .await,
    );
    let s = stack
        .rolesanywhere
        .session_for_access_key(json["AccessKeyId"].as_str().unwrap())
        .unwrap();
    assert_eq!(s.role_session_name, "orders-batch");
    assert_eq!(stack.rolesanywhere.calls()[0].duration_seconds, Some(900));
}

/// Each bad SVID from the Workload API: non-zero exit, one line naming the problem, and no
/// CreateSession attempted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_svids_from_the_workload_api_are_refused_before_any_exchange() {
    for (leaf, key, expected) in [
        (
            "bad-expired.pem",
            "bad-expired.key",
            "expired at 2020-01-01",
        ),
        (
            "bad-not-yet-valid.pem",
            "bad-not-yet-valid.key",
            "not valid until 2099-01-01",
        ),
        (
            "bad-ca-leaf.pem",
            "bad-ca-leaf.key",
            "leaf certificate must not",
        ),
        ("bad-no-uri-san.pem", "bad-no-uri-san.key", "SPIFFE ID"),
        (
            "orders-p256.pem",
            "bad-mismatched.key",
            "does not match the certificate",
        ),
        ("bad-rsa1024.pem", "bad-rsa1024.key", "1024 bits"),
        ("bad-p521.pem", "bad-p521.key", "P-521"),
    ] {
        let svid = svid_from_files(ORDERS, leaf, key, true);
        let stack = Stack::start(vec![svid]).await;
        let out = stack.credential_process_wl(&[]).await;
        assert_eq!(out.status.code(), Some(1), "{leaf}");
        let line = failure_line(&out);
        assert!(line.contains(expected), "{leaf}: {line}");
        assert!(
            stack.rolesanywhere.calls().is_empty(),
            "{leaf}: no CreateSession"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_denial_and_absence_are_explained() {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    stack.workload_api.deny();
    let line = failure_line(&stack.credential_process_wl(&[]).await);
    assert!(
        line.contains("issued no identity") && line.contains("registration entries"),
        "{line}"
    );

    let mut args = vec![
        "credential-process".to_string(),
        "--workload-api-socket".into(),
        format!("unix://{}/missing.sock", stack.dir.path().display()),
    ];
    args.extend(stack.session_args());
    let line = failure_line(&run_agent(args).await);
    assert!(
        line.contains("cannot reach the SPIFFE Workload API") && line.contains("No such file"),
        "{line}"
    );

    let mut args = vec!["credential-process".to_string()];
    args.extend(stack.session_args());
    let out = run_agent(args).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(failure_line(&out).contains("SPIFFE_ENDPOINT_SOCKET"));
}

async fn fault_line(fault: Fault) -> String {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    // Persistent: transient failures are retried until --timeout runs out.
    stack.rolesanywhere.inject(fault, 1000);
    let out = stack.credential_process_wl(&["--timeout", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    failure_line(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_within_the_timeout() {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    let status = |status: u16, error_type: &str| Fault::Status {
        status,
        error_type: error_type.into(),
        message: "try again".into(),
    };
    stack
        .rolesanywhere
        .inject(status(429, "ThrottlingException"), 1);
    stack
        .rolesanywhere
        .inject(status(503, "ServiceUnavailableException"), 1);
    stack.rolesanywhere.inject(Fault::CloseConnection, 1);
    let started = std::time::Instant::now();
    let out = stack.credential_process_wl(&[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = parse_process_output(&out);
    assert_issued_to(&stack, &json, "orders-p256.pem");
    assert_eq!(
        stack.rolesanywhere.calls().len(),
        4,
        "three failures, then success"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // A refusal is not retried.
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    stack
        .rolesanywhere
        .inject(status(403, "AccessDeniedException"), 1000);
    let out = stack.credential_process_wl(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stack.rolesanywhere.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_roles_anywhere_error_class_gives_one_clear_line() {
    let status = |status: u16, error_type: &str, message: &str| Fault::Status {
        status,
        error_type: error_type.into(),
        message: message.into(),
    };
    let line = fault_line(status(
        403,
        "AccessDeniedException",
        "Untrusted signing certificate",
    ))
    .await;
    assert!(
        line.contains("AccessDeniedException: Untrusted signing certificate")
            && line.contains("trust anchor"),
        "{line}"
    );
    let line = fault_line(status(
        400,
        "ValidationException",
        "Invalid durationSeconds",
    ))
    .await;
    assert!(
        line.contains("ValidationException: Invalid durationSeconds"),
        "{line}"
    );
    let line = fault_line(status(429, "ThrottlingException", "Rate exceeded")).await;
    assert!(
        line.contains("throttling") && line.contains("Rate exceeded"),
        "{line}"
    );
    let line = fault_line(status(500, "InternalServerException", "boom")).await;
    assert!(line.contains("HTTP 500") && line.contains("boom"), "{line}");
    let line = fault_line(Fault::GarbageBody).await;
    assert!(
        line.contains("unusable response") && line.contains("not the CreateSession JSON"),
        "{line}"
    );
    let line = fault_line(Fault::EmptyCredentialSet).await;
    assert!(line.contains("credentialSet is missing or empty"), "{line}");
    let line = fault_line(Fault::CloseConnection).await;
    assert!(line.contains("cannot reach Roles Anywhere"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_rejections_by_the_verifying_double() {
    // A certificate from a CA the trust anchor does not hold: a real 403 from verification.
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "untrusted-orders-p256.pem",
        "untrusted-orders-p256.key",
        false,
    )])
    .await;
    let line = failure_line(&stack.credential_process_wl(&[]).await);
    assert!(line.contains("AccessDeniedException"), "{line}");
    assert_eq!(stack.rolesanywhere.calls()[0].status, 403);

    // A role the profile does not allow.
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    let mut args = vec![
        "credential-process".to_string(),
        "--workload-api-socket".into(),
        stack.workload_api.endpoint(),
    ];
    args.extend(
        stack
            .session_args()
            .into_iter()
            .map(|a| a.replace("role/orders", "role/billing-admin")),
    );
    let line = failure_line(&run_agent(args).await);
    assert!(line.contains("Roles Anywhere"), "{line}");
    assert_ne!(stack.rolesanywhere.calls()[0].status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_and_untrusted_tls() {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut args = vec![
        "credential-process".to_string(),
        "--workload-api-socket".into(),
        stack.workload_api.endpoint(),
    ];
    args.extend(stack.session_args().into_iter().map(|a| {
        if a.starts_with("https://localhost:") {
            format!("https://127.0.0.1:{port}")
        } else {
            a
        }
    }));
    let out = run_agent(args).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains("cannot reach Roles Anywhere") && line.contains("refused"),
        "{line}"
    );

    // Without --ca-bundle the double's TLS certificate is not trusted.
    let mut args = vec![
        "credential-process".to_string(),
        "--workload-api-socket".into(),
        stack.workload_api.endpoint(),
    ];
    let session = stack.session_args();
    args.extend(session[..session.len() - 2].iter().cloned());
    let started = std::time::Instant::now();
    let line = failure_line(&run_agent(args).await);
    assert!(
        line.contains("presented a TLS certificate this agent does not trust")
            && line.contains("CA bundle"),
        "{line}"
    );
    // A refused certificate is not a network blip: no retries until --timeout (15 s).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}: {line}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_flags_fail_with_status_2_before_any_io() {
    let stack = Stack::start(vec![svid_from_files(
        ORDERS,
        "orders-p256.pem",
        "orders-p256.key",
        true,
    )])
    .await;
    for (find, replace, expected) in [
        ("role/orders", "user/orders", "--role-arn"),
        (
            "trust-anchor/8a9f",
            "trust-anchor/zz9f",
            "--trust-anchor-arn",
        ),
        ("profile/", "profiles/", "--profile-arn"),
    ] {
        let mut args = vec![
            "credential-process".to_string(),
            "--workload-api-socket".into(),
            stack.workload_api.endpoint(),
        ];
        args.extend(
            stack
                .session_args()
                .into_iter()
                .map(|a| a.replacen(find, replace, 1)),
        );
        let out = run_agent(args).await;
        assert_eq!(out.status.code(), Some(2), "{find}");
        assert!(failure_line(&out).contains(expected), "{find}");
    }
    for extra in [
        vec!["--session-duration", "899"],
        vec!["--session-duration", "43201"],
        vec!["--role-session-name", "a"],
        vec!["--region", "nowhere"],
        vec!["--endpoint", "http://localhost:1"],
    ] {
        let out = stack.credential_process_wl(&extra).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(stack.rolesanywhere.calls().is_empty(), "nothing was sent");
    assert_eq!(
        stack.workload_api.fetch_x509_svid_calls(),
        0,
        "SPIRE was not asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_pki_constants_match_the_files() {
    // The dev binary embeds certs/ at build time; a regenerated PKI must rebuild it.
    assert_eq!(
        pki::ORDERS_P256_PEM,
        std::fs::read_to_string(common::cert("orders-p256.pem")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spiffe_id_session_tags_cannot_carry_is_refused_before_calling_aws() {
    use spiffe_aws_agent::dev::workload_api::SvidIssuer;
    let issuer = SvidIssuer::from_test_intermediate().unwrap();
    let long_id = format!("spiffe://example.org/{}", "a".repeat(250));
    let svid = issuer
        .issue(&long_id, std::time::Duration::from_secs(3600))
        .unwrap();
    let stack = Stack::start(vec![svid]).await;
    let out = stack.credential_process_wl(&[]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = failure_line(&out);
    assert!(
        line.contains("aws:PrincipalTag/x509SAN/URI") && line.contains("271 characters"),
        "{line}"
    );
    assert!(stack.rolesanywhere.calls().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_signing_helper_flags_work_or_say_why_not() {
    let stack = Stack::start(vec![]).await;
    let files = |extra: &[&str]| {
        let mut args = vec![
            "credential-process".to_string(),
            "--certificate".into(),
            common::cert("orders-p256.pem").display().to_string(),
            "--private-key".into(),
            common::cert("orders-p256.key").display().to_string(),
            "--intermediates".into(),
            common::cert("intermediate-ca.pem").display().to_string(),
        ];
        args.extend(stack.session_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // --debug and --with-proxy mean what they mean to the helper; debug logs hold no secret.
    let out = run_agent(files(&["--debug", "--with-proxy"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = parse_process_output(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG"), "debug logging is on: {stderr}");
    for secret in ["SecretAccessKey", "SessionToken"] {
        assert!(
            !stderr.contains(json[secret].as_str().unwrap()),
            "{secret} logged"
        );
    }
    // Flags this build cannot honour fail before any I/O, naming the flag and the reason.
    for (flag, value, reason) in [
        (
            "--cert-selector",
            Some("Key=x509Subject,Value=CN=orders"),
            "Windows and macOS",
        ),
        ("--system-store-name", Some("MY"), "Windows and macOS"),
        (
            "--use-latest-expiring-certificate",
            None,
            "Windows and macOS",
        ),
        ("--tpm-key-password", Some("pw"), "TPM"),
    ] {
        let mut extra = vec![flag];
        extra.extend(value);
        let out = run_agent(files(&extra)).await;
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let line = failure_line(&out);
        assert!(line.contains(flag) && line.contains(reason), "{line}");
    }
    let calls = stack.rolesanywhere.calls().len();
    assert_eq!(calls, 1, "only the --debug run called Roles Anywhere");
    let out = run_agent(vec!["version".into()]).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
}
