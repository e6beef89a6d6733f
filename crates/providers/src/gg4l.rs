//! GG4L School Passport adapter (`kind = "gg4l"`, providers.md §5): OAuth 2.0 whose token
//! response carries Passport's signed `auth_token` JWT.
//!
//! It owns GG4L's rules only: the per-tenant base URL (GG4L tenants may run on their own
//! hostnames; the URL is configuration, never taken from a request), the authorize URL
//! (`orgGuid`, `invalidate`), the token request with HTTP Basic, the `auth_token`
//! verification (delegated to [`crate::oidc`]'s engine on the configured JWKS, no nonce),
//! the district / org allow-lists, the `guid` subject, the GG4L preset of the attribute
//! mapping and the `type` / `roles` vocabulary. Policy is the broker's.
//!
//! Portal launches: Passport either calls an endpoint of ours that must bounce the browser
//! back to `/oauth/auth` on the tenant's configured host (third-party-initiated login:
//! the broker's `/launch/{provider}` calls [`RedirectLogin::begin`]), or pushes a `code`
//! (or even an access token) straight to the redirect URI with no `state`. This adapter
//! never redeems a state-less code and accepts no pushed token: the broker restarts a
//! normal login with its own `state`.
//!
//! Assumptions where GG4L's documentation was NOT FOUND (providers.md Appendix):
//! - Client authentication for the code grant: HTTP Basic (documented for client
//!   credentials); the request is a form-encoded POST with `grant_type`, `code`,
//!   `redirect_uri`.
//! - Code lifetime: unknown (the emulator uses 60 s, single use).
//! - `auth_token` signing algorithm and keys: the admin supplies `jwks_url`; without it
//!   the provider does not build (no claim is trusted unsigned). Asymmetric algorithms
//!   only, as for ID tokens.
//! - Where the `auth_token` is in the token response: `auth_token`, else `id_token`, else
//!   `access_token` when it is a JWT.
//! - Issuer: `{base_url}/account` (`https://sso.gg4l.com/account` in GG4L's sample)
//!   unless `issuer` is set. Audience: `aud` or the `client_id` claim must be our client
//!   id (GG4L describes `aud` as a hostname while its sample holds the client id).
//! - The user-info endpoint's path and body: identity comes from the verified token only.
//! - Email trust: unverified. Email and names are read from the token when present
//!   (`email`, `given_name`, `family_name`; not in GG4L's documented claim list).
//! - Full `roles[]` vocabulary: `type` is preferred; `roles[]` (upper case) is the
//!   fallback, matched case-insensitively against the same vocabulary.

use crate::http::HttpClient;
use crate::oidc::{
    EngineConfig, IssuerRule, Metadata, OidcEngine, TokenAuth, default_skew, default_timeout,
    redeem_code, str_claim,
};
use crate::portal::{
    AttributeMap, ClaimOverrides, RoleMap, callback_code, check_allowed, id_list, id_value,
    identity_from, join, require_email, upstream_error,
};
use crate::{
    BeginLogin, Callback, Provider, ProviderError, ProviderKind, RedirectLogin, UpstreamFlow,
};
use async_trait::async_trait;
use homeroom_core::{Clock, LoginError, ProviderId, Role, UpstreamIdentity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// GG4L's shared SSO host.
pub const GG4L_BASE: &str = "https://sso.gg4l.com";

/// Configuration of a GG4L provider (`kind = "gg4l"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Gg4lConfig {
    /// Client id issued by GG4L.
    pub client_id: String,
    /// Client secret (sent by HTTP Basic).
    pub client_secret: String,
    /// The tenant's Passport host: `https://sso.gg4l.com` or the institution's own
    /// domain; `/oauth/auth` and `/oauth/token` live under it.
    #[serde(default = "default_base")]
    pub base_url: String,
    /// JWKS URL with the keys that sign the tenant's `auth_token` (required: GG4L does not
    /// publish one; the admin obtains it from GG4L).
    pub jwks_url: String,
    /// Expected `iss`; defaults to `{base_url}/account`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// District GUIDs accepted (`district` claim). At least one of `district_ids` and
    /// `org_ids` is required; every configured list is checked.
    #[serde(default)]
    pub district_ids: Vec<String>,
    /// Organisation ids accepted (`org_id` claim, numbers or strings).
    #[serde(default, deserialize_with = "id_list")]
    pub org_ids: Vec<String>,
    /// Sent as `orgGuid` to pre-select the organisation on Passport's login page.
    #[serde(default)]
    pub org_guid: Option<String>,
    /// Send `invalidate=true`: Passport ends any active session first (shared devices).
    #[serde(default)]
    pub invalidate_session: bool,
    /// Refuse users without an email (`EmailMissing`). Off by default.
    #[serde(default)]
    pub require_email: bool,
    /// Attribute-mapping overrides (field -> `auth_token` claim).
    #[serde(default)]
    pub claims: ClaimOverrides,
    /// Role vocabulary overrides (GG4L `type` / `roles[]` value -> Homeroom role).
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Allowed clock skew, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Total timeout of each request to GG4L, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_base() -> String {
    GG4L_BASE.to_owned()
}

impl Gg4lConfig {
    /// The expected issuer (configured, or `{base_url}/account`).
    pub fn effective_issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| join(&self.base_url, "/account"))
    }
}

/// GG4L's attribute preset over the `auth_token` claims. GG4L documents no grade and no
/// sourcedId claim: map them with `claims` when the tenant's tokens carry them.
pub fn gg4l_attribute_preset() -> AttributeMap {
    AttributeMap::preset(
        &["email"],
        &["name"],
        &["given_name"],
        &["family_name"],
        &["username"],
        &["type", "roles"],
        &["school"],
        &[],
        &[],
    )
}

/// GG4L's `type` values (and upper-case `roles[]`) -> Homeroom roles.
pub const GG4L_ROLE_PRESET: &[(&str, Role)] = &[
    ("student", Role::Student),
    ("teacher", Role::Teacher),
    ("school_admin", Role::SchoolAdmin),
    ("district_admin", Role::DistrictAdmin),
    ("contact", Role::Guardian),
];

/// The GG4L adapter.
pub struct Gg4lProvider {
    id: ProviderId,
    display_name: String,
    config: Gg4lConfig,
    http: HttpClient,
    attributes: AttributeMap,
    roles: RoleMap,
    /// Verifies the `auth_token` (fixed endpoints, no discovery, no nonce).
    engine: OidcEngine,
}

impl Gg4lProvider {
    /// Builds the adapter; no network access until the first login.
    pub fn new(
        id: ProviderId,
        display_name: String,
        config: &Gg4lConfig,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let http = http.with_timeout(std::time::Duration::from_secs(config.timeout_secs));
        let issuer = config.effective_issuer();
        let metadata = Metadata {
            issuer: issuer.clone(),
            authorization_endpoint: join(&config.base_url, "/oauth/auth"),
            token_endpoint: join(&config.base_url, "/oauth/token"),
            userinfo_endpoint: None,
            jwks_uri: config.jwks_url.clone(),
        };
        let cfg = EngineConfig {
            provider_name: display_name.clone(),
            issuer_rule: IssuerRule::OneOf(vec![issuer]),
            discovery_url: String::new(),
            discovery_issuers: None,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: Vec::new(),
            token_auth: TokenAuth::ClientSecretBasic,
            clock_skew: i64::try_from(config.clock_skew_secs).unwrap_or(60),
            use_userinfo: false,
            extra_auth_params: Vec::new(),
            static_metadata: Some(metadata),
            client_id_claim_as_audience: true,
        };
        Self {
            id,
            display_name,
            attributes: gg4l_attribute_preset().with_overrides(&config.claims),
            roles: RoleMap::new(GG4L_ROLE_PRESET, &config.roles),
            config: config.clone(),
            engine: OidcEngine::new(cfg, http.clone(), clock),
            http,
        }
    }

    fn name(&self) -> &str {
        &self.display_name
    }
}

impl Provider for Gg4lProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gg4l
    }
    fn display_name(&self) -> &str {
        &self.display_name
    }
    fn as_redirect(&self) -> Option<&dyn RedirectLogin> {
        Some(self)
    }
}

#[async_trait]
impl RedirectLogin for Gg4lProvider {
    /// `{base_url}/oauth/auth?response_type=code&client_id&redirect_uri&state`, plus
    /// `orgGuid` and `invalidate=true` when configured. No scope, nonce or PKCE (GG4L
    /// documents none); the pipeline's single-use `state` binds the return.
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        let endpoint = join(&self.config.base_url, "/oauth/auth");
        let mut url = url::Url::parse(&endpoint).map_err(|e| {
            ProviderError::new(
                LoginError::UpstreamUnavailable {
                    provider: self.name().to_owned(),
                },
                format!("authorize URL: {e}"),
            )
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &req.redirect_uri)
                .append_pair("state", &req.state);
            if let Some(org) = &self.config.org_guid {
                q.append_pair("orgGuid", org);
            }
            if self.config.invalidate_session {
                q.append_pair("invalidate", "true");
            }
        }
        Ok(url)
    }

    /// GG4L quirks:
    /// - Token request: form POST to `{base_url}/oauth/token` with HTTP Basic; an expired
    ///   or reused code is `TokenExchangeFailed`.
    /// - The `auth_token` (see module docs for where it is found) is verified like an ID
    ///   token on the configured JWKS: signature (`SignatureInvalid`), issuer, audience or
    ///   `client_id` claim, `exp` (30 minutes in GG4L's sample), `sub`; no nonce.
    /// - Tenant: `district` must be in `district_ids` and/or `org_id` in `org_ids`
    ///   (each configured list is checked), else `TenantMismatch`.
    /// - Subject = `guid` (a UUID; `sub` is kept in the claims); `upstream_tenant` = the
    ///   district GUID (or `org_id`).
    /// - Role = `type` (`student`, `teacher`, `school_admin`, `district_admin`,
    ///   `contact`), else `roles[]`; an unknown `type` is `TokenInvalid` (no fallback).
    /// - `email_verified` always false.
    async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        upstream_error(cb, self.name())?;
        let code = callback_code(cb)?;
        let tokens = redeem_code(
            &self.http,
            self.name(),
            &join(&self.config.base_url, "/oauth/token"),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", flow.redirect_uri.as_str()),
            ],
            Some((&self.config.client_id, &self.config.client_secret)),
        )
        .await?;
        let token = ["auth_token", "id_token", "access_token"]
            .iter()
            .filter_map(|k| tokens.get(*k).and_then(Value::as_str))
            .find(|t| t.split('.').count() == 3)
            .ok_or_else(|| {
                let reason = "token response carries no auth_token JWT";
                ProviderError::new(
                    LoginError::TokenInvalid {
                        reason: reason.into(),
                    },
                    reason,
                )
            })?;
        let claims = self.engine.verify_jwt(token, None).await?;
        let district = str_claim(&claims, "district");
        let org_id = id_value(claims.get("org_id"));
        if !self.config.district_ids.is_empty() {
            check_allowed(
                district.as_deref(),
                &self.config.district_ids,
                "GG4L district",
            )?;
        }
        if !self.config.org_ids.is_empty() {
            check_allowed(org_id.as_deref(), &self.config.org_ids, "GG4L org_id")?;
        }
        let guid = str_claim(&claims, "guid")
            .filter(|g| g.len() <= 128)
            .ok_or_else(|| ProviderError::new(LoginError::SubjectInvalid, "no guid claim"))?;
        let doc = Value::Object(claims);
        let mapped = self.attributes.apply(&doc);
        let roles = self.roles.resolve(&mapped.roles, "GG4L user type")?;
        require_email(self.config.require_email, &mapped, self.name())?;
        Ok(identity_from(
            &self.id,
            guid,
            &mapped,
            roles,
            district.or(org_id),
            &doc,
        ))
    }
}
