//! JWT-SVIDs for the doubles: a trust domain's JWT signing authority (what the SPIRE server
//! holds, so the Workload API double can mint JWT-SVIDs), the JWKS that publishes its key (what
//! `FetchJWTBundles` and the OIDC discovery provider serve), and verification of a token
//! against a JWKS (what STS does with an IAM OIDC identity provider's keys, and what
//! `ValidateJWTSVID` does).
//!
//! The product only fetches JWT-SVIDs and never verifies one, so this code shares nothing with
//! it. Verification supports what SPIRE can sign with (`jwt_key_type` ec-p256, ec-p384,
//! rsa-2048, rsa-4096): ES256, ES384 and RS256/RS384/RS512, PS256/PS384/PS512.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{json, Map, Value};

/// The longest token verified (a JWT-SVID is well under 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A trust domain's JWT signing key (ES256, as SPIRE's default `ec-p256`).
pub struct JwtAuthority {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The system random number generator failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a JWT signing key: {0}")]
pub struct JwtAuthorityError(&'static str);

impl JwtAuthority {
    /// A new random P-256 key with a random key ID.
    pub fn generate() -> Result<Self, JwtAuthorityError> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .map_err(|_| JwtAuthorityError("the random number generator failed"))?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|_| JwtAuthorityError("ring refused its own key"))?;
        let mut id = [0u8; 16];
        rng.fill(&mut id)
            .map_err(|_| JwtAuthorityError("the random number generator failed"))?;
        Ok(JwtAuthority {
            key,
            kid: URL_SAFE_NO_PAD.encode(id),
            rng,
        })
    }

    /// The key ID tokens carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256), as SPIRE publishes it.
    pub fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
        let point = self.key.public_key().as_ref();
        json!({
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// Signs `claims` as a compact JWS: header `{"alg":"ES256","kid":…,"typ":"JWT"}`.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(&self.rng, input.as_bytes()).ok()?;
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// A JWT-SVID as SPIRE mints it: `sub`, `aud` (a string when there is one, as go-jose
    /// writes it), `iat`, `exp` and `iss` when the server has a `jwt_issuer`.
    pub fn mint_svid(
        &self,
        spiffe_id: &str,
        audience: &[String],
        issuer: Option<&str>,
        issued_at: SystemTime,
        ttl: Duration,
    ) -> Option<String> {
        let iat = unix(issued_at);
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(spiffe_id));
        claims.insert(
            "aud".into(),
            if audience.len() == 1 {
                json!(audience[0])
            } else {
                json!(audience)
            },
        );
        claims.insert("iat".into(), json!(iat));
        claims.insert("exp".into(), json!(iat + ttl.as_secs() as i64));
        if let Some(iss) = issuer {
            claims.insert("iss".into(), json!(iss));
        }
        self.sign(&Value::Object(claims))
    }
}

/// `{"keys":[…]}` with the authorities' JWKs.
pub fn jwks(authorities: &[&JwtAuthority]) -> String {
    json!({"keys": authorities.iter().map(|a| a.jwk()).collect::<Vec<_>>()}).to_string()
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    #[error("no key with kid {0:?} in the JWKS")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
}

/// A token whose signature verified and which has not expired.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub claims: Map<String, Value>,
}

impl VerifiedJwt {
    /// A string claim.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// `aud` as a list (a string or an array of strings).
    pub fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// The claims of `token` without verifying anything (to find the issuer first, as STS does).
pub fn unverified_claims(token: &str) -> Result<Map<String, Value>, JwtRejection> {
    let parts = split(token)?;
    decode_json(parts[1], "claims")
}

fn split(token: &str) -> Result<Vec<&str>, JwtRejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtRejection::Malformed("it is too long".into()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(JwtRejection::Malformed(
            "it does not have three dot-separated parts".into(),
        ));
    }
    Ok(parts)
}

fn decode_json(part: &str, what: &str) -> Result<Map<String, Value>, JwtRejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtRejection::Malformed(format!("the {what} are not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtRejection::Malformed(format!(
            "the {what} are not a JSON object"
        ))),
    }
}

/// Verifies `token`'s signature with the key of its `kid` in `jwks_json` (keys whose `use`
/// is absent or `jwt-svid`; a SPIFFE bundle's `x509-svid` keys are skipped) and that it has
/// not expired at `now`. The audience is the caller's to check.
pub fn verify(token: &str, jwks_json: &str, now: SystemTime) -> Result<VerifiedJwt, JwtRejection> {
    let parts = split(token)?;
    let header = decode_json(parts[0], "header")?;
    let claims = decode_json(parts[1], "claims")?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|_| JwtRejection::Malformed("the signature is not base64url".into()))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtRejection::Malformed("the header has no kid".into()))?;
    let jwks: Value = serde_json::from_str(jwks_json).unwrap_or(Value::Null);
    let key = jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|k| {
            matches!(
                k.get("use").and_then(Value::as_str),
                None | Some("jwt-svid")
            )
        })
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
        .ok_or_else(|| JwtRejection::UnknownKey(kid.to_owned()))?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    if !verify_with_jwk(key, alg, signed.as_bytes(), &signature) {
        return Err(JwtRejection::BadSignature);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| JwtRejection::Malformed("the claims have no numeric exp".into()))?;
    let now = unix(now);
    if exp <= now {
        return Err(JwtRejection::Expired { exp, now });
    }
    Ok(VerifiedJwt { claims })
}

fn b64_field(key: &Value, name: &str) -> Option<Vec<u8>> {
    key.get(name)
        .and_then(Value::as_str)
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
}

/// Checks `sig` over `msg` with a JWK, for the `alg` the token names (which must fit the key).
fn verify_with_jwk(key: &Value, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
    let kty = key.get("kty").and_then(Value::as_str);
    let crv = key.get("crv").and_then(Value::as_str);
    match (kty, alg) {
        (Some("EC"), "ES256" | "ES384") => {
            let (algorithm, size, want_crv): (&dyn signature::VerificationAlgorithm, usize, _) =
                match alg {
                    "ES256" => (&signature::ECDSA_P256_SHA256_FIXED, 32, "P-256"),
                    _ => (&signature::ECDSA_P384_SHA384_FIXED, 48, "P-384"),
                };
            let (Some(x), Some(y)) = (b64_field(key, "x"), b64_field(key, "y")) else {
                return false;
            };
            if crv != Some(want_crv) || x.len() != size || y.len() != size {
                return false;
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            signature::UnparsedPublicKey::new(algorithm, point)
                .verify(msg, sig)
                .is_ok()
        }
        (Some("RSA"), _) => {
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return false,
            };
            let (Some(n), Some(e)) = (b64_field(key, "n"), b64_field(key, "e")) else {
                return false;
            };
            signature::RsaPublicKeyComponents { n, e }
                .verify(params, msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn a_minted_svid_verifies_and_every_tampering_is_caught() {
        let authority = JwtAuthority::generate().unwrap();
        let jwks = super::jwks(&[&authority]);
        let aud = vec!["sts.amazonaws.com".to_owned()];
        let token = authority
            .mint_svid(
                "spiffe://example.org/a",
                &aud,
                Some("https://i"),
                now(),
                Duration::from_secs(300),
            )
            .unwrap();
        let v = verify(&token, &jwks, now()).unwrap();
        assert_eq!(v.str_claim("sub"), Some("spiffe://example.org/a"));
        assert_eq!(v.audiences(), vec!["sts.amazonaws.com"]);
        assert_eq!(v.str_claim("iss"), Some("https://i"));

        // Claims swapped under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            json!({"sub": "spiffe://example.org/admin", "aud": "sts.amazonaws.com", "exp": 4_000_000_000i64}).to_string(),
        );
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            verify(&forged, &jwks, now()).unwrap_err(),
            JwtRejection::BadSignature
        );
        // Another authority's key under the same kid.
        let other = JwtAuthority::generate().unwrap();
        let mut other_jwk = other.jwk();
        other_jwk["kid"] = json!(authority.kid());
        let other_jwks = json!({"keys": [other_jwk]}).to_string();
        assert_eq!(
            verify(&token, &other_jwks, now()).unwrap_err(),
            JwtRejection::BadSignature
        );
        // Unknown kid, and x509-svid keys are not JWT keys.
        assert!(matches!(
            verify(&token, &super::jwks(&[&other]), now()),
            Err(JwtRejection::UnknownKey(_))
        ));
        let mut x509_use = authority.jwk();
        x509_use["use"] = json!("x509-svid");
        let x509_jwks = json!({"keys": [x509_use]}).to_string();
        assert!(matches!(
            verify(&token, &x509_jwks, now()),
            Err(JwtRejection::UnknownKey(_))
        ));
        // alg none is never accepted.
        let none_header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": authority.kid()}).to_string());
        let none = format!("{}.{}.", none_header, parts[1]);
        assert!(verify(&none, &jwks, now()).is_err());
        // Expired.
        let old = authority
            .mint_svid(
                "spiffe://example.org/a",
                &aud,
                None,
                now() - Duration::from_secs(600),
                Duration::from_secs(300),
            )
            .unwrap();
        assert!(matches!(
            verify(&old, &jwks, now()),
            Err(JwtRejection::Expired { .. })
        ));
        assert!(matches!(
            verify("a.b", &jwks, now()),
            Err(JwtRejection::Malformed(_))
        ));
    }
}
