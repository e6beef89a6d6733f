//! Rows of the directory, as the rest of Homeroom sees them. Times are Unix seconds
//! (audit events: milliseconds). Lists are stored as JSON text.

use homeroom_core::{AccountId, ClientId, ProviderId, RefId, Role, TenantId};
use serde::{Deserialize, Serialize};

/// A district (or school) served by this Homeroom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Email domains of the district, lower case; used for home-realm discovery and as the
    /// default allowed domains of its Google provider.
    pub domains: Vec<String>,
    /// SSO session idle timeout (default 1800 s).
    pub session_idle_secs: i64,
    /// SSO session absolute timeout (default 43200 s).
    pub session_absolute_secs: i64,
    /// Seconds before the idle timeout at which apps warn (default 300 s: warning at 25 min).
    pub session_warning_secs: i64,
}

/// An upstream provider configured in a tenant. `config` is the kind-specific settings as
/// JSON (the `providers` crate defines and validates them); the directory only stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub id: ProviderId,
    pub tenant: TenantId,
    /// `oidc`, `google`, `microsoft`, ...
    pub kind: String,
    pub display_name: String,
    pub enabled: bool,
    pub config: serde_json::Value,
}

/// A downstream app (OAuth client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub client_id: ClientId,
    pub tenant: TenantId,
    pub name: String,
    /// SHA-256 hex of the client secret; `None` for a public client (PKCE required).
    pub secret_hash: Option<String>,
    /// `client_secret_basic` or `client_secret_post` (confidential clients), `none` (public).
    pub token_endpoint_auth_method: String,
    /// Exact-match list. A loopback `http://127.0.0.1/...` entry matches any port (RFC 8252).
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may ask for (`openid`, `profile`, `email`, `offline_access`, ...).
    pub allowed_scopes: Vec<String>,
    /// `RS256` (default) or `ES256`.
    pub id_token_alg: String,
    pub enabled: bool,
    /// OIDC third-party-initiated login URI of the app, if any.
    pub initiate_login_uri: Option<String>,
    /// Where a launch sends the user when the app has no initiate_login_uri.
    pub start_url: Option<String>,
    /// Origins allowed to call `/session/status` with CORS (exact match).
    pub allowed_origins: Vec<String>,
}

impl AppRecord {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Suspended,
    Archived,
}

impl std::fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AccountStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Archived => "archived",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// A Homeroom account in a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub tenant: TenantId,
    pub status: AccountStatus,
    /// Normalised (trimmed, lower-case) email, when known.
    pub email: Option<String>,
    /// Whether a trusted provider (or the roster) vouched for `email`.
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub username: Option<String>,
    pub roles: Vec<Role>,
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
    pub sign_in_count: i64,
}

/// "This upstream subject is this account." Unique on `(provider, subject)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderLink {
    pub account: AccountId,
    pub provider: ProviderId,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: i64,
}

/// A signing key for the tokens Homeroom issues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// `RS256` or `ES256`.
    pub alg: String,
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// The public JWK as published in JWKS.
    pub public_jwk: serde_json::Value,
    pub created_at: i64,
    /// `current`, `next`, `previous` or `retired`.
    pub status: String,
}

/// One step of one login attempt (or an admin change), joined by `ref_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique, time-ordered (ULID).
    pub id: String,
    pub ref_id: Option<RefId>,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub tenant: Option<TenantId>,
    /// What happened: `login.start`, `upstream.redirect`, `upstream.callback`,
    /// `login.refused`, `login.success`, `token.issued`, `config.imported`, ...
    pub kind: String,
    /// Catalogue code for refusals.
    pub code: Option<String>,
    pub provider: Option<ProviderId>,
    pub client: Option<ClientId>,
    pub account: Option<AccountId>,
    /// Free-form facts (no secrets): claims received (redacted), decisions and why.
    pub detail: serde_json::Value,
}

/// Filters for listing audit events (all optional, combined with AND), newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<TenantId>,
    pub code: Option<String>,
    pub kind: Option<String>,
    pub provider: Option<ProviderId>,
    pub client: Option<ClientId>,
    pub account: Option<AccountId>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: i64,
}
