//! Real AWS clients against the STS and VPC Lattice doubles: boto3's STS client (the query
//! protocol, as botocore's model declares it) and botocore's `SigV4Auth` signing Lattice calls
//! with `UNSIGNED-PAYLOAD`, addressed by path and by Host.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use spiffe_aws_agent::dev::aws_services::{
    AwsServicesConfig, AwsServicesDouble, ServiceKind, SessionLookup,
};
use spiffe_aws_agent::dev::rolesanywhere::IssuedSession;

const CLIENT: &str = r#"
import json, sys, urllib.request, urllib.error
import boto3, botocore.exceptions
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

endpoint, akid, secret, token = sys.argv[1:5]
port = endpoint.rsplit(":", 1)[1]
out = {}

def sts(secret_key):
    return boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=akid, aws_secret_access_key=secret_key,
                        aws_session_token=token)

ident = sts(secret).get_caller_identity()
out["sts"] = {k: ident[k] for k in ("Arn", "UserId", "Account")}
try:
    sts(secret + "x").get_caller_identity()
    out["sts_bad_secret"] = "accepted"
except botocore.exceptions.ClientError as e:
    out["sts_bad_secret"] = [e.response["ResponseMetadata"]["HTTPStatusCode"],
                             e.response["Error"]["Code"]]

def lattice(url, host=None):
    headers = {"content-type": "application/json", "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    if host is not None:
        headers["host"] = host
    req = AWSRequest(method="POST", url=url, data=b'{"x": 1}', headers=headers)
    req.context["payload_signing_enabled"] = False
    SigV4Auth(Credentials(akid, secret, token), "vpc-lattice-svcs", "us-east-1").add_auth(req)
    prepared = req.prepare()
    send = urllib.request.Request(url, data=prepared.body, headers=dict(prepared.headers),
                                  method="POST")
    try:
        with urllib.request.urlopen(send) as resp:
            return [resp.status, json.loads(resp.read())]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()]

out["billing_by_path"] = lattice(f"{endpoint}/billing/items?b=2&a=1")
out["rates_by_host"] = lattice(f"http://127.0.0.1:{port}/quote/a%20b",
                               host=f"rates.lattice.local:{port}")
print(json.dumps(out))
"#;

fn session(name: &str) -> IssuedSession {
    IssuedSession {
        access_key_id: format!("ASIACLIENTTEST{}", name.to_ascii_uppercase()),
        secret_access_key: format!("{name}/wJalrXUtnFEMI/K7MDENG+EXAMPLE"),
        session_token: format!("{name}-IQoJb3JpZ2luX2VjEXAMPLE/+="),
        expiration: SystemTime::now() + Duration::from_secs(3600),
        role_arn: format!("arn:aws:iam::123456789012:role/{name}"),
        role_session_name: "30ab".to_owned(),
        assumed_role_arn: format!("arn:aws:sts::123456789012:assumed-role/{name}/30ab"),
        account: "123456789012".to_owned(),
        spiffe_id: Some(format!("spiffe://example.org/service/{name}")),
        leaf_serial_decimal: "12459".to_owned(),
    }
}

async fn run_client(double: &AwsServicesDouble, s: &IssuedSession) -> serde_json::Value {
    let python = common::python();
    let args = [
        double.endpoint(),
        s.access_key_id.clone(),
        s.secret_access_key.clone(),
        s.session_token.clone(),
    ];
    let mut argv = vec!["-c".to_string(), CLIENT.to_string()];
    argv.extend(args);
    let env = vec![
        ("AWS_CONFIG_FILE".to_string(), "/nonexistent".to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            "/nonexistent".to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let out = common::run_client(python, argv, env).await;
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_botocore_sigv4_are_accepted() {
    let orders = session("orders");
    let reviews = session("reviews");
    let all = [orders.clone(), reviews.clone()];
    let lookup: SessionLookup =
        Arc::new(move |akid: &str| all.iter().find(|s| s.access_key_id == akid).cloned());
    let double = AwsServicesDouble::start(AwsServicesConfig::seed(), lookup)
        .await
        .unwrap();

    let out = run_client(&double, &orders).await;
    assert_eq!(out["sts"]["Arn"], orders.assumed_role_arn);
    assert_eq!(out["sts"]["Account"], "123456789012");
    assert!(out["sts"]["UserId"].as_str().unwrap().ends_with(":30ab"));
    assert_eq!(out["sts_bad_secret"][0], 403);
    assert_eq!(out["sts_bad_secret"][1], "SignatureDoesNotMatch");
    assert_eq!(out["billing_by_path"][0], 200, "{out}");
    assert_eq!(out["billing_by_path"][1]["path"], "/billing/items");
    assert_eq!(
        out["billing_by_path"][1]["caller"]["principalTags"]["x509SAN/URI"],
        "spiffe://example.org/service/orders"
    );
    assert_eq!(out["rates_by_host"][0], 200, "{out}");
    assert_eq!(out["rates_by_host"][1]["service"], "rates");

    let out = run_client(&double, &reviews).await;
    assert_eq!(out["sts"]["Arn"], reviews.assumed_role_arn);
    assert_eq!(out["billing_by_path"][0], 403, "{out}");
    assert!(out["billing_by_path"][1]
        .as_str()
        .unwrap()
        .starts_with("AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/reviews/30ab is not authorized to perform: vpc-lattice-svcs:Invoke"));
    assert_eq!(out["rates_by_host"][0], 200, "{out}");

    let calls = double.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.service == ServiceKind::Sts && c.status == 200)
            .count(),
        2
    );
    double.shutdown().await;
}
