//! Signing keys for the tokens Homeroom issues: generated on first start, stored in the
//! directory, published in JWKS (every key that is not retired, so tokens signed with the
//! previous key stay verifiable until they expire). Verification only ever uses keys from
//! this set, looked up by `kid`, with the algorithm the key was made for: never a key named
//! or carried by the token itself (JWT-02/04/05).
//!
//! Signing uses aws-lc key pairs parsed once when the set is built (not per token), and the
//! JWKS document is serialised once per set (the bytes and their `ETag` are served as is).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use homeroom_core::crypto;
use homeroom_directory::{Directory, SigningKey};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("stored key {kid} is unusable: {reason}")]
    Unusable { kid: String, reason: String },
    #[error("directory: {0}")]
    Directory(String),
}

/// A private key, parsed once.
enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// One usable key.
struct LoadedKey {
    alg: Algorithm,
    signer: Signer,
    decoding: DecodingKey,
    status: String,
}

/// The keys in force, loaded from the directory. Rebuilt (not mutated) on rotation.
pub struct KeySet {
    keys: HashMap<String, LoadedKey>,
    /// kid of the current key per algorithm.
    current: HashMap<&'static str, String>,
    jwks: serde_json::Value,
    /// `jwks` serialised once, and its entity tag.
    jwks_body: Bytes,
    jwks_etag: String,
}

/// The DER inside a PEM block with this label (`PRIVATE KEY`, `RSA PRIVATE KEY`).
fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// A strong entity tag for a body (quoted, 128 bits of its SHA-256).
pub fn etag_of(body: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&d[..16]))
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

pub const SUPPORTED_ALGS: [&str; 2] = ["RS256", "ES256"];

fn alg_of(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

/// Generates a new key for `alg` (`RS256`: RSA-2048, `ES256`: P-256).
pub fn generate(alg: &str, status: &str, now: i64) -> Result<SigningKey, KeyError> {
    let kid = format!(
        "{}-{}",
        alg.to_ascii_lowercase(),
        crypto::random_token(9).map_err(|e| KeyError::Generate(e.to_string()))?
    );
    let (private_pem, public_jwk) = match alg {
        "RS256" => {
            use rsa::pkcs8::EncodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| KeyError::Generate(e.to_string()))?
                .to_string();
            let jwk = serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            });
            (pem, jwk)
        }
        "ES256" => {
            use p256::pkcs8::EncodePrivateKey;
            let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
            let pem = key
                .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .map_err(|e| KeyError::Generate(e.to_string()))?
                .to_string();
            let point = p256::EncodedPoint::from(key.public_key());
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(KeyError::Generate("P-256 point not uncompressed".into()));
            };
            let jwk = serde_json::json!({
                "kty": "EC", "use": "sig", "alg": "ES256", "kid": kid, "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            });
            (pem, jwk)
        }
        other => return Err(KeyError::Generate(format!("unsupported algorithm {other}"))),
    };
    Ok(SigningKey {
        kid,
        alg: alg.to_owned(),
        private_pem,
        public_jwk,
        created_at: now,
        status: status.to_owned(),
    })
}

impl KeySet {
    /// Builds the set from stored keys (retired ones are skipped).
    pub fn from_records(records: &[SigningKey]) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        let mut current = HashMap::new();
        let mut published = Vec::new();
        for r in records.iter().filter(|r| r.status != "retired") {
            let unusable = |reason: String| KeyError::Unusable {
                kid: r.kid.clone(),
                reason,
            };
            let alg = alg_of(&r.alg).ok_or_else(|| unusable(format!("algorithm {}", r.alg)))?;
            let (signer, decoding) = match alg {
                Algorithm::RS256 => {
                    let pair = if let Some(der) = pem_der(&r.private_pem, "PRIVATE KEY") {
                        RsaKeyPair::from_pkcs8(&der)
                    } else if let Some(der) = pem_der(&r.private_pem, "RSA PRIVATE KEY") {
                        RsaKeyPair::from_der(&der)
                    } else {
                        return Err(unusable("private key is not an RSA PEM".into()));
                    }
                    .map_err(|e| unusable(e.to_string()))?;
                    let n = r.public_jwk["n"].as_str().unwrap_or_default();
                    let e = r.public_jwk["e"].as_str().unwrap_or_default();
                    let dec = DecodingKey::from_rsa_components(n, e)
                        .map_err(|e| unusable(e.to_string()))?;
                    (Signer::Rsa(pair), dec)
                }
                _ => {
                    let der = pem_der(&r.private_pem, "PRIVATE KEY")
                        .ok_or_else(|| unusable("private key is not a PKCS#8 PEM".into()))?;
                    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .map_err(|e| unusable(e.to_string()))?;
                    let x = r.public_jwk["x"].as_str().unwrap_or_default();
                    let y = r.public_jwk["y"].as_str().unwrap_or_default();
                    // The published key must be the private key's: a mismatch would issue
                    // tokens nobody can verify.
                    let published = [
                        &[4u8][..],
                        &URL_SAFE_NO_PAD.decode(x).unwrap_or_default(),
                        &URL_SAFE_NO_PAD.decode(y).unwrap_or_default(),
                    ]
                    .concat();
                    if pair.public_key().as_ref() != published.as_slice() {
                        return Err(unusable(
                            "published JWK does not match the private key".into(),
                        ));
                    }
                    let dec = DecodingKey::from_ec_components(x, y)
                        .map_err(|e| unusable(e.to_string()))?;
                    (Signer::Ec(pair), dec)
                }
            };
            if r.status == "current" {
                for name in SUPPORTED_ALGS {
                    if name == r.alg {
                        current.insert(name, r.kid.clone());
                    }
                }
            }
            published.push(r.public_jwk.clone());
            keys.insert(
                r.kid.clone(),
                LoadedKey {
                    alg,
                    signer,
                    decoding,
                    status: r.status.clone(),
                },
            );
        }
        // Same order on every instance, whatever order the keys were loaded in.
        published.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        let jwks = serde_json::json!({ "keys": published });
        let jwks_body = Bytes::from(jwks.to_string());
        let jwks_etag = etag_of(&jwks_body);
        Ok(Self {
            keys,
            current,
            jwks,
            jwks_body,
            jwks_etag,
        })
    }

    /// Loads keys from the directory, generating a current key for each supported algorithm
    /// that has none (first start).
    pub async fn load_or_generate(dir: &Directory, now: i64) -> Result<Self, KeyError> {
        let mut records = dir
            .list_signing_keys()
            .await
            .map_err(|e| KeyError::Directory(e.to_string()))?;
        for alg in SUPPORTED_ALGS {
            if !records
                .iter()
                .any(|r| r.alg == alg && r.status == "current")
            {
                let alg_owned = alg.to_owned();
                let key = tokio::task::spawn_blocking(move || generate(&alg_owned, "current", now))
                    .await
                    .map_err(|e| KeyError::Generate(e.to_string()))??;
                dir.insert_signing_key(&key)
                    .await
                    .map_err(|e| KeyError::Directory(e.to_string()))?;
                records.push(key);
            }
        }
        Self::from_records(&records)
    }

    /// Rotation: for each algorithm, `previous` keys retire, `current` becomes `previous`,
    /// `next` (or a fresh key) becomes `current`, and a fresh `next` is generated and
    /// published ahead of use. Returns the new set.
    pub async fn rotate(dir: &Directory, now: i64) -> Result<Self, KeyError> {
        let map = |e: homeroom_directory::DirectoryError| KeyError::Directory(e.to_string());
        let records = dir.list_signing_keys().await.map_err(map)?;
        for alg in SUPPORTED_ALGS {
            for r in records.iter().filter(|r| r.alg == alg) {
                let new_status = match r.status.as_str() {
                    "previous" => "retired",
                    "current" => "previous",
                    "next" => "current",
                    _ => continue,
                };
                dir.set_signing_key_status(&r.kid, new_status)
                    .await
                    .map_err(map)?;
            }
            if !records.iter().any(|r| r.alg == alg && r.status == "next") {
                let k = generate(alg, "current", now)?;
                dir.insert_signing_key(&k).await.map_err(map)?;
            }
            let next = generate(alg, "next", now)?;
            dir.insert_signing_key(&next).await.map_err(map)?;
        }
        let records = dir.list_signing_keys().await.map_err(map)?;
        Self::from_records(&records)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// The JWKS document serialised (built with the set) and its entity tag.
    pub fn jwks_body(&self) -> (&Bytes, &str) {
        (&self.jwks_body, &self.jwks_etag)
    }

    /// Signs `claims` with the current key of `alg` (`RS256` when unknown).
    pub fn sign<T: serde::Serialize>(
        &self,
        alg: &str,
        typ: &str,
        claims: &T,
    ) -> Result<String, KeyError> {
        let name = if alg == "ES256" { "ES256" } else { "RS256" };
        let kid = self.current.get(name).ok_or_else(|| KeyError::Unusable {
            kid: String::new(),
            reason: format!("no current {name} key"),
        })?;
        let key = self.keys.get(kid).ok_or_else(|| KeyError::Unusable {
            kid: kid.clone(),
            reason: "missing".into(),
        })?;
        let failed = |reason: String| KeyError::Unusable {
            kid: kid.clone(),
            reason,
        };
        let mut header = jsonwebtoken::Header::new(key.alg);
        header.kid = Some(kid.clone());
        header.typ = Some(typ.to_owned());
        let header = serde_json::to_vec(&header).map_err(|e| failed(e.to_string()))?;
        let claims = serde_json::to_vec(claims).map_err(|e| failed(e.to_string()))?;
        let mut jwt = URL_SAFE_NO_PAD.encode(header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let rng = SystemRandom::new();
        let signature = match &key.signer {
            Signer::Ec(pair) => pair
                .sign(&rng, jwt.as_bytes())
                .map_err(|e| failed(e.to_string()))?
                .as_ref()
                .to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, jwt.as_bytes(), &mut sig)
                    .map_err(|e| failed(e.to_string()))?;
                sig
            }
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }

    /// Verifies a token we issued: header `kid` must name one of our keys, the header
    /// `alg` must be that key's algorithm, and the signature must verify. Returns the
    /// claims without checking time or audience (callers do, with the broker's clock).
    pub fn verify(&self, token: &str) -> Option<serde_json::Value> {
        if token.len() > 16 * 1024 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid.as_deref()?;
        if header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return None;
        }
        let key = self.keys.get(kid)?;
        if header.alg != key.alg || key.status == "retired" {
            return None;
        }
        let mut v = jsonwebtoken::Validation::new(key.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> KeySet {
        let rs = generate("RS256", "current", 0).unwrap();
        let es = generate("ES256", "current", 0).unwrap();
        KeySet::from_records(&[rs, es]).unwrap()
    }

    #[test]
    fn signs_and_verifies_both_algorithms() {
        let ks = set();
        for alg in SUPPORTED_ALGS {
            let t = ks
                .sign(alg, "JWT", &serde_json::json!({"sub": "a"}))
                .unwrap();
            assert_eq!(ks.verify(&t).unwrap()["sub"], "a");
        }
        assert_eq!(ks.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn refuses_tampered_none_and_foreign_tokens() {
        let ks = set();
        let t = ks
            .sign("RS256", "JWT", &serde_json::json!({"sub": "a"}))
            .unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        // Payload changed.
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"b"}"#);
        assert!(ks.verify(&parts.join(".")).is_none());
        // alg none with our kid.
        let header =
            serde_json::json!({"alg": "none", "kid": jsonwebtoken::decode_header(&t).unwrap().kid});
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            parts[1]
        );
        assert!(ks.verify(&none).is_none());
        // A token from another key set.
        let other = set()
            .sign("RS256", "JWT", &serde_json::json!({"sub": "a"}))
            .unwrap();
        assert!(ks.verify(&other).is_none());
        // HS256 keyed with the public JWK text (key confusion).
        let kid = jsonwebtoken::decode_header(&t).unwrap().kid;
        let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
        h.kid = kid;
        let jwk_text = ks.jwks()["keys"][0].to_string();
        let hs = jsonwebtoken::encode(
            &h,
            &serde_json::json!({"sub": "a"}),
            &jsonwebtoken::EncodingKey::from_secret(jwk_text.as_bytes()),
        )
        .unwrap();
        assert!(ks.verify(&hs).is_none());
        assert!(ks.verify("a.b.c.d").is_none());
        assert!(ks.verify(&"x".repeat(20_000)).is_none());
    }

    #[test]
    fn jwks_bytes_are_the_document_and_the_tag_follows_the_keys() {
        let ks = set();
        let (body, etag) = ks.jwks_body();
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(&parsed, ks.jwks());
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10);
        assert_eq!(etag, etag_of(body));
        // Another key set, another tag.
        assert_ne!(set().jwks_body().1, etag);
    }

    #[test]
    fn pkcs1_rsa_keys_load_and_sign() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let mut rs = generate("RS256", "current", 0).unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&rs.private_pem).unwrap();
        rs.private_pem = key
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        assert!(rs.private_pem.contains("BEGIN RSA PRIVATE KEY"));
        let ks = KeySet::from_records(&[rs]).unwrap();
        let t = ks
            .sign("RS256", "JWT", &serde_json::json!({"sub": "a"}))
            .unwrap();
        assert_eq!(ks.verify(&t).unwrap()["sub"], "a");
    }

    #[test]
    fn unusable_keys_are_refused_when_loaded() {
        // An EC key whose published JWK is another key's: tokens would not verify.
        let mut es = generate("ES256", "current", 0).unwrap();
        es.public_jwk = generate("ES256", "current", 0).unwrap().public_jwk;
        assert!(matches!(
            KeySet::from_records(&[es]),
            Err(KeyError::Unusable { .. })
        ));
        let mut rs = generate("RS256", "current", 0).unwrap();
        rs.private_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
        assert!(matches!(
            KeySet::from_records(&[rs]),
            Err(KeyError::Unusable { .. })
        ));
    }

    #[test]
    fn retired_keys_do_not_verify() {
        let mut rs = generate("RS256", "current", 0).unwrap();
        let ks = KeySet::from_records(std::slice::from_ref(&rs)).unwrap();
        let t = ks
            .sign("RS256", "JWT", &serde_json::json!({"sub": "a"}))
            .unwrap();
        rs.status = "retired".into();
        let ks2 = KeySet::from_records(&[rs]).unwrap();
        assert!(ks2.verify(&t).is_none());
    }
}
