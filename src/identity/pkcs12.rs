//! PKCS#12 (`.p12`/`.pfx`) files: the certificate, its chain and the private key in one
//! file, as `aws_signing_helper` takes them (`--certificate file.p12` without
//! `--private-key`). Like it, the file is opened with the empty password unless one is given
//! (here with `--pkcs8-password`). Parsing and decryption (legacy 3DES/RC2 and PBES2/AES,
//! MAC with SHA-1 or SHA-256) are the `p12-keystore` crate's.

use std::path::Path;

use rustls_pki_types::PrivateKeyDer;

use super::files::{self, KeyPassword};
use super::key::SecretBytes;
use super::IdentityError;

/// Reads the end-entity certificate, the other certificates of its chain (leaf first) and the
/// private key from a PKCS#12 file.
pub fn read(
    path: &Path,
    password: Option<&KeyPassword>,
) -> Result<(Vec<Vec<u8>>, PrivateKeyDer<'static>), IdentityError> {
    // A PKCS#12 file is no bigger than the PEM files it replaces.
    let data = SecretBytes::new(files::read(path, "PKCS#12 certificate")?);
    let bad = |reason: String| IdentityError::Pkcs12 {
        path: path.display().to_string(),
        reason,
    };
    check_work_factor(&data).map_err(bad)?;
    let store = p12_keystore::KeyStore::from_pkcs12(&data, password.map_or("", |p| p.as_str()))
        .map_err(|e| bad(describe(&e, password.is_some())))?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| {
        bad("it holds no private key with its certificate (a key bag with a localKeyId matching a certificate)".into())
    })?;
    let certificates = chain.chain().iter().map(|c| c.as_der().to_vec()).collect();
    let key = PrivateKeyDer::Pkcs8(chain.key().to_vec().into());
    Ok((certificates, key))
}

/// The most MAC iterations a file may ask for: the file decides how long key derivation
/// runs before the password is even checked (OpenSSL writes 2,048).
const MAX_MAC_ITERATIONS: i32 = 10_000_000;

fn check_work_factor(data: &[u8]) -> Result<(), String> {
    use pkcs8::der::Decode;
    // Not parseable here: p12-keystore reports why.
    let Ok(pfx) = ::pkcs12::pfx::Pfx::from_der(data) else {
        return Ok(());
    };
    match pfx.mac_data {
        Some(mac) if !(1..=MAX_MAC_ITERATIONS).contains(&mac.iterations) => Err(format!(
            "it asks for {} MAC iterations; 1 to {MAX_MAC_ITERATIONS} are accepted",
            mac.iterations
        )),
        _ => Ok(()),
    }
}

/// Says why the file could not be opened, in the operator's terms.
fn describe(e: &p12_keystore::error::Error, password_given: bool) -> String {
    use p12_keystore::error::Error as E;
    match e {
        E::MacError(_) | E::UnpadError if password_given => {
            "the password (--pkcs8-password) is wrong".into()
        }
        E::MacError(_) | E::UnpadError => {
            "it is protected by a password: give it with --pkcs8-password (aws_signing_helper opens PKCS#12 files with the empty password only)".into()
        }
        E::DerError(_) | E::InvalidVersion | E::InvalidData | E::InvalidLength => {
            format!("it is neither a PEM certificate nor a valid PKCS#12 file ({e})")
        }
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_file_is_reported_as_not_pkcs12() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read(&path, None).unwrap_err().to_string();
        assert!(
            e.contains("neither a PEM certificate nor a valid PKCS#12"),
            "{e}"
        );
    }
}
