//! The `credential_process` document, the format AWS SDKs read from a `credential_process`
//! command: `{"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}`.
//!
//! Printed by the one-shot `credential-process` and served by the agent socket (its fast
//! path), so both render it here.

use serde::Serialize;

use crate::rolesanywhere::Credentials;

/// The `credential_process` document. Field order is the documented one.
#[derive(Serialize)]
struct ProcessOutput<'a> {
    #[serde(rename = "Version")]
    version: u8,
    #[serde(rename = "AccessKeyId")]
    access_key_id: &'a str,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: &'a str,
    #[serde(rename = "SessionToken")]
    session_token: &'a str,
    #[serde(rename = "Expiration")]
    expiration: String,
}

/// Renders `creds` as the `credential_process` JSON (one line, no trailing newline).
pub fn render(creds: &Credentials) -> String {
    let out = ProcessOutput {
        version: 1,
        access_key_id: &creds.access_key_id,
        secret_access_key: &creds.secret_access_key,
        session_token: &creds.session_token,
        expiration: crate::display::aws_time(creds.expiration),
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}
