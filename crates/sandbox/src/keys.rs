//! RSA signing keys of the emulated IdP: generation, PEM import, the public JWK and RS256
//! signing with the key parsed once. Owns no state beyond the key itself.

use crate::SandboxError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

/// One RSA key pair with its `kid`.
#[derive(Clone)]
pub struct SandboxKeys {
    kid: String,
    pem: String,
    n: String,
    e: String,
    /// The same key parsed once for aws-lc: `jsonwebtoken::encode` re-parses (and re-checks)
    /// an RSA key on every token, which cost more than the signature itself.
    pair: std::sync::Arc<aws_lc_rs::signature::RsaKeyPair>,
}

impl std::fmt::Debug for SandboxKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SandboxKeys {
    /// A fresh 2048-bit RSA key.
    pub fn generate() -> Result<Self, SandboxError> {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        Self::from_key(key)
    }

    /// Imports a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM.
    pub fn from_pem(pem: &str) -> Result<Self, SandboxError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        Self::from_key(key)
    }

    fn from_key(key: RsaPrivateKey) -> Result<Self, SandboxError> {
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SandboxError::Key(e.to_string()))?
            .to_string();
        let der = key
            .to_pkcs8_der()
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der.as_bytes())
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        let n_bytes = key.n().to_bytes_be();
        let digest = Sha256::digest(&n_bytes);
        let kid = digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(Self {
            kid,
            pem,
            n: URL_SAFE_NO_PAD.encode(&n_bytes),
            e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            pair: std::sync::Arc::new(pair),
        })
    }

    /// The key id published in JWKS and set in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 PEM (to persist a demo key).
    pub fn private_pem(&self) -> &str {
        &self.pem
    }

    /// The public key as a JWK (`kty` RSA, `use` sig, `alg` RS256).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// An RS256 JWT of `claims` with this key's `kid` (and `typ` when given), signed with the
    /// key parsed once. `None` only if serialisation or signing fails.
    pub(crate) fn sign_rs256(
        &self,
        typ: Option<&str>,
        claims: &impl serde::Serialize,
    ) -> Option<String> {
        use aws_lc_rs::signature::RSA_PKCS1_SHA256;
        let mut header = serde_json::json!({"alg": "RS256", "kid": self.kid});
        if let Some(t) = typ {
            header["typ"] = serde_json::Value::String(t.to_owned());
        }
        let mut jwt = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).ok()?, &mut jwt);
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                jwt.as_bytes(),
                &mut sig,
            )
            .ok()?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut jwt);
        Some(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_kid() {
        let k = SandboxKeys::generate().unwrap();
        let again = SandboxKeys::from_pem(k.private_pem()).unwrap();
        assert_eq!(k.kid(), again.kid());
        assert_eq!(k.public_jwk()["kty"], "RSA");
        assert!(SandboxKeys::from_pem("not a key").is_err());
    }

    #[test]
    fn rs256_tokens_verify_with_the_published_key() {
        let k = SandboxKeys::generate().unwrap();
        let jwt = k
            .sign_rs256(
                Some("JWT"),
                &serde_json::json!({"sub": "s1", "exp": 4_000_000_000u64}),
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.kid.as_deref(), Some(k.kid()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let dk = jsonwebtoken::DecodingKey::from_rsa_components(&k.n, &k.e).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "s1");
        // One flipped signature byte and it no longer verifies.
        let mut bad = jwt.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&bad, &dk, &v).is_err());
    }
}
