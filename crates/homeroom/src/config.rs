//! The configuration file (`config/homeroom.toml`): parsing with figment (TOML plus
//! `HOMEROOM_...` environment overrides, `__` between levels), validation that reports
//! every problem with its key path, and the import into the directory (idempotent).

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use homeroom_core::crypto::sha256_hex;
use homeroom_core::{ClientId, ProviderId, TenantId};
use homeroom_directory::{AppRecord, Directory, ProviderRecord, Tenant};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[limits]`: rate limits at the sign-in entry points (per minute, with a burst).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "dtrue")]
    pub enabled: bool,
    /// Per client address: over `soft` a challenge, over `hard` 429.
    pub ip_soft_per_minute: Option<u64>,
    pub ip_hard_per_minute: Option<u64>,
    /// Per /24 (IPv4) or /64 (IPv6) network.
    pub network_soft_per_minute: Option<u64>,
    pub network_hard_per_minute: Option<u64>,
    /// Per trusted network (tenants' `trusted_networks`).
    pub trusted_soft_per_minute: Option<u64>,
    pub trusted_hard_per_minute: Option<u64>,
    /// Per OAuth client at the token endpoint.
    pub client_per_minute: Option<u64>,
    /// Per tenant: authorization requests of one district from every address (429 over it).
    pub tenant_per_minute: Option<u64>,
    /// Proof-of-work difficulty in bits (default 16: well under a second on a Chromebook).
    pub challenge_bits: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ip_soft_per_minute: None,
            ip_hard_per_minute: None,
            network_soft_per_minute: None,
            network_hard_per_minute: None,
            trusted_soft_per_minute: None,
            trusted_hard_per_minute: None,
            client_per_minute: None,
            tenant_per_minute: None,
            challenge_bits: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1:8080; `--listen` and `HOMEROOM_LISTEN` win).
    pub listen: Option<String>,
    /// Public base URL and issuer (default `http://<listen>`).
    pub public_url: Option<String>,
    /// Directory for the SQLite file and demo keys (default `./data`).
    pub data_dir: Option<String>,
    /// `text` (default) or `json` logs.
    pub log_format: Option<String>,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Outgoing mail for invitations and password resets (`smtp://host:port`,
    /// `smtps://user:password@host`, `smtp://host?tls=required`). Without it mail stays in
    /// the directory's outbox and IT copies links from the console.
    pub smtp_url: Option<String>,
    /// From address of that mail (default `Homeroom <no-reply@homeroom.invalid>`).
    pub mail_from: Option<String>,
    /// Key that classroom sign-in codes are encrypted with: 32 bytes as 64 hex digits or
    /// base64. Without it no tenant has sign-in codes. Keep it secret; changing it makes
    /// every stored code unreadable (teachers then generate new ones).
    pub classroom_code_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (default `sqlite://<data_dir>/homeroom.db`) or `postgres://...`.
    pub directory: Option<String>,
    /// `memory://` (default) or `redis://host:port`.
    pub sessions: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default = "d30")]
    pub session_idle_minutes: i64,
    #[serde(default = "d25")]
    pub session_warning_minutes: i64,
    #[serde(default = "d12")]
    pub session_absolute_hours: i64,
    /// The district's school networks (CIDR), e.g. a school's NAT address: their own, larger
    /// rate-limit budget, so a whole school signing in at 8 a.m. is not challenged.
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    /// Bootstrap IT admins (emails): on first start an account with the `it_admin` role is
    /// created for each; when that person signs in through a provider that vouches for the
    /// address, the sign-in links to it.
    #[serde(default)]
    pub admins: Vec<String>,
    /// SSO sign-ins must map to an active account of the last roster import (default false).
    #[serde(default)]
    pub roster_required: bool,
    /// Learners may sign in with a class code and a sign-in code their teacher can show
    /// (needs `server.classroom_code_key`; default false).
    #[serde(default)]
    pub classroom_codes: bool,
    /// Families: policies the primary guardian of every family must accept (current
    /// versions; a new version asks again), and the days a parent access code stays valid
    /// (default 30).
    #[serde(default)]
    pub family_policies: Vec<FamilyPolicyConfig>,
    #[serde(default)]
    pub parent_code_days: Option<i64>,
    /// QR badges of this tenant's class sheets sign learners in from any address, not only
    /// from its `trusted_networks` (default false).
    #[serde(default)]
    pub classroom_badges_anywhere: bool,
}

/// One required family policy of a tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyPolicyConfig {
    pub name: String,
    pub version: String,
    pub url: String,
}

fn d30() -> i64 {
    30
}
fn d25() -> i64 {
    25
}
fn d12() -> i64 {
    12
}
fn dtrue() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderConfig {
    pub tenant: String,
    pub kind: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default = "dtrue")]
    pub enabled: bool,
    /// Name of an environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Everything else is the kind-specific settings (validated by the providers crate).
    #[serde(flatten)]
    pub settings: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub tenant: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Confidential clients: the secret (prefer `client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `client_secret_basic` (default for confidential), `client_secret_post` or `none` (public).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_alg: Option<String>,
    #[serde(default = "dtrue")]
    pub enabled: bool,
    /// Native/mobile app: allows private-use URI schemes (`com.example.app:/cb`).
    #[serde(default)]
    pub native: bool,
    #[serde(default)]
    pub initiate_login_uri: Option<String>,
    #[serde(default)]
    pub start_url: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Assign the app to these roles only (`student`, `teacher`, ...; empty: everyone).
    #[serde(default)]
    pub assign_roles: Vec<String>,
    /// ... to people of these schools (roster org sourcedIds) only.
    #[serde(default)]
    pub assign_schools: Vec<String>,
    /// ... to these grades only (OneRoster grades, e.g. "07").
    #[serde(default)]
    pub assign_grades: Vec<String>,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

fn problem(path: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Loads a config file with `HOMEROOM_` environment overrides. Parse errors come back as
/// problems with their key paths.
pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    if !path.exists() {
        return Err(vec![problem(path.display().to_string(), "file not found")]);
    }
    let fig = Figment::new().merge(Toml::file(path)).merge(
        Env::prefixed("HOMEROOM_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                ["server__", "store__", "tenants__", "providers__", "apps__"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .split("__"),
    );
    fig.extract::<Config>().map_err(|e| {
        e.into_iter()
            .map(|e| {
                let path = if e.path.is_empty() {
                    "(file)".to_owned()
                } else {
                    e.path.join(".")
                };
                problem(path, e.kind.to_string())
            })
            .collect()
    })
}

pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
const KNOWN_SCOPES: [&str; 6] = [
    "openid",
    "profile",
    "email",
    "offline_access",
    "roles",
    "homeroom:admin",
];

fn is_loopback_http(u: &url::Url) -> bool {
    u.scheme() == "http"
        && matches!(
            u.host_str(),
            Some("127.0.0.1") | Some("[::1]") | Some("localhost")
        )
}

/// Checks one redirect URI of an app; `None` when acceptable (shared with the admin API).
pub use homeroom_broker::oauth::check_redirect_uri;

fn secret_of(inline: &Option<String>, env: &Option<String>) -> Option<String> {
    env.as_ref()
        .and_then(|v| std::env::var(v).ok())
        .filter(|s| !s.is_empty())
        .or_else(|| inline.clone())
}

/// The provider's kind-specific settings as JSON, with the secret resolved from the env.
pub fn provider_settings(p: &ProviderConfig) -> serde_json::Value {
    let mut m: serde_json::Map<String, serde_json::Value> =
        p.settings.clone().into_iter().collect();
    // `tenant` is Homeroom's tenant; the Entra directory is written `entra_tenant`.
    if p.kind == "microsoft"
        && let Some(v) = m.remove("entra_tenant")
    {
        m.insert("tenant".into(), v);
    }
    if let Some(s) = p
        .client_secret_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok())
    {
        m.insert("client_secret".into(), serde_json::Value::String(s));
    }
    serde_json::Value::Object(m)
}

/// Validates the whole configuration; every problem, not just the first.
pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(u) = &cfg.server.public_url {
        match url::Url::parse(u) {
            Ok(url) if url.scheme() == "https" || is_loopback_http(&url) => {}
            Ok(_) => out.push(problem(
                "server.public_url",
                "must be https (plain http only on loopback)",
            )),
            Err(e) => out.push(problem("server.public_url", format!("not a URL: {e}"))),
        }
    }
    if let Some(s) = &cfg.store.sessions
        && !(s.starts_with("memory://") || s.starts_with("redis://") || s.starts_with("rediss://"))
    {
        out.push(problem(
            "store.sessions",
            "use memory:// or redis://host:port",
        ));
    }
    if let Some(d) = &cfg.store.directory
        && !(d.starts_with("sqlite:")
            || d.starts_with("postgres://")
            || d.starts_with("postgresql://"))
    {
        out.push(problem(
            "store.directory",
            "use sqlite://PATH or postgres://...",
        ));
    }
    let mut all_domains: BTreeMap<String, String> = BTreeMap::new();
    for (id, t) in &cfg.tenants {
        let base = format!("tenants.{id}");
        if t.name.trim().is_empty() {
            out.push(problem(format!("{base}.name"), "must not be empty"));
        }
        for (i, d) in t.domains.iter().enumerate() {
            if d.is_empty() || d.contains('@') || d.contains('/') || d != &d.to_ascii_lowercase() {
                out.push(problem(
                    format!("{base}.domains[{i}]"),
                    "must be a lower-case domain name like district.org",
                ));
            }
            if let Some(other) = all_domains.insert(d.clone(), id.clone()) {
                out.push(problem(
                    format!("{base}.domains[{i}]"),
                    format!("domain also belongs to tenant {other}"),
                ));
            }
        }
        for (i, a) in t.admins.iter().enumerate() {
            let domain_ok = a.rsplit_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && t.domains.iter().any(|td| td.eq_ignore_ascii_case(d))
            });
            if !domain_ok {
                out.push(problem(
                    format!("{base}.admins[{i}]"),
                    "must be an email of one of the tenant's domains",
                ));
            }
        }
        for (i, p) in t.family_policies.iter().enumerate() {
            let at = format!("{base}.family_policies[{i}]");
            if p.name.trim().is_empty() || p.version.trim().is_empty() {
                out.push(problem(at.clone(), "name and version must not be empty"));
            }
            if !url::Url::parse(&p.url).is_ok_and(|u| u.scheme() == "https" || u.scheme() == "http")
            {
                out.push(problem(format!("{at}.url"), "must be an http(s) URL"));
            }
        }
        if t.parent_code_days.is_some_and(|d| !(1..=365).contains(&d)) {
            out.push(problem(
                format!("{base}.parent_code_days"),
                "must be between 1 and 365",
            ));
        }
        for (i, n) in t.trusted_networks.iter().enumerate() {
            if n.parse::<ipnet::IpNet>().is_err() && n.parse::<std::net::IpAddr>().is_err() {
                out.push(problem(
                    format!("{base}.trusted_networks[{i}]"),
                    "not a CIDR network like 203.0.113.0/24 or an address",
                ));
            }
        }
        if t.session_idle_minutes <= 0 || t.session_absolute_hours <= 0 {
            out.push(problem(
                format!("{base}.session_idle_minutes"),
                "timeouts must be positive",
            ));
        }
        if t.session_warning_minutes >= t.session_idle_minutes || t.session_warning_minutes <= 0 {
            out.push(problem(
                format!("{base}.session_warning_minutes"),
                "must be positive and less than session_idle_minutes",
            ));
        }
    }
    for (id, p) in &cfg.providers {
        let base = format!("providers.{id}");
        if !cfg.tenants.contains_key(&p.tenant) {
            out.push(problem(
                format!("{base}.tenant"),
                format!("unknown tenant {:?}", p.tenant),
            ));
        }
        if id.contains('/') || id.is_empty() {
            out.push(problem(base.clone(), "provider ids must not contain '/'"));
        }
        if let Some(v) = &p.client_secret_env
            && std::env::var(v).is_err()
        {
            out.push(problem(
                format!("{base}.client_secret_env"),
                format!("environment variable {v} is not set"),
            ));
        }
        for pr in homeroom_providers::validate(&p.kind, &provider_settings(p)) {
            let path = if pr.path.is_empty() {
                base.clone()
            } else {
                format!("{base}.{}", pr.path)
            };
            let path = if p.kind == "microsoft" && pr.path == "tenant" {
                format!("{base}.entra_tenant")
            } else {
                path
            };
            out.push(problem(path, pr.reason));
        }
    }
    for (id, a) in &cfg.apps {
        let base = format!("apps.{id}");
        if !cfg.tenants.contains_key(&a.tenant) {
            out.push(problem(
                format!("{base}.tenant"),
                format!("unknown tenant {:?}", a.tenant),
            ));
        }
        let secret = secret_of(&a.client_secret, &a.client_secret_env);
        let method = a.token_endpoint_auth_method.clone().unwrap_or_else(|| {
            if secret.is_some() {
                "client_secret_basic".into()
            } else {
                "none".into()
            }
        });
        match method.as_str() {
            "none" if secret.is_some() => out.push(problem(
                format!("{base}.client_secret"),
                "a public client (token_endpoint_auth_method = none) must not have a secret",
            )),
            "client_secret_basic" | "client_secret_post" if secret.is_none() => out.push(problem(
                format!("{base}.client_secret"),
                "missing: set client_secret_env (or client_secret) for a confidential client",
            )),
            "none" | "client_secret_basic" | "client_secret_post" => {}
            other => out.push(problem(
                format!("{base}.token_endpoint_auth_method"),
                format!("unsupported method {other:?}"),
            )),
        }
        if a.client_secret.as_ref().is_some_and(|s| s.len() < 8) {
            out.push(problem(
                format!("{base}.client_secret"),
                "too short (at least 8 characters; 32 random bytes recommended)",
            ));
        }
        if a.redirect_uris.is_empty() {
            out.push(problem(
                format!("{base}.redirect_uris"),
                "at least one redirect URI is required",
            ));
        }
        for (i, u) in a.redirect_uris.iter().enumerate() {
            if let Some(reason) = check_redirect_uri(u, a.native) {
                out.push(problem(format!("{base}.redirect_uris[{i}]"), reason));
            }
        }
        for (i, u) in a.post_logout_redirect_uris.iter().enumerate() {
            if let Some(reason) = check_redirect_uri(u, a.native) {
                out.push(problem(
                    format!("{base}.post_logout_redirect_uris[{i}]"),
                    reason,
                ));
            }
        }
        for (field, v) in [
            ("initiate_login_uri", &a.initiate_login_uri),
            ("start_url", &a.start_url),
        ] {
            if let Some(u) = v
                && let Some(reason) = check_redirect_uri(u, false)
            {
                out.push(problem(format!("{base}.{field}"), reason));
            }
        }
        if let Some(scopes) = &a.scopes {
            for (i, s) in scopes.iter().enumerate() {
                if !KNOWN_SCOPES.contains(&s.as_str()) {
                    out.push(problem(
                        format!("{base}.scopes[{i}]"),
                        format!("unknown scope {s:?}"),
                    ));
                }
            }
            if !scopes.iter().any(|s| s == "openid") {
                out.push(problem(format!("{base}.scopes"), "must include openid"));
            }
        }
        for (i, r) in a.assign_roles.iter().enumerate() {
            if r.parse::<homeroom_core::Role>().is_err() {
                out.push(problem(
                    format!("{base}.assign_roles[{i}]"),
                    format!("unknown role {r:?}"),
                ));
            }
        }
        if let Some(alg) = &a.id_token_alg
            && !matches!(alg.as_str(), "RS256" | "ES256")
        {
            out.push(problem(
                format!("{base}.id_token_alg"),
                "must be RS256 or ES256",
            ));
        }
    }
    out
}

/// Imports tenants, providers and apps into the directory (upserts: running it twice
/// changes nothing).
pub async fn import(
    cfg: &Config,
    dir: &Directory,
) -> Result<(), homeroom_directory::DirectoryError> {
    for (id, t) in &cfg.tenants {
        dir.upsert_tenant(&Tenant {
            id: TenantId::new(id.clone()),
            name: t.name.clone(),
            domains: t.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            session_idle_secs: t.session_idle_minutes * 60,
            session_absolute_secs: t.session_absolute_hours * 3600,
            session_warning_secs: (t.session_idle_minutes - t.session_warning_minutes) * 60,
        })
        .await?;
    }
    for (id, t) in &cfg.tenants {
        let tenant = TenantId::new(id.clone());
        for email in &t.admins {
            if dir.find_accounts_by_email(&tenant, email).await?.is_empty() {
                let now = homeroom_core::Clock::now(&homeroom_core::SystemClock);
                let account = homeroom_directory::Account {
                    id: homeroom_core::AccountId::generate(),
                    tenant: tenant.clone(),
                    status: homeroom_directory::AccountStatus::Active,
                    email: Some(email.trim().to_ascii_lowercase()),
                    email_verified: true,
                    name: None,
                    given_name: None,
                    family_name: None,
                    username: None,
                    roles: vec![homeroom_core::Role::ItAdmin],
                    created_at: now,
                    last_sign_in_at: None,
                    sign_in_count: 0,
                };
                dir.create_account(&account, None).await?;
            }
        }
    }
    for (id, p) in &cfg.providers {
        dir.upsert_provider(&ProviderRecord {
            id: ProviderId::new(id.clone()),
            tenant: TenantId::new(p.tenant.clone()),
            kind: p.kind.clone(),
            display_name: p.display_name.clone().unwrap_or_else(|| id.clone()),
            enabled: p.enabled,
            config: provider_settings(p),
        })
        .await?;
    }
    for (id, a) in &cfg.apps {
        let secret = secret_of(&a.client_secret, &a.client_secret_env);
        let method = a.token_endpoint_auth_method.clone().unwrap_or_else(|| {
            if secret.is_some() {
                "client_secret_basic".into()
            } else {
                "none".into()
            }
        });
        dir.upsert_app(&AppRecord {
            client_id: ClientId::new(id.clone()),
            tenant: TenantId::new(a.tenant.clone()),
            name: a.name.clone().unwrap_or_else(|| id.clone()),
            secret_hash: secret.as_deref().map(sha256_hex),
            token_endpoint_auth_method: method,
            redirect_uris: a.redirect_uris.clone(),
            post_logout_redirect_uris: a.post_logout_redirect_uris.clone(),
            allowed_scopes: a
                .scopes
                .clone()
                .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()),
            id_token_alg: a.id_token_alg.clone().unwrap_or_else(|| "RS256".into()),
            enabled: a.enabled,
            initiate_login_uri: a.initiate_login_uri.clone(),
            start_url: a.start_url.clone(),
            allowed_origins: a.allowed_origins.clone(),
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("https://app.example.test/cb", false).is_none());
        assert!(check_redirect_uri("http://127.0.0.1:8081/cb", false).is_none());
        assert!(check_redirect_uri("http://app.example.test/cb", false).is_some());
        assert!(check_redirect_uri("javascript:alert(document.domain)//", false).is_some());
        assert!(check_redirect_uri("data:text/html,x", true).is_some());
        assert!(check_redirect_uri("https://*.example.test/cb", false).is_some());
        assert!(check_redirect_uri("cb", false).is_some());
        assert!(check_redirect_uri("com.example.app:/cb", true).is_none());
        assert!(check_redirect_uri("com.example.app:/cb", false).is_some());
        assert!(check_redirect_uri("https://a.test/cb#f", false).is_some());
    }
}
