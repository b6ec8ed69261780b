//! The web-identity path's doubles: the Workload API double (which mints JWT-SVIDs with its
//! trust domain key) and the STS double with an IAM OIDC identity provider for that trust
//! domain, whose JWKS is the Workload API double's JWT bundle.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use spiffe_aws_agent::dev::aws_services::{
    AwsServicesConfig, AwsServicesDouble, OidcProvider, RoleTrust,
};
use spiffe_aws_agent::dev::pki;
use spiffe_aws_agent::dev::rolesanywhere::{
    RolesAnywhereDouble, DEV_ROLE_ARN_ORDERS, DEV_ROLE_ARN_REVIEWS,
};
use spiffe_aws_agent::dev::workload_api::{SvidEntry, WorkloadApiDouble, DEV_JWT_ISSUER};

use super::stack::run_agent;

pub const ORDERS: &str = "spiffe://example.org/service/orders";
pub const REVIEWS: &str = "spiffe://example.org/service/reviews";
/// The client ID registered with the OIDC provider, and the audience asked for.
pub const AUDIENCE: &str = "sts.amazonaws.com";

/// The provider STS trusts for the Workload API double's trust domain: orders may assume
/// the orders role, reviews the reviews role.
pub fn provider(issuer: &str, jwks: String) -> OidcProvider {
    OidcProvider {
        issuer: issuer.to_owned(),
        client_ids: vec![AUDIENCE.to_owned()],
        jwks,
        trusted_roles: vec![
            RoleTrust {
                role_arn: DEV_ROLE_ARN_ORDERS.to_owned(),
                subject: ORDERS.to_owned(),
            },
            RoleTrust {
                role_arn: DEV_ROLE_ARN_REVIEWS.to_owned(),
                subject: REVIEWS.to_owned(),
            },
        ],
    }
}

pub struct JwtStack {
    pub dir: tempfile::TempDir,
    pub workload_api: WorkloadApiDouble,
    pub aws: AwsServicesDouble,
    /// The STS double's TLS CA, for `--ca-bundle`.
    pub ca_bundle: PathBuf,
}

impl JwtStack {
    pub async fn start(svids: Vec<SvidEntry>) -> JwtStack {
        let dir = tempfile::tempdir().expect("temp dir");
        let workload_api =
            WorkloadApiDouble::start(dir.path().join("agent.sock"), svids, pki::root_bundle_der())
                .await
                .expect("workload API double");
        let mut config = AwsServicesConfig::seed();
        config.oidc_providers = vec![provider(DEV_JWT_ISSUER, workload_api.jwt_bundle())];
        let aws = AwsServicesDouble::start(config, Arc::new(|_: &str| None))
            .await
            .expect("AWS services double");
        let ca_bundle = dir.path().join("tls-ca.pem");
        std::fs::write(&ca_bundle, RolesAnywhereDouble::ca_pem()).expect("write CA bundle");
        JwtStack {
            dir,
            workload_api,
            aws,
            ca_bundle,
        }
    }

    /// `jwt-credential-process` flags for `role_arn` against the doubles.
    pub fn args(&self, role_arn: &str) -> Vec<String> {
        vec![
            "jwt-credential-process".into(),
            "--workload-api-addr".into(),
            self.workload_api.endpoint(),
            "--audience".into(),
            AUDIENCE.into(),
            "--role-arn".into(),
            role_arn.into(),
            "--endpoint".into(),
            self.aws.https_endpoint(),
            "--ca-bundle".into(),
            self.ca_bundle.display().to_string(),
        ]
    }

    /// Runs `jwt-credential-process` for the orders role plus `extra`.
    pub async fn run(&self, extra: &[&str]) -> Output {
        let mut args = self.args(DEV_ROLE_ARN_ORDERS);
        args.extend(extra.iter().map(|s| s.to_string()));
        run_agent(args).await
    }
}
