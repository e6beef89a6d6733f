//! Generic OpenID Connect relying party: the machinery every OIDC-speaking upstream
//! (generic, Google, Entra) runs on, plus the generic adapter [`OidcProvider`].
//!
//! This module owns lazy discovery (metadata and JWKS fetched on first use and cached),
//! the authorization URL, the code exchange (with the pipeline's PKCE verifier) and the
//! whole ID-token verification of OIDC Core §3.1.3.7: signature over an allow-list of
//! asymmetric algorithms with keys from the upstream's JWKS only (never `none`, never
//! `HS*`, never `oct` keys; RP-04, JWT-08), one rate-limited JWKS re-fetch when the `kid`
//! is unknown, issuer, audience / `azp`, `exp` / `iat` / `nbf` with explicit skew, `nonce`
//! and `sub` (RP-03, RP-05), RFC 9207's callback `iss` (RP-06) and the userinfo `sub`
//! check. Each failure maps to its own catalogue variant.
//!
//! Verification is done here with `jsonwebtoken` on keys we fetched ourselves rather than
//! with openidconnect's verifier, because Entra's templated issuer and the distinct error
//! codes the pipeline needs cannot be expressed through that verifier. It never decides
//! policy (tenant, domain, account linking): the kind-specific adapters and the broker do.

use crate::http::{HttpClient, HttpResponse};
use crate::{
    BeginLogin, Callback, Provider, ProviderError, ProviderKind, RedirectLogin, UpstreamFlow,
};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use homeroom_core::identity::redact_claims;
use homeroom_core::{Clock, LoginError, ProviderId, UpstreamIdentity};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// JSON object of claims.
pub type Claims = Map<String, Value>;

/// Cached JWKS are re-fetched after this many seconds even without an unknown `kid`.
pub const JWKS_MAX_AGE_SECS: i64 = 3600;
/// At most one forced JWKS re-fetch (unknown `kid`) per this many seconds.
pub const JWKS_REFRESH_INTERVAL_SECS: i64 = 60;
/// ID tokens longer than this are refused before any parsing (RP-12).
pub const MAX_ID_TOKEN_LEN: usize = 64 * 1024;
/// Only this many keys of a JWKS are considered (a JWKS of 10,000 keys is cut short).
pub const MAX_JWKS_KEYS: usize = 64;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// Configuration of a generic OIDC provider (`kind = "oidc"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The upstream's issuer identifier; ID tokens' `iss` must equal it byte for byte, and
    /// so must the discovery document's `issuer`. Absolute `https` URL (http on loopback).
    pub issuer: String,
    /// Our client id at the upstream; required in the ID token's `aud`.
    pub client_id: String,
    /// Our client secret at the upstream (required: Homeroom is a confidential client).
    pub client_secret: String,
    /// Scopes requested; must include `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Discovery document URL, when not `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Also call the userinfo endpoint and merge its claims (its `sub` must match).
    #[serde(default)]
    pub use_userinfo: bool,
    /// Whether this upstream is authoritative for email addresses: an email counts as
    /// verified only when this is true AND the claim `email_verified` is `true`.
    #[serde(default)]
    pub trust_email: bool,
    /// Allowed clock skew for `exp`, `iat` and `nbf`, in seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Token-endpoint client authentication.
    #[serde(default)]
    pub token_auth: TokenAuth,
    /// Total timeout of each request to this upstream, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

pub(crate) fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
pub(crate) fn default_skew() -> u64 {
    60
}
pub(crate) fn default_timeout() -> u64 {
    5
}

/// How an ID token's `iss` is judged.
#[derive(Debug, Clone)]
pub(crate) enum IssuerRule {
    /// `iss` must equal one of these strings exactly (the first is the canonical one).
    OneOf(Vec<String>),
    /// Entra v2.0: `iss` must equal `{authority}/{tid}/v2.0` with the token's own `tid`.
    EntraTemplate { authority: String },
}

impl IssuerRule {
    fn accepts(&self, iss: &str, claims: &Claims) -> bool {
        match self {
            IssuerRule::OneOf(list) => list.iter().any(|i| i == iss),
            IssuerRule::EntraTemplate { authority } => {
                let Some(tid) = claims.get("tid").and_then(Value::as_str) else {
                    return false;
                };
                if tid.is_empty() || iss.contains('{') || tid.contains(['{', '/', '}']) {
                    return false;
                }
                iss == format!("{authority}/{tid}/v2.0")
            }
        }
    }
}

/// Everything the engine needs, already validated by `config`.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// Display name, used in catalogue entries (`UpstreamTimeout { provider }` ...).
    pub provider_name: String,
    pub issuer_rule: IssuerRule,
    pub discovery_url: String,
    /// The discovery document's `issuer` must be one of these (None: not checked).
    pub discovery_issuers: Option<Vec<String>>,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub token_auth: TokenAuth,
    pub clock_skew: i64,
    pub use_userinfo: bool,
    /// Extra authorization-request parameters (Google `hd`).
    pub extra_auth_params: Vec<(String, String)>,
    /// Fixed endpoints used instead of a discovery document (upstreams that publish none,
    /// like GG4L); `discovery_url` is then never fetched.
    pub static_metadata: Option<Metadata>,
    /// Also accept a token whose `client_id` claim names us when its `aud` does not
    /// (GG4L documents `aud` as "the hostname that processed the request").
    pub client_id_claim_as_audience: bool,
}

/// The parts of a discovery document the engine uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
}

/// The verified result of a callback: ID-token claims and, if asked for, userinfo.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedLogin {
    pub claims: Claims,
    pub userinfo: Option<Claims>,
    /// The access token of the exchange, for adapters that call proprietary APIs
    /// (ClassLink `/v2/my/info`). Never logged, never stored.
    pub access_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    P256,
    P384,
}

struct Key {
    kid: Option<String>,
    alg: Option<String>,
    family: KeyFamily,
    decoding: DecodingKey,
}

type KeySet = Arc<Vec<Key>>;

#[derive(Default)]
struct KeyCache {
    keys: Option<KeySet>,
    fetched_at: i64,
    last_forced: Option<i64>,
}

enum KeyChoice {
    Found(usize),
    UnknownKid,
    Ambiguous,
}

/// The OIDC relying-party engine shared by the generic, Google and Entra adapters.
pub(crate) struct OidcEngine {
    cfg: EngineConfig,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    /// Discovery cache; the lock is held across the first fetch so concurrent first logins
    /// fetch once. Failures are not cached.
    metadata: tokio::sync::Mutex<Option<Arc<Metadata>>>,
    /// JWKS cache; held across a fetch for the same single-flight reason.
    keys: tokio::sync::Mutex<KeyCache>,
}

fn refuse(error: LoginError, detail: impl Into<String>) -> ProviderError {
    ProviderError::new(error, detail)
}

fn token_invalid(reason: &str) -> ProviderError {
    refuse(
        LoginError::TokenInvalid {
            reason: reason.to_owned(),
        },
        reason,
    )
}

fn allowed_alg(alg: &str) -> Option<(Algorithm, KeyFamily)> {
    Some(match alg {
        "RS256" => (Algorithm::RS256, KeyFamily::Rsa),
        "RS384" => (Algorithm::RS384, KeyFamily::Rsa),
        "RS512" => (Algorithm::RS512, KeyFamily::Rsa),
        "PS256" => (Algorithm::PS256, KeyFamily::Rsa),
        "ES256" => (Algorithm::ES256, KeyFamily::P256),
        "ES384" => (Algorithm::ES384, KeyFamily::P384),
        _ => return None,
    })
}

fn num_claim(claims: &Claims, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// Short, printable excerpt of an upstream body for trace details.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).replace(['\n', '\r'], " ")
}

impl OidcEngine {
    pub(crate) fn new(cfg: EngineConfig, http: HttpClient, clock: Arc<dyn Clock>) -> Self {
        Self {
            cfg,
            http,
            clock,
            metadata: tokio::sync::Mutex::new(None),
            keys: tokio::sync::Mutex::new(KeyCache::default()),
        }
    }

    fn name(&self) -> &str {
        &self.cfg.provider_name
    }

    fn unavailable(&self, detail: impl Into<String>) -> ProviderError {
        refuse(
            LoginError::UpstreamUnavailable {
                provider: self.name().to_owned(),
            },
            detail,
        )
    }

    /// The discovery document, fetched on first use and cached for the process.
    pub(crate) async fn metadata(&self) -> Result<Arc<Metadata>, ProviderError> {
        let mut guard = self.metadata.lock().await;
        if let Some(md) = guard.as_ref() {
            return Ok(md.clone());
        }
        if let Some(md) = &self.cfg.static_metadata {
            let md = Arc::new(md.clone());
            *guard = Some(md.clone());
            return Ok(md);
        }
        let resp = self
            .http
            .get(&self.cfg.discovery_url, None)
            .await
            .map_err(|e| e.into_provider_error(self.name()))?;
        if !resp.is_success() {
            return Err(self.unavailable(format!("discovery answered HTTP {}", resp.status)));
        }
        let md: Metadata = serde_json::from_slice(&resp.body)
            .map_err(|e| self.unavailable(format!("discovery document unreadable: {e}")))?;
        if let Some(accepted) = &self.cfg.discovery_issuers
            && !accepted.contains(&md.issuer)
        {
            return Err(refuse(
                LoginError::IssuerInvalid,
                format!(
                    "discovery issuer {:?} is not the configured issuer {:?}",
                    md.issuer, accepted
                ),
            ));
        }
        for (what, u) in [
            ("authorization_endpoint", &md.authorization_endpoint),
            ("token_endpoint", &md.token_endpoint),
            ("jwks_uri", &md.jwks_uri),
        ] {
            if url::Url::parse(u).is_err() {
                return Err(self.unavailable(format!("discovery {what} is not a URL")));
            }
        }
        let md = Arc::new(md);
        *guard = Some(md.clone());
        Ok(md)
    }

    /// The authorization URL: `response_type=code`, scopes, state, nonce, PKCE S256, and
    /// `prompt` / `login_hint` passed through, plus any kind-specific parameters.
    pub(crate) async fn authorize_url(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        let md = self.metadata().await?;
        let mut url = url::Url::parse(&md.authorization_endpoint)
            .map_err(|e| self.unavailable(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.cfg.client_id)
                .append_pair("redirect_uri", &req.redirect_uri)
                .append_pair("scope", &self.cfg.scopes.join(" "))
                .append_pair("state", &req.state)
                .append_pair("nonce", &req.nonce)
                .append_pair("code_challenge", &req.pkce_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(p) = &req.prompt {
                q.append_pair("prompt", p);
            }
            if let Some(h) = &req.login_hint {
                q.append_pair("login_hint", h);
            }
            for (k, v) in &self.cfg.extra_auth_params {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Runs the callback: upstream error, RFC 9207 `iss` (judged by `callback_iss_ok`),
    /// code exchange, ID-token verification and optional userinfo.
    pub(crate) async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
        callback_iss_ok: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<VerifiedLogin, ProviderError> {
        if let Some(error) = &cb.error {
            let detail = cb.error_description.clone().unwrap_or_default();
            return Err(refuse(
                LoginError::UpstreamDenied {
                    provider: self.name().to_owned(),
                    error: error.clone(),
                },
                detail,
            ));
        }
        if let Some(iss) = &cb.iss
            && !callback_iss_ok(iss)
        {
            return Err(refuse(
                LoginError::IssuerMismatch,
                format!("callback iss {iss:?}"),
            ));
        }
        let code = cb
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| token_invalid("callback carried no authorization code"))?;
        let md = self.metadata().await?;
        let tokens = self.exchange(&md, code, flow).await?;
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| token_invalid("token response has no id_token"))?;
        let claims = self.verify_id_token(id_token, &flow.nonce).await?;
        let access_token = tokens
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let userinfo = if self.cfg.use_userinfo {
            let access = access_token
                .as_deref()
                .ok_or_else(|| token_invalid("token response has no access_token"))?;
            Some(self.userinfo(&md, access, &claims).await?)
        } else {
            None
        };
        Ok(VerifiedLogin {
            claims,
            userinfo,
            access_token,
        })
    }

    /// Redeems the code with the PKCE verifier (RP-07: an injected code fails here).
    async fn exchange(
        &self,
        md: &Metadata,
        code: &str,
        flow: &UpstreamFlow,
    ) -> Result<Claims, ProviderError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", flow.redirect_uri.as_str()),
            ("code_verifier", flow.pkce_verifier.as_str()),
        ];
        let basic = match self.cfg.token_auth {
            TokenAuth::ClientSecretBasic => {
                Some((self.cfg.client_id.as_str(), self.cfg.client_secret.as_str()))
            }
            TokenAuth::ClientSecretPost => {
                form.push(("client_id", &self.cfg.client_id));
                form.push(("client_secret", &self.cfg.client_secret));
                None
            }
        };
        redeem_code(&self.http, self.name(), &md.token_endpoint, &form, basic).await
    }

    async fn fetch_jwks(&self) -> Result<KeySet, ProviderError> {
        let md = self.metadata().await?;
        let resp = self
            .http
            .get(&md.jwks_uri, None)
            .await
            .map_err(|e| e.into_provider_error(self.name()))?;
        if !resp.is_success() {
            return Err(self.unavailable(format!("jwks_uri answered HTTP {}", resp.status)));
        }
        let v: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| self.unavailable(format!("JWKS unreadable: {e}")))?;
        let list = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| self.unavailable("JWKS has no keys array"))?;
        let mut keys = Vec::new();
        for k in list.iter().take(MAX_JWKS_KEYS) {
            let s = |name: &str| k.get(name).and_then(Value::as_str).map(str::to_owned);
            // Only asymmetric signing keys: `oct` (and anything else) is skipped (JWT-08).
            let family = match (s("kty").as_deref(), s("crv").as_deref()) {
                (Some("RSA"), _) => KeyFamily::Rsa,
                (Some("EC"), Some("P-256")) => KeyFamily::P256,
                (Some("EC"), Some("P-384")) => KeyFamily::P384,
                _ => continue,
            };
            if s("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
                continue;
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            keys.push(Key {
                kid: s("kid"),
                alg: s("alg"),
                family,
                decoding,
            });
        }
        Ok(Arc::new(keys))
    }

    async fn current_keys(&self) -> Result<KeySet, ProviderError> {
        let mut cache = self.keys.lock().await;
        let now = self.clock.now();
        if let Some(k) = &cache.keys
            && now - cache.fetched_at < JWKS_MAX_AGE_SECS
        {
            return Ok(k.clone());
        }
        let keys = self.fetch_jwks().await?;
        cache.keys = Some(keys.clone());
        cache.fetched_at = now;
        Ok(keys)
    }

    /// Re-fetches the JWKS after an unknown `kid`, at most once per
    /// [`JWKS_REFRESH_INTERVAL_SECS`]; `None` when rate-limited.
    async fn refresh_keys(&self, seen: &KeySet) -> Result<Option<KeySet>, ProviderError> {
        let mut cache = self.keys.lock().await;
        if let Some(k) = &cache.keys
            && !Arc::ptr_eq(k, seen)
        {
            return Ok(Some(k.clone()));
        }
        let now = self.clock.now();
        if cache
            .last_forced
            .is_some_and(|t| now - t < JWKS_REFRESH_INTERVAL_SECS)
        {
            return Ok(None);
        }
        cache.last_forced = Some(now);
        let keys = self.fetch_jwks().await?;
        cache.keys = Some(keys.clone());
        cache.fetched_at = now;
        Ok(Some(keys))
    }

    fn choose(keys: &[Key], alg: &str, family: KeyFamily, kid: Option<&str>) -> KeyChoice {
        let fits = |k: &Key| k.family == family && k.alg.as_deref().is_none_or(|a| a == alg);
        let candidates: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| fits(k))
            .map(|(i, _)| i)
            .collect();
        match kid {
            Some(kid) => {
                if let Some(i) = candidates
                    .iter()
                    .copied()
                    .find(|&i| keys[i].kid.as_deref() == Some(kid))
                {
                    KeyChoice::Found(i)
                } else if candidates.len() == 1 && keys[candidates[0]].kid.is_none() {
                    KeyChoice::Found(candidates[0])
                } else {
                    KeyChoice::UnknownKid
                }
            }
            None if candidates.len() == 1 => KeyChoice::Found(candidates[0]),
            None if candidates.is_empty() => KeyChoice::UnknownKid,
            None => KeyChoice::Ambiguous,
        }
    }

    /// Verifies an ID token's signature and claims; returns its claims.
    pub(crate) async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
    ) -> Result<Claims, ProviderError> {
        self.verify_jwt(token, Some(nonce)).await
    }

    /// Verifies a signed JWT exactly like an ID token (signature on the upstream's keys,
    /// issuer, audience, `exp`/`iat`/`nbf`, `sub`); `nonce: None` is for OAuth-only
    /// upstreams whose tokens carry no nonce (GG4L's `auth_token`).
    pub(crate) async fn verify_jwt(
        &self,
        token: &str,
        nonce: Option<&str>,
    ) -> Result<Claims, ProviderError> {
        if token.len() > MAX_ID_TOKEN_LEN {
            return Err(token_invalid("ID token too large"));
        }
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err(token_invalid("ID token is not a three-part JWS"));
        }
        let header: Value = URL_SAFE_NO_PAD
            .decode(parts[0])
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| token_invalid("ID token header unreadable"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let Some((algorithm, family)) = allowed_alg(alg) else {
            return Err(refuse(
                LoginError::SignatureInvalid,
                format!("algorithm {alg:?} not allowed"),
            ));
        };
        let kid = header.get("kid").and_then(Value::as_str);

        let mut keys = self.current_keys().await?;
        let index = match Self::choose(&keys, alg, family, kid) {
            KeyChoice::Found(i) => i,
            KeyChoice::Ambiguous => {
                return Err(refuse(
                    LoginError::SignatureInvalid,
                    "no kid and several candidate keys",
                ));
            }
            KeyChoice::UnknownKid => match self.refresh_keys(&keys).await? {
                Some(fresh) => {
                    keys = fresh;
                    match Self::choose(&keys, alg, family, kid) {
                        KeyChoice::Found(i) => i,
                        _ => {
                            return Err(refuse(
                                LoginError::SignatureInvalid,
                                format!("no key for kid {kid:?} even after refreshing the JWKS"),
                            ));
                        }
                    }
                }
                None => {
                    return Err(refuse(
                        LoginError::SignatureInvalid,
                        format!("no key for kid {kid:?}; JWKS refresh rate-limited"),
                    ));
                }
            },
        };

        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, &keys[index].decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
                        token_invalid("ID token payload unreadable")
                    }
                    _ => refuse(
                        LoginError::SignatureInvalid,
                        format!("signature check failed: {e}"),
                    ),
                }
            })?;
        let Value::Object(claims) = data.claims else {
            return Err(token_invalid("ID token payload is not a JSON object"));
        };
        self.check_claims(&claims, nonce)?;
        Ok(claims)
    }

    /// OIDC Core §3.1.3.7 steps 2-4, 9-11 plus `sub` (presence enforced, skew explicit).
    fn check_claims(&self, claims: &Claims, nonce: Option<&str>) -> Result<(), ProviderError> {
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if !self.cfg.issuer_rule.accepts(iss, claims) {
            return Err(refuse(LoginError::IssuerInvalid, format!("iss {iss:?}")));
        }
        let client_id = self.cfg.client_id.as_str();
        let by_client_claim = self.cfg.client_id_claim_as_audience
            && claims.get("client_id").and_then(Value::as_str) == Some(client_id);
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !by_client_claim && !audiences.contains(&client_id) {
            return Err(refuse(
                LoginError::AudienceInvalid,
                format!("aud {audiences:?}"),
            ));
        }
        let azp = claims.get("azp").and_then(Value::as_str);
        if !by_client_claim && audiences.len() > 1 && azp != Some(client_id) {
            return Err(refuse(
                LoginError::AudienceInvalid,
                "several audiences and azp is not our client",
            ));
        }
        if let Some(azp) = azp
            && azp != client_id
        {
            return Err(refuse(LoginError::AudienceInvalid, format!("azp {azp:?}")));
        }
        let now = self.clock.now();
        let skew = self.cfg.clock_skew;
        let exp = num_claim(claims, "exp").ok_or_else(|| token_invalid("exp missing"))?;
        if now > exp.saturating_add(skew) {
            return Err(refuse(
                LoginError::TokenExpired,
                format!("exp {exp}, now {now}"),
            ));
        }
        let iat = num_claim(claims, "iat").ok_or_else(|| token_invalid("iat missing"))?;
        if iat > now.saturating_add(skew) {
            return Err(token_invalid("iat in the future"));
        }
        if let Some(nbf) = num_claim(claims, "nbf")
            && nbf > now.saturating_add(skew)
        {
            return Err(refuse(
                LoginError::TokenExpired,
                format!("nbf {nbf}, now {now}"),
            ));
        }
        if let Some(nonce) = nonce {
            let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if nonce.is_empty() || !homeroom_core::crypto::ct_eq(got.as_bytes(), nonce.as_bytes()) {
                return Err(refuse(
                    LoginError::NonceInvalid,
                    "nonce missing or different",
                ));
            }
        }
        match claims.get("sub").and_then(Value::as_str) {
            Some(s) if !s.is_empty() && s.len() <= 255 => Ok(()),
            _ => Err(refuse(LoginError::SubjectInvalid, "sub missing or empty")),
        }
    }

    /// Userinfo with the access token; its `sub` must equal the ID token's (OIDC Core §5.3.2).
    async fn userinfo(
        &self,
        md: &Metadata,
        access: &str,
        claims: &Claims,
    ) -> Result<Claims, ProviderError> {
        let endpoint = md
            .userinfo_endpoint
            .as_deref()
            .ok_or_else(|| self.unavailable("no userinfo_endpoint in discovery"))?;
        let resp = self
            .http
            .get(endpoint, Some(access))
            .await
            .map_err(|e| e.into_provider_error(self.name()))?;
        if !resp.is_success() {
            return Err(self.unavailable(format!("userinfo answered HTTP {}", resp.status)));
        }
        let Ok(Value::Object(info)) = serde_json::from_slice::<Value>(&resp.body) else {
            return Err(token_invalid("userinfo is not a JSON object"));
        };
        let sub = claims.get("sub").and_then(Value::as_str);
        if info.get("sub").and_then(Value::as_str) != sub {
            return Err(refuse(
                LoginError::SubjectInvalid,
                "userinfo sub differs from the ID token's",
            ));
        }
        Ok(info)
    }
}

/// Redeems an authorization code at `token_url` (form body, optional HTTP Basic client
/// authentication); a non-2xx answer is `TokenExchangeFailed` (expired, reused or foreign
/// codes all end here), a non-object body too. Shared by the OIDC engine and the
/// OAuth-only portal adapters (Clever, GG4L).
pub(crate) async fn redeem_code(
    http: &HttpClient,
    provider_name: &str,
    token_url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<Claims, ProviderError> {
    let resp: HttpResponse = http
        .post_form(token_url, form, basic)
        .await
        .map_err(|e| e.into_provider_error(provider_name))?;
    let failed = |detail: String| {
        refuse(
            LoginError::TokenExchangeFailed {
                provider: provider_name.to_owned(),
            },
            detail,
        )
    };
    if !resp.is_success() {
        let err = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| excerpt(&resp.body));
        return Err(failed(format!(
            "token endpoint answered HTTP {}: {err}",
            resp.status
        )));
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(failed("token response is not a JSON object".into())),
    }
}

/// A string claim, if present and non-empty.
pub(crate) fn str_claim(claims: &Claims, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Merges userinfo into the ID-token claims (ID-token values win) for normalisation.
pub(crate) fn merged_claims(login: &VerifiedLogin) -> Claims {
    let mut claims = login.claims.clone();
    if let Some(info) = &login.userinfo {
        for (k, v) in info {
            claims.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    claims
}

/// An identity with the common profile claims filled in; adapters set the rest.
pub(crate) fn base_identity(
    provider: &ProviderId,
    subject: String,
    claims: &Claims,
) -> UpstreamIdentity {
    let mut id = UpstreamIdentity::new(provider.clone(), subject);
    id.email = str_claim(claims, "email");
    id.name = str_claim(claims, "name");
    id.given_name = str_claim(claims, "given_name");
    id.family_name = str_claim(claims, "family_name");
    id.preferred_username = str_claim(claims, "preferred_username");
    id.claims = redact_claims(Value::Object(claims.clone()));
    id
}

/// The generic OIDC adapter (`kind = "oidc"`).
pub struct OidcProvider {
    id: ProviderId,
    display_name: String,
    issuer: String,
    trust_email: bool,
    engine: OidcEngine,
}

impl OidcProvider {
    /// Builds the adapter; no network access until the first login.
    pub fn new(
        id: ProviderId,
        display_name: String,
        config: &OidcConfig,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let issuer = config.issuer.clone();
        let discovery_url = config.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )
        });
        let cfg = EngineConfig {
            provider_name: display_name.clone(),
            issuer_rule: IssuerRule::OneOf(vec![issuer.clone()]),
            discovery_url,
            discovery_issuers: Some(vec![issuer.clone()]),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            token_auth: config.token_auth,
            clock_skew: i64::try_from(config.clock_skew_secs).unwrap_or(60),
            use_userinfo: config.use_userinfo,
            extra_auth_params: Vec::new(),
            static_metadata: None,
            client_id_claim_as_audience: false,
        };
        let http = http.with_timeout(std::time::Duration::from_secs(config.timeout_secs));
        Self {
            id,
            display_name,
            issuer,
            trust_email: config.trust_email,
            engine: OidcEngine::new(cfg, http, clock),
        }
    }
}

impl Provider for OidcProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Oidc
    }
    fn display_name(&self) -> &str {
        &self.display_name
    }
    fn expected_issuer(&self) -> Option<String> {
        Some(self.issuer.clone())
    }
    fn as_redirect(&self) -> Option<&dyn RedirectLogin> {
        Some(self)
    }
}

#[async_trait]
impl RedirectLogin for OidcProvider {
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        self.engine.authorize_url(req).await
    }

    /// Generic upstreams: subject = `sub`; the email counts as verified only when the
    /// provider is configured with `trust_email` AND `email_verified` is JSON `true`
    /// (RP-10: a generic IdP may let users type any address).
    async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        let issuer = self.issuer.clone();
        let login = self
            .engine
            .finish(cb, flow, &move |iss: &str| iss == issuer)
            .await?;
        let claims = merged_claims(&login);
        let subject = str_claim(&login.claims, "sub")
            .ok_or_else(|| refuse(LoginError::SubjectInvalid, "sub"))?;
        let mut id = base_identity(&self.id, subject, &claims);
        id.email_verified = self.trust_email
            && id.email.is_some()
            && claims.get("email_verified") == Some(&Value::Bool(true));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_allowed() {
        for ok in ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"] {
            assert!(allowed_alg(ok).is_some(), "{ok}");
        }
        for bad in ["none", "None", "HS256", "HS512", "EdDSA", ""] {
            assert!(allowed_alg(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn entra_template_needs_the_tokens_own_tid() {
        let rule = IssuerRule::EntraTemplate {
            authority: "https://login.example".into(),
        };
        let mut c = Claims::new();
        c.insert("tid".into(), Value::String("t1".into()));
        assert!(rule.accepts("https://login.example/t1/v2.0", &c));
        assert!(!rule.accepts("https://login.example/t2/v2.0", &c));
        assert!(!rule.accepts("https://login.example/{tenantid}/v2.0", &c));
        c.insert("tid".into(), Value::String("{tenantid}".into()));
        assert!(!rule.accepts("https://login.example/{tenantid}/v2.0", &c));
        assert!(!rule.accepts("https://login.example/t1/v2.0", &Claims::new()));
    }
}
