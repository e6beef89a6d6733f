//! The tokens Homeroom issues to apps: ID tokens (OIDC Core §2) and JWT access tokens
//! (RFC 9068, `typ: at+jwt`), and their validation when they come back (userinfo,
//! introspection, `id_token_hint`). Time claims are checked against the broker's clock
//! and required by presence (JWT-06); an access token is active only while its token
//! family is (revocation, code reuse, refresh reuse and logout all delete the family).

use crate::AppState;
use crate::flows::{Family, flows};
use homeroom_core::crypto;
use homeroom_directory::Account;
use serde_json::{Value, json};

/// Which optional claims the scopes release.
pub fn profile_claims(
    account: &Account,
    scope: &[String],
    out: &mut serde_json::Map<String, Value>,
) {
    let has = |s: &str| scope.iter().any(|x| x == s);
    if has("email")
        && let Some(e) = &account.email
    {
        out.insert("email".into(), json!(e));
        out.insert("email_verified".into(), json!(account.email_verified));
    }
    if has("profile") {
        for (k, v) in [
            ("name", &account.name),
            ("given_name", &account.given_name),
            ("family_name", &account.family_name),
            ("preferred_username", &account.username),
        ] {
            if let Some(v) = v {
                out.insert(k.into(), json!(v));
            }
        }
        out.insert(
            "roles".into(),
            json!(
                account
                    .roles
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
            ),
        );
    }
}

/// The public `sid` of a session (OIDC back-channel/front-channel logout), derived from
/// the stored hash so it reveals nothing usable.
pub fn sid_of(session_hash: &str) -> String {
    crypto::sha256_hex(&format!("sid:{session_hash}"))[..32].to_owned()
}

/// Signs an ID token for `family` (alg per client). `extra`: claims computed elsewhere
/// for the granted scopes (the `family` scope's claims, `crate::family::claims`).
pub fn id_token(
    state: &AppState,
    family: &Family,
    account: &Account,
    alg: &str,
    access_token: Option<&str>,
    extra: serde_json::Map<String, Value>,
) -> Result<String, crate::keys::KeyError> {
    let now = state.now();
    let mut c = serde_json::Map::new();
    c.insert("iss".into(), json!(state.settings.issuer));
    c.insert("sub".into(), json!(account.id.as_str()));
    c.insert("aud".into(), json!(family.client_id.as_str()));
    c.insert("azp".into(), json!(family.client_id.as_str()));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + state.settings.id_token_ttl));
    c.insert("auth_time".into(), json!(family.auth_time));
    c.insert("sid".into(), json!(sid_of(&family.session_hash)));
    if let Some(n) = &family.nonce {
        c.insert("nonce".into(), json!(n));
    }
    if let Some(at) = access_token {
        c.insert("at_hash".into(), json!(at_hash(at, alg)));
    }
    profile_claims(account, &family.scope, &mut c);
    for (k, v) in extra {
        c.entry(k).or_insert(v);
    }
    state.keyset().sign(alg, "JWT", &Value::Object(c))
}

/// `at_hash`: left half of the SHA-256 of the access token (both our algs use SHA-256).
fn at_hash(token: &str, _alg: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..16])
}

/// Signs an RFC 9068 access token.
pub fn access_token(
    state: &AppState,
    family: &Family,
    alg: &str,
) -> Result<String, crate::keys::KeyError> {
    let now = state.now();
    let jti =
        crypto::random_token(16).map_err(|e| crate::keys::KeyError::Generate(e.to_string()))?;
    let claims = json!({
        "iss": state.settings.issuer,
        "sub": family.account.as_str(),
        "aud": family.client_id.as_str(),
        "client_id": family.client_id.as_str(),
        "iat": now,
        "exp": now + state.settings.access_token_ttl,
        "auth_time": family.auth_time,
        "jti": jti,
        "scope": family.scope.join(" "),
        "fam": family.id,
        "tenant": family.tenant.as_str(),
    });
    let token = state.keyset().sign(alg, "at+jwt", &claims)?;
    // This instance knows these claims are genuine: its first userinfo or introspection
    // need not verify the signature it just made (the family is still checked every time).
    let exp = now + state.settings.access_token_ttl;
    state
        .caches
        .remember_token(&token, &std::sync::Arc::new(claims), exp);
    Ok(token)
}

fn int_claim(c: &Value, k: &str) -> Option<i64> {
    c.get(k).and_then(Value::as_i64)
}

/// A validated, active access token.
#[derive(Debug, Clone)]
pub struct ActiveToken {
    /// Shared with the verified-token cache (no copy of the claims per request).
    pub claims: crate::cache::Claims,
    pub family: std::sync::Arc<Family>,
}

/// Validates an access token we issued: signature under one of our keys, `typ` at+jwt,
/// `iss`, required numeric `exp`/`iat`, not expired (no leeway: we issued it), and its
/// family still alive.
pub async fn validate_access_token(state: &AppState, token: &str) -> Option<ActiveToken> {
    let claims = match state.caches.verified_token(token, state.now()) {
        Some(c) => c,
        None => {
            let header = jsonwebtoken::decode_header(token).ok()?;
            if !header
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
            {
                return None;
            }
            let claims = state.keyset().verify(token)?;
            if claims.get("iss").and_then(Value::as_str) != Some(state.settings.issuer.as_str()) {
                return None;
            }
            let exp = int_claim(&claims, "exp")?;
            int_claim(&claims, "iat")?;
            if exp <= state.now() {
                return None;
            }
            let claims: crate::cache::Claims = std::sync::Arc::new(claims);
            state.caches.remember_token(token, &claims, exp);
            claims
        }
    };
    let fam = claims.get("fam").and_then(Value::as_str)?;
    let family = flows(state).get_family(fam).await.ok()??;
    if claims.get("client_id").and_then(Value::as_str) != Some(family.client_id.as_str()) {
        return None;
    }
    Some(ActiveToken { claims, family })
}

/// Validates an `id_token_hint`: our signature and issuer; expiry is not required (a hint
/// may be old), but the token must be an ID token we issued (`typ` JWT, has `aud`, `sub`).
pub fn validate_id_token_hint(state: &AppState, token: &str) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    {
        return None;
    }
    let claims = state.keyset().verify(token)?;
    if claims.get("iss").and_then(Value::as_str) != Some(state.settings.issuer.as_str()) {
        return None;
    }
    claims.get("sub").and_then(Value::as_str)?;
    claims.get("aud").and_then(Value::as_str)?;
    Some(claims)
}
