//! Clever adapter (`kind = "clever"`, providers.md §3): OAuth 2.0 with Clever's identity
//! API, or Clever's OIDC mode on the shared OIDC engine.
//!
//! It owns Clever's rules only: the authorize URL, the token request with HTTP Basic
//! client authentication, the `/v3.0/me` + `/v3.0/users/{id}` identity (or ID token +
//! `/userinfo` in OIDC mode), the district allow-list and `authorized_by` check, the
//! Clever preset of the attribute mapping and the user-type vocabulary. Policy (linking,
//! app assignment) is the broker's.
//!
//! Portal launches: the Clever Portal and Instant Login send the browser to the app's
//! first registered redirect URI with `?code=` and **no `state`** (providers.md §3
//! "Portal and Instant Login launches"). This adapter never redeems such a code: the
//! broker sees the missing state and restarts a normal login through
//! [`RedirectLogin::begin`], which is silent because the user is already signed in at
//! Clever.
//!
//! Assumptions where Clever's documentation was NOT FOUND (providers.md Appendix):
//! - Token endpoint content type: we send `application/x-www-form-urlencoded` with Basic
//!   (Basic is documented; body credentials are not sent).
//! - Access / ID token lifetimes: the access token is used only during the login.
//! - OIDC mode: issuer `https://clever.com` and discovery at
//!   `https://clever.com/.well-known/openid-configuration` (third-party evidence); scope
//!   `openid` only (Clever manages scopes in the application).
//! - `user_type` for district admins is accepted as `district_admin` or `district admin`.
//! - `authorized_by` must be `district` (teacher-authorised Library users are refused)
//!   unless `require_district_authorization = false`.
//! - `district_id` on the authorize URL (skips Clever's district picker) is sent when
//!   exactly one district is configured (used by public clients; not on a Clever page).

use crate::http::HttpClient;
use crate::oidc::{
    Claims, EngineConfig, IssuerRule, OidcEngine, TokenAuth, default_skew, default_timeout,
    merged_claims, redeem_code, str_claim,
};
use crate::portal::{
    AttributeMap, ClaimOverrides, RoleMap, callback_code, check_allowed, get_json, identity_from,
    join, require_email, token_field, upstream_error,
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

/// Clever's OAuth host (authorize, tokens; the OIDC issuer).
pub const CLEVER_OAUTH_BASE: &str = "https://clever.com";
/// Clever's API host (`/v3.0/me`, `/v3.0/users/{id}`, `/userinfo`).
pub const CLEVER_API_BASE: &str = "https://api.clever.com";

/// Where the identity comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleverMode {
    /// OAuth 2.0: `/v3.0/me` then `/v3.0/users/{id}` (roles of every context).
    #[default]
    Oauth,
    /// Clever's OIDC mode (enabled per application by Clever Support): verified ID token
    /// plus `/userinfo` (only the role of the current login context).
    Oidc,
}

/// Configuration of a Clever provider (`kind = "clever"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CleverConfig {
    /// Client id of the Clever application.
    pub client_id: String,
    /// Client secret of the Clever application (sent only by HTTP Basic).
    pub client_secret: String,
    /// Clever district ids accepted (required, at least one): the `district` of `/me`,
    /// of the ID token or of `/userinfo` must be one of them.
    pub district_ids: Vec<String>,
    /// `oauth` (default) or `oidc`.
    #[serde(default)]
    pub mode: CleverMode,
    /// Base of the OAuth endpoints (`/oauth/authorize`, `/oauth/tokens`) and the OIDC
    /// issuer; `https://clever.com` unless overridden for tests.
    #[serde(default = "default_oauth_base")]
    pub oauth_base: String,
    /// Base of the API (`/v3.0/me`, `/v3.0/users/{id}`, `/userinfo`);
    /// `https://api.clever.com` unless overridden for tests.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Refuse users whose `authorized_by` is not `district` (default true).
    #[serde(default = "default_true")]
    pub require_district_authorization: bool,
    /// Refuse users without an email (`EmailMissing`). Off by default: Clever asks apps
    /// not to block users with missing data, and young students often have none.
    #[serde(default)]
    pub require_email: bool,
    /// Attribute-mapping overrides (field -> Clever key or dotted path).
    #[serde(default)]
    pub claims: ClaimOverrides,
    /// Role vocabulary overrides (Clever user type -> Homeroom role), e.g.
    /// `staff = "school_admin"` for a tenant that treats Clever staff as school admins.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Allowed clock skew for ID tokens (OIDC mode), seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Total timeout of each request to Clever, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_oauth_base() -> String {
    CLEVER_OAUTH_BASE.to_owned()
}
fn default_api_base() -> String {
    CLEVER_API_BASE.to_owned()
}
pub(crate) fn default_true() -> bool {
    true
}

/// Clever's attribute preset. OAuth mode reads the `/v3.0/users/{id}` `data` object (plus
/// `user_types`, the keys of its `roles`); OIDC mode reads ID token + `/userinfo` claims.
pub fn clever_attribute_preset() -> AttributeMap {
    AttributeMap::preset(
        &["email"],
        &[],
        &["name.first", "given_name"],
        &["name.last", "family_name"],
        &[
            "roles.student.credentials.district_username",
            "roles.teacher.credentials.district_username",
            "roles.staff.credentials.district_username",
        ],
        &["user_types", "user_type"],
        &[
            "roles.student.school",
            "roles.teacher.school",
            "roles.staff.schools.0",
            "schools.0",
        ],
        &["roles.student.grade"],
        &[
            "roles.student.sis_id",
            "roles.teacher.sis_id",
            "roles.staff.staff_id",
        ],
    )
}

/// Clever's user types -> Homeroom roles. Clever calls school admins "staff"; a tenant
/// that wants them as school admins says `roles = { staff = "school_admin" }`.
pub const CLEVER_ROLE_PRESET: &[(&str, Role)] = &[
    ("student", Role::Student),
    ("teacher", Role::Teacher),
    ("staff", Role::Staff),
    ("school_admin", Role::SchoolAdmin),
    ("district_admin", Role::DistrictAdmin),
    ("district admin", Role::DistrictAdmin),
    ("contact", Role::Guardian),
];

/// The Clever adapter.
pub struct CleverProvider {
    id: ProviderId,
    display_name: String,
    config: CleverConfig,
    http: HttpClient,
    attributes: AttributeMap,
    roles: RoleMap,
    /// OIDC mode only.
    engine: Option<OidcEngine>,
}

impl CleverProvider {
    /// Builds the adapter; no network access until the first login.
    pub fn new(
        id: ProviderId,
        display_name: String,
        config: &CleverConfig,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let http = http.with_timeout(std::time::Duration::from_secs(config.timeout_secs));
        let issuer = config.oauth_base.trim_end_matches('/').to_owned();
        let engine = (config.mode == CleverMode::Oidc).then(|| {
            let cfg = EngineConfig {
                provider_name: display_name.clone(),
                issuer_rule: IssuerRule::OneOf(vec![issuer.clone()]),
                discovery_url: format!("{issuer}/.well-known/openid-configuration"),
                discovery_issuers: Some(vec![issuer.clone()]),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                scopes: vec!["openid".into()],
                token_auth: TokenAuth::ClientSecretBasic,
                clock_skew: i64::try_from(config.clock_skew_secs).unwrap_or(60),
                use_userinfo: true,
                extra_auth_params: district_hint(config),
                static_metadata: None,
                client_id_claim_as_audience: false,
            };
            OidcEngine::new(cfg, http.clone(), clock)
        });
        Self {
            id,
            display_name,
            attributes: clever_attribute_preset().with_overrides(&config.claims),
            roles: RoleMap::new(CLEVER_ROLE_PRESET, &config.roles),
            config: config.clone(),
            http,
            engine,
        }
    }

    fn name(&self) -> &str {
        &self.display_name
    }

    fn check_district(&self, district: Option<&str>) -> Result<(), ProviderError> {
        check_allowed(district, &self.config.district_ids, "Clever district")
    }

    /// `authorized_by` must be `district` (unless configured otherwise): a teacher-
    /// authorised Clever Library user was not shared by the district.
    fn check_authorized_by(
        &self,
        authorized_by: Option<&str>,
        district: &str,
    ) -> Result<(), ProviderError> {
        if !self.config.require_district_authorization || authorized_by == Some("district") {
            return Ok(());
        }
        Err(ProviderError::new(
            LoginError::TenantMismatch {
                used: district.to_owned(),
                expected: self.config.district_ids.clone(),
            },
            format!("authorized_by {authorized_by:?} is not \"district\""),
        ))
    }

    /// Maps the source document into the identity (roles, email rule, subject).
    fn normalise(
        &self,
        subject: String,
        district: String,
        doc: &Value,
    ) -> Result<UpstreamIdentity, ProviderError> {
        let mapped = self.attributes.apply(doc);
        let roles = self.roles.resolve(&mapped.roles, "Clever user type")?;
        require_email(self.config.require_email, &mapped, self.name())?;
        Ok(identity_from(
            &self.id,
            subject,
            &mapped,
            roles,
            Some(district),
            doc,
        ))
    }

    /// OAuth mode: code -> token (Basic) -> `/v3.0/me` -> `/v3.0/users/{id}`.
    async fn finish_oauth(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        upstream_error(cb, self.name())?;
        let code = callback_code(cb)?;
        let token_url = join(&self.config.oauth_base, "/oauth/tokens");
        let tokens = redeem_code(
            &self.http,
            self.name(),
            &token_url,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", flow.redirect_uri.as_str()),
            ],
            Some((&self.config.client_id, &self.config.client_secret)),
        )
        .await?;
        let access = token_field(&tokens, "access_token")?;
        let me = get_json(
            &self.http,
            self.name(),
            &join(&self.config.api_base, "/v3.0/me"),
            &access,
        )
        .await?;
        let me_data = me.get("data").cloned().unwrap_or(Value::Null);
        let user_id = me_data
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| is_clever_id(s))
            .map(str::to_owned)
            .ok_or_else(|| {
                ProviderError::new(LoginError::SubjectInvalid, "/me has no usable data.id")
            })?;
        let district = me_data.get("district").and_then(Value::as_str);
        self.check_district(district)?;
        let district = district.unwrap_or_default().to_owned();
        let authorized_by = me_data.get("authorized_by").and_then(Value::as_str);
        self.check_authorized_by(authorized_by, &district)?;

        let user = get_json(
            &self.http,
            self.name(),
            &join(&self.config.api_base, &format!("/v3.0/users/{user_id}")),
            &access,
        )
        .await?;
        let Some(Value::Object(mut data)) = user.get("data").cloned() else {
            return Err(ProviderError::new(
                LoginError::SubjectInvalid,
                "/v3.0/users/{id} has no data object",
            ));
        };
        if data.get("id").and_then(Value::as_str) != Some(user_id.as_str()) {
            return Err(ProviderError::new(
                LoginError::SubjectInvalid,
                "/v3.0/users/{id} names another user than /me",
            ));
        }
        if let Some(d) = data.get("district").and_then(Value::as_str)
            && d != district
        {
            return Err(ProviderError::new(
                LoginError::TenantMismatch {
                    used: d.to_owned(),
                    expected: self.config.district_ids.clone(),
                },
                "/v3.0/users/{id} names another district than /me",
            ));
        }
        let user_types: Vec<Value> = match data.get("roles") {
            Some(Value::Object(r)) => r.keys().map(|k| Value::String(k.clone())).collect(),
            _ => Vec::new(),
        };
        data.insert("user_types".into(), Value::Array(user_types));
        data.insert("district".into(), Value::String(district.clone()));
        if let Some(a) = authorized_by {
            data.insert("authorized_by".into(), Value::String(a.to_owned()));
        }
        self.normalise(user_id, district, &Value::Object(data))
    }

    /// OIDC mode: the engine verifies the ID token (Basic at the token endpoint) and
    /// fetches `/userinfo` (whose `sub` must match); Clever rules on the merged claims.
    async fn finish_oidc(
        &self,
        engine: &OidcEngine,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        let issuer = self.config.oauth_base.trim_end_matches('/').to_owned();
        let login = engine
            .finish(cb, flow, &move |iss: &str| iss == issuer)
            .await?;
        let claims: Claims = merged_claims(&login);
        let subject = str_claim(&claims, "sub")
            .filter(|s| is_clever_id(s))
            .ok_or_else(|| ProviderError::new(LoginError::SubjectInvalid, "sub"))?;
        let district = str_claim(&claims, "district").or_else(|| str_claim(&claims, "district_id"));
        self.check_district(district.as_deref())?;
        let district = district.unwrap_or_default();
        if let Some(info) = &login.userinfo {
            for key in ["district", "district_id"] {
                if let Some(d) = str_claim(info, key)
                    && d != district
                {
                    return Err(ProviderError::new(
                        LoginError::TenantMismatch {
                            used: d,
                            expected: self.config.district_ids.clone(),
                        },
                        format!("/userinfo {key} differs from the ID token's district"),
                    ));
                }
            }
        }
        let authorized_by = str_claim(&claims, "authorized_by");
        self.check_authorized_by(authorized_by.as_deref(), &district)?;
        self.normalise(subject, district, &Value::Object(claims))
    }
}

/// Clever ids are hex ObjectIds; anything outside `[A-Za-z0-9_-]` (or over 64 chars) is
/// refused before it reaches a URL path.
fn is_clever_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn district_hint(config: &CleverConfig) -> Vec<(String, String)> {
    match config.district_ids.as_slice() {
        [one] => vec![("district_id".to_owned(), one.clone())],
        _ => Vec::new(),
    }
}

impl Provider for CleverProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Clever
    }
    fn display_name(&self) -> &str {
        &self.display_name
    }
    fn expected_issuer(&self) -> Option<String> {
        (self.config.mode == CleverMode::Oidc)
            .then(|| self.config.oauth_base.trim_end_matches('/').to_owned())
    }
    fn as_redirect(&self) -> Option<&dyn RedirectLogin> {
        Some(self)
    }
}

#[async_trait]
impl RedirectLogin for CleverProvider {
    /// OAuth mode: `{oauth_base}/oauth/authorize?response_type=code&client_id&redirect_uri
    /// &state` (+ `district_id` with a single configured district). No `scope` (Clever
    /// manages scopes in the application), no PKCE and no nonce (not documented by
    /// Clever; the pipeline's single-use `state` binds the return). OIDC mode: the engine's
    /// URL (scope `openid`, `nonce`, PKCE) from Clever's discovery document.
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        if let Some(engine) = &self.engine {
            return engine.authorize_url(req).await;
        }
        let endpoint = join(&self.config.oauth_base, "/oauth/authorize");
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
            for (k, v) in district_hint(&self.config) {
                q.append_pair(&k, &v);
            }
        }
        Ok(url)
    }

    /// Clever quirks:
    /// - The token endpoint authenticates the client by HTTP Basic only; codes live one
    ///   minute and are single use (an expired or reused code, e.g. a refreshed callback
    ///   page, is `TokenExchangeFailed`, which the broker turns into a restart).
    /// - The district comes from `/v3.0/me` (`data.district`; OIDC mode: the ID token's
    ///   `district`, cross-checked with `/userinfo` `district`/`district_id`) and must be
    ///   a configured district id, else `TenantMismatch`; `authorized_by` must be
    ///   `district`.
    /// - Subject = the Clever user id (v3 `id` = `sub` = `multi_role_user_id`), never
    ///   `legacy_id`, `sis_id` or email.
    /// - `email_verified` is always false: Clever does not verify emails (`/userinfo`
    ///   says `false`), many students have none; a Clever email links an account only
    ///   through the roster or an admin.
    /// - Roles: every key of the v3 `roles` object (multi-role users) or the OIDC
    ///   `user_type`; a type outside the vocabulary alone is `TokenInvalid`.
    /// - `sourced_id` = the `sis_id` of the student/teacher role (`staff_id` for staff),
    ///   unique only within the district.
    async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        match &self.engine {
            Some(engine) => self.finish_oidc(engine, cb, flow).await,
            None => self.finish_oauth(cb, flow).await,
        }
    }
}
