//! Google (OIDC) adapter: the generic OIDC engine plus Google's issuer rule, the `hd`
//! hosted-domain check and Google's email-trust rule (providers.md §1, RP-09).
//!
//! It owns nothing but those Google rules; whether the person may use an app, or which
//! account they are, is the broker's business.

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

/// Google's issuer.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// Configuration of a Google provider (`kind = "google"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// OAuth client id from the Google Cloud console.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: String,
    /// Workspace domains whose accounts are accepted (`hd` claim, case-insensitive).
    /// Defaults to the tenant's domains.
    #[serde(default)]
    pub hosted_domains: Option<Vec<String>>,
    /// Accept consumer Google accounts (no `hd`): personal Gmail. Off for schools.
    #[serde(default)]
    pub allow_consumer_accounts: bool,
    /// Issuer; `https://accounts.google.com` unless overridden for tests. Its scheme-less
    /// form (`accounts.google.com`) is accepted in tokens too.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Discovery document URL when not `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Allowed clock skew, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Total timeout of each request to Google, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_issuer() -> String {
    GOOGLE_ISSUER.to_owned()
}

/// The Google adapter.
pub struct GoogleProvider {
    id: ProviderId,
    display_name: String,
    issuer: String,
    accepted_issuers: Vec<String>,
    hosted_domains: Vec<String>,
    allow_consumer_accounts: bool,
    engine: OidcEngine,
}

impl GoogleProvider {
    /// Builds the adapter; `hosted_domains` is the effective list (config or tenant's).
    /// No network access until the first login.
    pub fn new(
        id: ProviderId,
        display_name: String,
        config: &GoogleConfig,
        hosted_domains: Vec<String>,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let issuer = config.issuer.trim_end_matches('/').to_owned();
        let bare = issuer
            .split_once("://")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_else(|| issuer.clone());
        let accepted_issuers = vec![issuer.clone(), bare];
        let hosted_domains: Vec<String> = hosted_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let discovery_url = config
            .discovery_url
            .clone()
            .unwrap_or_else(|| format!("{issuer}/.well-known/openid-configuration"));
        let extra_auth_params = match hosted_domains.as_slice() {
            [one] => vec![("hd".to_owned(), one.clone())],
            _ => Vec::new(),
        };
        let cfg = EngineConfig {
            provider_name: display_name.clone(),
            issuer_rule: IssuerRule::OneOf(accepted_issuers.clone()),
            discovery_url,
            discovery_issuers: Some(accepted_issuers.clone()),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            token_auth: TokenAuth::ClientSecretBasic,
            clock_skew: i64::try_from(config.clock_skew_secs).unwrap_or(60),
            use_userinfo: false,
            extra_auth_params,
            static_metadata: None,
            client_id_claim_as_audience: false,
        };
        let http = http.with_timeout(std::time::Duration::from_secs(config.timeout_secs));
        Self {
            id,
            display_name,
            issuer,
            accepted_issuers,
            hosted_domains,
            allow_consumer_accounts: config.allow_consumer_accounts,
            engine: OidcEngine::new(cfg, http, clock),
        }
    }
}

impl Provider for GoogleProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Google
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
impl RedirectLogin for GoogleProvider {
    /// Scopes are exactly `openid email profile`. With a single hosted domain the URL
    /// carries `hd=<domain>`: a UI hint only (the user can edit it), the claim is checked
    /// in [`finish`](RedirectLogin::finish).
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError> {
        self.engine.authorize_url(req).await
    }

    /// Google quirks:
    /// - `iss` is `https://accounts.google.com` or the bare `accounts.google.com`.
    /// - The `hd` claim is the tenant check: absent means a consumer account, refused with
    ///   `DomainMismatch { used: <email> }` unless `allow_consumer_accounts`; present but
    ///   not one of the hosted domains (case-insensitive) is `DomainMismatch` too.
    /// - `email_verified` is trusted only when the claim is `true` AND `hd` is present
    ///   (Google is authoritative for Workspace addresses; a consumer account on someone
    ///   else's mailbox can keep a stale `true`).
    /// - Subject = `sub` (never email: domains get re-registered); `upstream_tenant` = `hd`.
    async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError> {
        let accepted = self.accepted_issuers.clone();
        let login = self
            .engine
            .finish(cb, flow, &move |iss: &str| {
                accepted.iter().any(|a| a == iss)
            })
            .await?;
        let claims = merged_claims(&login);
        let subject = str_claim(&claims, "sub")
            .ok_or_else(|| ProviderError::new(LoginError::SubjectInvalid, "sub"))?;
        let hd = str_claim(&claims, "hd").map(|h| h.to_ascii_lowercase());
        let email = str_claim(&claims, "email");
        let used = email.clone().unwrap_or_else(|| subject.clone());
        match &hd {
            None if !self.allow_consumer_accounts => {
                return Err(ProviderError::new(
                    LoginError::DomainMismatch {
                        used,
                        expected: self.hosted_domains.clone(),
                    },
                    "consumer Google account (no hd claim)",
                ));
            }
            // Another Workspace domain: refused whenever hosted domains are configured.
            Some(h)
                if !self.hosted_domains.iter().any(|d| d == h)
                    && (!self.hosted_domains.is_empty() || !self.allow_consumer_accounts) =>
            {
                return Err(ProviderError::new(
                    LoginError::DomainMismatch {
                        used,
                        expected: self.hosted_domains.clone(),
                    },
                    format!("hd {h:?} is not a hosted domain of this provider"),
                ));
            }
            _ => {}
        }
        let mut id = base_identity(&self.id, subject, &claims);
        id.email_verified = hd.is_some()
            && id.email.is_some()
            && claims.get("email_verified") == Some(&Value::Bool(true));
        id.upstream_tenant = hd;
        Ok(id)
    }
}
