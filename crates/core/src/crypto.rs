//! Randomness, hashing and comparison of secrets. Every session id, code, state, nonce,
//! PKCE verifier and token comes from [`random_token`]; every secret comparison goes
//! through [`ct_eq`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Error when the operating system cannot supply randomness. Nothing secure can continue.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// `n` random bytes from the OS.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, RandomError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}

/// A URL-safe token carrying `bytes * 8` bits of entropy (use 32 for 256 bits).
pub fn random_token(bytes: usize) -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes(bytes)?))
}

/// Lower-case hex SHA-256 of a string: how secrets (codes, refresh tokens, client secrets)
/// are stored and looked up, so the store never holds a usable secret.
pub fn sha256_hex(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(input.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// base64url(SHA-256(input)), no padding: the PKCE S256 transform (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Constant-time equality for secrets of any length (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A PKCE code verifier is 43-128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
pub fn is_valid_pkce_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_long_enough() {
        let a = random_token(32).unwrap();
        let b = random_token(32).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"demo-secret", b"demo-secret"));
        assert!(!ct_eq(b"demo-secret", b"demo-secreT"));
        assert!(!ct_eq(b"demo-secret", b"demo"));
    }

    #[test]
    fn verifier_rules() {
        assert!(is_valid_pkce_verifier(&"a".repeat(43)));
        assert!(!is_valid_pkce_verifier(&"a".repeat(42)));
        assert!(!is_valid_pkce_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn sha256_hex_is_stable() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
