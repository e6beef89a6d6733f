//! RSA signing keys of the emulated IdP: generation, PEM import, the public JWK and the
//! `jsonwebtoken` encoding key. Owns no state beyond the key itself.

use crate::SandboxError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
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
    encoding: EncodingKey,
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
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
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
            encoding,
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

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
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
}
