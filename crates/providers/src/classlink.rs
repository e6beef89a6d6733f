//! ClassLink adapter (`kind = "classlink"`, providers.md §4): OAuth 2.0 + OIDC ID token on
//! the shared OIDC engine, plus ClassLink's `/v2/my/info`.
//!
//! It owns ClassLink's rules only: client credentials in the token request's form body,
//! the ID-token verification (delegated to [`crate::oidc`]'s engine, not duplicated), the
//! `/v2/my/info` call whose `TenantId` is the tenant check (the ID token carries only the
//! tenant *name*), the `TenantId:UserId` subject, the ClassLink preset of the attribute
//! mapping and the role vocabulary. Policy is the broker's.
//!
//! Portal launches: a LaunchPad tile sends the browser to the app's first redirect URI
//! with only `?code=` (no `state`, no `nonce` of ours; reported by integrators and
//! intermediaries, not in ClassLink's docs). This adapter never redeems such a code: the
//! broker restarts a normal login with its own `state` and `nonce` through
//! [`RedirectLogin::begin`], silent because the user is signed in at LaunchPad.
//!
//! Assumptions where ClassLink's documentation was NOT FOUND (providers.md Appendix):
//! - Discovery at `https://launchpad.classlink.com/.well-known/openid-configuration`
//!   (observed), issuer `https://launchpad.classlink.com`; the JWKS URL is read from it.
//! - `sub` = `UserId`: required equal when both are present (`SubjectInvalid` otherwise).
//! - Roles beyond `Student`, `Teacher`, `Tenant Administrator` are refused unless the
//!   `roles` table names them (e.g. `Parent = "guardian"`, `Staff = "staff"`).
//! - ID tokens carry no `nbf` (the engine treats `nbf` as optional).
//! - No tenant-hint parameter exists for OAuth logins; none is sent.

use crate::http::HttpClient;
use crate::oidc::{
    EngineConfig, IssuerRule, OidcEngine, TokenAuth, default_skew, default_timeout, str_claim,
};
use crate::portal::{
    AttributeMap, ClaimOverrides, RoleMap, check_allowed, get_json, id_list, id_value,
    identity_from, join, require_email,
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

/// ClassLink's OIDC issuer and OAuth host (`/oauth2/v2/auth`, `/oauth2/v2/token`).
pub const CLASSLINK_LAUNCHPAD_BASE: &str = "https://launchpad.classlink.com";
/// ClassLink's API host (`/v2/my/info`).
pub const CLASSLINK_API_BASE: &str = "https://nodeapi.classlink.com";

/// Configuration of a ClassLink provider (`kind = "classlink"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLinkConfig {
    /// Client id from the ClassLink developer console.
    pub client_id: String,
    /// Client secret (sent in the token request's form body, as ClassLink documents).
    pub client_secret: String,
    /// ClassLink tenant ids (`TenantId`, numbers or strings) accepted; required, at least
    /// one.
    #[serde(deserialize_with = "id_list")]
    pub tenant_ids: Vec<String>,
    /// The issuer and OAuth base; `https://launchpad.classlink.com` unless overridden for
    /// tests. Discovery is read from `{launchpad_base}/.well-known/openid-configuration`.
    #[serde(default = "default_launchpad_base")]
    pub launchpad_base: String,
    /// Base of the data API (`/v2/my/info`); `https://nodeapi.classlink.com` unless
    /// overridden for tests.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Scopes requested; must include `openid`. Avoid `full` (broad API access).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Refuse users without an email (`EmailMissing`). Off by default.
    #[serde(default)]
    pub require_email: bool,
    /// Attribute-mapping overrides (field -> `/v2/my/info` key or ID-token claim).
    #[serde(default)]
    pub claims: ClaimOverrides,
    /// Role vocabulary overrides (ClassLink `Role` -> Homeroom role).
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Allowed clock skew for ID tokens, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Total timeout of each request to ClassLink, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_launchpad_base() -> String {
    CLASSLINK_LAUNCHPAD_BASE.to_owned()
}
fn default_api_base() -> String {
    CLASSLINK_API_BASE.to_owned()
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

/// ClassLink's attribute preset over `/v2/my/info` (PascalCase keys) merged with the ID
/// token's claims (lower-case keys, used as fallbacks). No grade is sent by `/v2/my/info`;
/// `school` is the LaunchPad `BuildingId`.
pub fn classlink_attribute_preset() -> AttributeMap {
    AttributeMap::preset(
        &["Email", "email"],
        &["DisplayName", "name"],
        &["FirstName", "given_name"],
        &["LastName", "family_name"],
        &["LoginId", "login_hint"],
        &["Role"],
        &["BuildingId"],
        &[],
        &["SourcedId"],
    )
}

/// ClassLink's documented `Role` values -> Homeroom roles.
pub const CLASSLINK_ROLE_PRESET: &[(&str, Role)] = &[
    ("student", Role::Student),
    ("teacher", Role::Teacher),
    ("tenant administrator", Role::DistrictAdmin),
];

/// The ClassLink adapter.
pub struct ClassLinkProvider {
    id: ProviderId,
    display_name: String,
    issuer: String,
    config: ClassLinkConfig,
    http: HttpClient,
    attributes: AttributeMap,
    roles: RoleMap,
    engine: OidcEngine,
}

impl ClassLinkProvider {
    /// Builds the adapter; no network access until the first login.
    pub fn new(
        id: ProviderId,
        display_name: String,
        config: &ClassLinkConfig,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let http = http.with_timeout(std::time::Duration::from_secs(config.timeout_secs));
        let issuer = config.launchpad_base.trim_end_matches('/').to_owned();
        let cfg = EngineConfig {
            provider_name: display_name.clone(),
            issuer_rule: IssuerRule::OneOf(vec![issuer.clone()]),
            discovery_url: format!("{issuer}/.well-known/openid-configuration"),
            discovery_issuers: Some(vec![issuer.clone()]),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            token_auth: TokenAuth::ClientSecretPost,
            clock_skew: i64::try_from(config.clock_skew_secs).unwrap_or(60),
            use_userinfo: false,
            extra_auth_params: Vec::new(),
            static_metadata: None,
            client_id_claim_as_audience: false,
        };
        Self {
            id,
            display_name,
            issuer,
            attributes: classlink_attribute_preset().with_overrides(&config.claims),
            roles: RoleMap::new(CLASSLINK_ROLE_PRESET, &config.roles),
            config: config.clone(),
            engine: OidcEngine::new(cfg, http.clone(), clock),
            http,
        }
    }
}

impl Provider for ClassLinkProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::ClassLink
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
impl RedirectLogin for ClassLinkProvider {
    /// The engine's URL from discovery (`/oauth2/v2/auth`): scopes, `state`, `nonce`,
    /// PKCE S256, `login_hint` passed through.
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        self.engine.authorize_url(req).await
    }

    /// ClassLink quirks:
    /// - Client credentials go in the token request's form body (`client_secret_post`);
    ///   ClassLink documents no Basic. Codes live 5 minutes, single use: expired or reused
    ///   codes are `TokenExchangeFailed`.
    /// - The ID token is verified by the shared OIDC engine (RS256 on the JWKS from
    ///   discovery, issuer, audience, nonce, `exp`; no `nbf` expected). Its
    ///   `email_verified: true` is ignored: ClassLink emails are often synthetic.
    /// - `/v2/my/info` (Bearer access token) gives `TenantId`, the tenant check
    ///   (`TenantMismatch` unless configured), and `UserId`, which must equal the ID
    ///   token's `sub`.
    /// - Subject = `"{TenantId}:{UserId}"`; `sourced_id` = `SourcedId` (empty when the
    ///   district has no OneRoster: then none); `email_verified` always false.
    /// - Role = `Role` (`Student`, `Teacher`, `Tenant Administrator`); others refused
    ///   (`TokenInvalid`) unless the `roles` table maps them.
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
        let access = login.access_token.clone().ok_or_else(|| {
            let reason = "token response has no access_token";
            ProviderError::new(
                LoginError::TokenInvalid {
                    reason: reason.into(),
                },
                reason,
            )
        })?;
        let info = get_json(
            &self.http,
            &self.display_name,
            &join(&self.config.api_base, "/v2/my/info"),
            &access,
        )
        .await?;
        let tenant = id_value(info.get("TenantId"));
        check_allowed(
            tenant.as_deref(),
            &self.config.tenant_ids,
            "ClassLink TenantId",
        )?;
        let tenant = tenant.unwrap_or_default();
        let user_id = id_value(info.get("UserId")).ok_or_else(|| {
            ProviderError::new(LoginError::SubjectInvalid, "/v2/my/info has no UserId")
        })?;
        if let Some(sub) = str_claim(&login.claims, "sub")
            && sub != user_id
        {
            return Err(ProviderError::new(
                LoginError::SubjectInvalid,
                format!("ID token sub {sub:?} is not /v2/my/info UserId {user_id:?}"),
            ));
        }
        // /v2/my/info wins; the ID token's claims fill in (their keys are lower-case).
        let mut doc = info.clone();
        for (k, v) in &login.claims {
            doc.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let doc = Value::Object(doc);
        let mapped = self.attributes.apply(&doc);
        let roles = self.roles.resolve(&mapped.roles, "ClassLink role")?;
        require_email(self.config.require_email, &mapped, &self.display_name)?;
        Ok(identity_from(
            &self.id,
            format!("{tenant}:{user_id}"),
            &mapped,
            roles,
            Some(tenant),
            &doc,
        ))
    }
}
