//! Microsoft Entra ID (v2.0 endpoints) adapter: the generic OIDC engine plus Entra's
//! templated issuer, the `tid` allow-list, the `tid:oid` subject and the `xms_edov`
//! email-trust rule (providers.md §2, RP-10, RP-11).
//!
//! It owns nothing but those Entra rules; linking by email and policy are the broker's.

use crate::http::HttpClient;
use crate::oidc::{
    EngineConfig, IssuerRule, OidcEngine, TokenAuth, base_identity, default_skew, default_timeout,
    merged_claims, str_claim,
};
use crate::{
    BeginLogin, Callback, Provider, ProviderError, ProviderKind, RedirectLogin, UpstreamFlow,
};
use async_trait::async_trait;
use homeroom_core::{Clock, LoginError, ProviderId, UpstreamIdentity};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// Microsoft's public-cloud authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The tenant id of personal Microsoft accounts (MSA); never a school.
pub const MSA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Configuration of an Entra provider (`kind = "microsoft"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MicrosoftConfig {
    /// Application (client) id of the app registration.
    pub client_id: String,
    /// Client secret of the app registration.
    pub client_secret: String,
    /// The tenant in the endpoint paths: the district's tenant GUID (recommended), one of
    /// its verified domains, or `organizations` / `common` (multi-tenant, which then needs
    /// `allowed_tenants`). `consumers` is refused: personal accounts are not school accounts.
    pub tenant: String,
    /// Tenant GUIDs (`tid`) accepted. Required for multi-tenant; with a GUID `tenant` that
    /// GUID is always accepted; with a domain `tenant` and no list, the GUID named by the
    /// discovery document's issuer is accepted.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Authority base URL; `https://login.microsoftonline.com` unless overridden for tests
    /// or national clouds.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// Allowed clock skew, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Total timeout of each request to Entra, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_authority() -> String {
    DEFAULT_AUTHORITY.to_owned()
}

/// Whether `s` is a GUID in its 8-4-4-4-12 hex form.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `tenant` names several tenants (`common`, `organizations`).
pub fn is_multi_tenant(tenant: &str) -> bool {
    matches!(
        tenant.to_ascii_lowercase().as_str(),
        "common" | "organizations"
    )
}

/// The Entra adapter.
pub struct MicrosoftProvider {
    id: ProviderId,
    display_name: String,
    authority: String,
    tenant: String,
    /// Lower-case tenant GUIDs accepted (may be empty for a domain tenant: see config).
    allowed: Vec<String>,
    engine: OidcEngine,
}

impl MicrosoftProvider {
    /// Builds the adapter; no network access until the first login.
    pub fn new(
        id: ProviderId,
        display_name: String,
        config: &MicrosoftConfig,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let authority = config.authority.trim_end_matches('/').to_owned();
        let tenant = config.tenant.clone();
        let mut allowed: Vec<String> = config
            .allowed_tenants
            .iter()
            .map(|t| t.to_ascii_lowercase())
            .collect();
        if is_guid(&tenant) && !allowed.contains(&tenant.to_ascii_lowercase()) {
            allowed.push(tenant.to_ascii_lowercase());
        }
        let cfg = EngineConfig {
            provider_name: display_name.clone(),
            issuer_rule: IssuerRule::EntraTemplate {
                authority: authority.clone(),
            },
            discovery_url: format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
            // Multi-tenant discovery names the template `{tenantid}`; the token rule decides.
            discovery_issuers: None,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            token_auth: TokenAuth::ClientSecretPost,
            clock_skew: i64::try_from(config.clock_skew_secs).unwrap_or(60),
            use_userinfo: false,
            extra_auth_params: Vec::new(),
            static_metadata: None,
            client_id_claim_as_audience: false,
        };
        let http = http.with_timeout(std::time::Duration::from_secs(config.timeout_secs));
        Self {
            id,
            display_name,
            authority,
            tenant,
            allowed,
            engine: OidcEngine::new(cfg, http, clock),
        }
    }

    /// The tenant named by an Entra issuer URL `{authority}/{tid}/v2.0`.
    fn tenant_of_issuer<'a>(&self, iss: &'a str) -> Option<&'a str> {
        let rest = iss
            .strip_prefix(self.authority.as_str())?
            .strip_prefix('/')?;
        let tid = rest.strip_suffix("/v2.0")?;
        (!tid.is_empty() && !tid.contains(['/', '{', '}'])).then_some(tid)
    }

    /// The accepted tenants; for a domain tenant without a list, the discovery issuer's.
    async fn allowed_tenants(&self) -> Result<Vec<String>, ProviderError> {
        if !self.allowed.is_empty() {
            return Ok(self.allowed.clone());
        }
        let md = self.engine.metadata().await?;
        Ok(self
            .tenant_of_issuer(&md.issuer)
            .filter(|t| is_guid(t))
            .map(|t| vec![t.to_ascii_lowercase()])
            .unwrap_or_default())
    }
}

impl Provider for MicrosoftProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Microsoft
    }
    fn display_name(&self) -> &str {
        &self.display_name
    }
    /// Known only for a GUID tenant; multi-tenant issuers depend on the user's `tid`.
    fn expected_issuer(&self) -> Option<String> {
        is_guid(&self.tenant).then(|| {
            format!(
                "{}/{}/v2.0",
                self.authority,
                self.tenant.to_ascii_lowercase()
            )
        })
    }
    fn as_redirect(&self) -> Option<&dyn RedirectLogin> {
        Some(self)
    }
}

fn edov_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

#[async_trait]
impl RedirectLogin for MicrosoftProvider {
    /// Scopes `openid profile email` (`oid` and `preferred_username` need `profile`);
    /// client authentication with `client_secret_post`, as Microsoft documents.
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        self.engine.authorize_url(req).await
    }

    /// Entra quirks:
    /// - `iss` is `{authority}/{tid}/v2.0` with the token's own `tid` (multi-tenant
    ///   discovery publishes the template `{tenantid}`; a literal `{tenantid}` in a token
    ///   is refused). A callback `iss`, when sent, must name an allowed tenant.
    /// - `tid` must be an allowed tenant, and the personal-account tenant
    ///   `9188040d-…` is always refused: `TenantMismatch`.
    /// - `sub` is pairwise per app registration, so the subject is `"{tid}:{oid}"`;
    ///   `oid` is required (`SubjectInvalid`).
    /// - `email` is mutable and may be set by any tenant admin (nOAuth): it counts as
    ///   verified only with `xms_edov` = `true`, `"true"`, `"1"` or `1`. Entra never sends
    ///   `email_verified`. `preferred_username` (often the UPN) is never used as email.
    async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        let allowed = if cb.iss.is_some() {
            self.allowed_tenants().await?
        } else {
            Vec::new()
        };
        let authority = self.authority.clone();
        let iss_ok = move |iss: &str| {
            let Some(rest) = iss
                .strip_prefix(authority.as_str())
                .and_then(|r| r.strip_prefix('/'))
            else {
                return false;
            };
            rest.strip_suffix("/v2.0")
                .is_some_and(|tid| allowed.contains(&tid.to_ascii_lowercase()))
        };
        let login = self.engine.finish(cb, flow, &iss_ok).await?;
        let claims = merged_claims(&login);
        let tid = str_claim(&claims, "tid")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let allowed = self.allowed_tenants().await?;
        if tid == MSA_TENANT_ID {
            return Err(ProviderError::new(
                LoginError::TenantMismatch {
                    used: tid,
                    expected: allowed,
                },
                "personal Microsoft account tenant",
            ));
        }
        if !allowed.contains(&tid) {
            return Err(ProviderError::new(
                LoginError::TenantMismatch {
                    used: tid.clone(),
                    expected: allowed,
                },
                format!("tid {tid} is not an allowed tenant"),
            ));
        }
        let oid = str_claim(&claims, "oid").ok_or_else(|| {
            ProviderError::new(LoginError::SubjectInvalid, "oid missing (profile scope?)")
        })?;
        let mut id = base_identity(
            &self.id,
            format!("{tid}:{}", oid.to_ascii_lowercase()),
            &claims,
        );
        id.email_verified = id.email.is_some() && edov_true(claims.get("xms_edov"));
        id.upstream_tenant = Some(tid);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn guids_and_multi_tenant_names() {
        assert!(is_guid(MSA_TENANT_ID));
        assert!(!is_guid("district.org"));
        assert!(!is_guid("9188040d-6c67-4c5b-b112-36a304b66daz"));
        assert!(is_multi_tenant("organizations") && is_multi_tenant("Common"));
        assert!(!is_multi_tenant("consumers"));
    }

    #[test]
    fn xms_edov_is_parsed_leniently() {
        for yes in [json!(true), json!("true"), json!("1"), json!(1)] {
            assert!(edov_true(Some(&yes)), "{yes}");
        }
        for no in [
            json!(false),
            json!("false"),
            json!("0"),
            json!(0),
            json!(null),
            json!("yes"),
        ] {
            assert!(!edov_true(Some(&no)), "{no}");
        }
        assert!(!edov_true(None));
    }
}
