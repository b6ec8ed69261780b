//! `read-certificate-data`: what `aws_signing_helper` v1.4.0 prints for a certificate file,
//! one JSON object without a newline:
//! `{"keyType":"RSA"|"EC"|"","certificateData":<base64 DER>,"serialNumber":<decimal>,
//! "supportedAlgorithms":["<keyType>SHA256","<keyType>SHA384","<keyType>SHA512"]}`.
//! The certificate is the file's first PEM `CERTIFICATE` block; a PKCS#12 file (which the
//! helper cannot read here) gives its end-entity certificate.

use std::path::Path;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::DiagnoseError;
use crate::identity::files::KeyPassword;
use crate::identity::pkcs12;

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// The fields, in `aws_signing_helper`'s order and names.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CertificateData {
    #[serde(rename = "keyType")]
    pub key_type: String,
    #[serde(rename = "certificateData")]
    pub certificate_data: String,
    #[serde(rename = "serialNumber")]
    pub serial_number: String,
    #[serde(rename = "supportedAlgorithms")]
    pub supported_algorithms: Vec<String>,
}

/// Reads the certificate at `path` (PEM, else PKCS#12 opened with `password` or the empty
/// one) and describes it.
pub fn read(path: &Path, password: Option<&KeyPassword>) -> Result<CertificateData, DiagnoseError> {
    let bytes = crate::identity::files::read(path, "certificate")?;
    let der = match CertificateDer::pem_slice_iter(&bytes).next() {
        Some(Ok(cert)) => cert.as_ref().to_vec(),
        Some(Err(e)) => {
            return Err(DiagnoseError::Certificate {
                path: path.display().to_string(),
                reason: format!("bad PEM: {e}"),
            })
        }
        None => {
            let (chain, _) = pkcs12::read(path, password)?;
            chain
                .into_iter()
                .next()
                .ok_or_else(|| DiagnoseError::Certificate {
                    path: path.display().to_string(),
                    reason: "the PKCS#12 file holds no certificate".into(),
                })?
        }
    };
    describe(&der).map_err(|reason| DiagnoseError::Certificate {
        path: path.display().to_string(),
        reason,
    })
}

/// Describes one DER certificate.
pub fn describe(der: &[u8]) -> Result<CertificateData, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let key_type = match cert
        .tbs_certificate
        .subject_pki
        .algorithm
        .algorithm
        .to_id_string()
        .as_str()
    {
        OID_RSA_ENCRYPTION => "RSA",
        OID_EC_PUBLIC_KEY => "EC",
        _ => "",
    };
    Ok(CertificateData {
        key_type: key_type.to_owned(),
        certificate_data: base64::engine::general_purpose::STANDARD.encode(der),
        serial_number: cert.tbs_certificate.serial.to_str_radix(10),
        supported_algorithms: ["SHA256", "SHA384", "SHA512"]
            .iter()
            .map(|d| format!("{key_type}{d}"))
            .collect(),
    })
}

/// The JSON line, as the helper prints it.
pub fn render(data: &CertificateData) -> String {
    // Serializing plain strings cannot fail.
    serde_json::to_string(data).unwrap_or_default()
}
