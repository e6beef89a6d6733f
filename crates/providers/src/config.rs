//! Provider configuration: the per-kind settings (one serde struct per kind, unknown keys
//! refused), their validation into [`ConfigProblem`]s naming the key path (what
//! `check-config` and the admin API report), and [`build`], which turns valid settings into
//! a [`DynProvider`] without touching the network (discovery is lazy).
//!
//! It owns no I/O and no storage: the binary and the directory hand settings in.

use crate::classlink::{ClassLinkConfig, ClassLinkProvider};
use crate::clever::{CleverConfig, CleverProvider};
use crate::gg4l::{Gg4lConfig, Gg4lProvider};
use crate::google::{GoogleConfig, GoogleProvider};
use crate::http::HttpClient;
use crate::microsoft::{
    MSA_TENANT_ID, MicrosoftConfig, MicrosoftProvider, is_guid, is_multi_tenant,
};
use crate::oidc::{OidcConfig, OidcProvider};
use crate::{DynProvider, ProviderKind};
use homeroom_core::{Clock, ProviderId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// One configured upstream, as stored in the directory or read from TOML.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct ProviderSettings {
    /// The provider's id within its tenant (e.g. `google`, `demo-idp`).
    pub id: ProviderId,
    /// Shown on buttons and in error messages.
    pub display_name: String,
    /// `oidc`, `google`, `microsoft`, `clever`, `classlink` or `gg4l`.
    pub kind: String,
    /// Kind-specific settings (see [`OidcConfig`], [`GoogleConfig`], [`MicrosoftConfig`],
    /// [`CleverConfig`], [`ClassLinkConfig`], [`Gg4lConfig`]).
    pub config: Value,
    /// The tenant's email domains (Google's default `hosted_domains`).
    #[serde(default)]
    pub tenant_domains: Vec<String>,
}

/// One problem in a provider's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigProblem {
    /// Key path relative to the provider's config, e.g. `client_secret`, `scopes`,
    /// `allowed_tenants[1]`; `kind` for the kind itself; empty for the whole object.
    pub path: String,
    /// What is wrong, in words an admin can act on.
    pub reason: String,
}

impl ConfigProblem {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

const OIDC_KEYS: &[&str] = &[
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "discovery_url",
    "use_userinfo",
    "trust_email",
    "clock_skew_secs",
    "token_auth",
    "timeout_secs",
];
const GOOGLE_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "hosted_domains",
    "allow_consumer_accounts",
    "issuer",
    "discovery_url",
    "clock_skew_secs",
    "timeout_secs",
];
const MICROSOFT_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "tenant",
    "allowed_tenants",
    "authority",
    "clock_skew_secs",
    "timeout_secs",
];

const CLEVER_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "district_ids",
    "mode",
    "oauth_base",
    "api_base",
    "require_district_authorization",
    "require_email",
    "claims",
    "roles",
    "clock_skew_secs",
    "timeout_secs",
];
const CLASSLINK_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "tenant_ids",
    "launchpad_base",
    "api_base",
    "scopes",
    "require_email",
    "claims",
    "roles",
    "clock_skew_secs",
    "timeout_secs",
];
const GG4L_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "base_url",
    "jwks_url",
    "issuer",
    "district_ids",
    "org_ids",
    "org_guid",
    "invalidate_session",
    "require_email",
    "claims",
    "roles",
    "clock_skew_secs",
    "timeout_secs",
];

/// Whether `s` is an absolute `https` URL, or `http` on a loopback host (tests, demo).
pub fn is_acceptable_url(s: &str) -> Result<(), String> {
    let url = url::Url::parse(s).map_err(|e| format!("not an absolute URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host_str() {
            Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
            _ => Err("must use https (http only on 127.0.0.1, localhost or [::1])".into()),
        },
        other => Err(format!("scheme {other:?} not allowed; use https")),
    }
}

/// Parses a kind's config: unknown keys, missing required keys and type errors become
/// problems (all of them, not just the first).
fn parse<T: DeserializeOwned>(
    config: &Value,
    known: &[&str],
    required: &[&str],
) -> Result<T, Vec<ConfigProblem>> {
    let Some(obj) = config.as_object() else {
        return Err(vec![ConfigProblem::new(
            "",
            "provider config must be a table/object",
        )]);
    };
    let mut problems = Vec::new();
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            problems.push(ConfigProblem::new(
                key.clone(),
                format!("unknown key; expected one of {}", known.join(", ")),
            ));
        }
    }
    for key in required {
        match obj.get(*key) {
            None | Some(Value::Null) => problems.push(ConfigProblem::new(*key, "required")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                problems.push(ConfigProblem::new(*key, "must not be empty"))
            }
            _ => {}
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value::<T>(config.clone()).map_err(|e| {
        let msg = e.to_string();
        let path = msg
            .split('`')
            .nth(1)
            .filter(|p| known.contains(p))
            .unwrap_or("")
            .to_owned();
        vec![ConfigProblem::new(path, msg)]
    })
}

pub(crate) fn check_url(problems: &mut Vec<ConfigProblem>, path: &str, value: Option<&str>) {
    if let Some(v) = value
        && let Err(reason) = is_acceptable_url(v)
    {
        problems.push(ConfigProblem::new(path, reason));
    }
}

fn check_common(problems: &mut Vec<ConfigProblem>, skew: u64, timeout: u64) {
    if skew > 300 {
        problems.push(ConfigProblem::new("clock_skew_secs", "at most 300 seconds"));
    }
    if !(1..=60).contains(&timeout) {
        problems.push(ConfigProblem::new(
            "timeout_secs",
            "between 1 and 60 seconds",
        ));
    }
}

fn check_oidc(c: &OidcConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    check_url(&mut p, "issuer", Some(&c.issuer));
    check_url(&mut p, "discovery_url", c.discovery_url.as_deref());
    if !c.scopes.iter().any(|s| s == "openid") {
        p.push(ConfigProblem::new("scopes", "must include \"openid\""));
    }
    check_common(&mut p, c.clock_skew_secs, c.timeout_secs);
    p
}

fn check_google(c: &GoogleConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    check_url(&mut p, "issuer", Some(&c.issuer));
    check_url(&mut p, "discovery_url", c.discovery_url.as_deref());
    if let Some(domains) = &c.hosted_domains {
        for (i, d) in domains.iter().enumerate() {
            if d.trim().is_empty() || d.contains(['/', '@', ' ']) || d == "*" {
                p.push(ConfigProblem::new(
                    format!("hosted_domains[{i}]"),
                    "must be a domain name like district.org",
                ));
            }
        }
    }
    check_common(&mut p, c.clock_skew_secs, c.timeout_secs);
    p
}

fn check_microsoft(c: &MicrosoftConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    check_url(&mut p, "authority", Some(&c.authority));
    let tenant = c.tenant.to_ascii_lowercase();
    if tenant == "consumers" || tenant == MSA_TENANT_ID {
        p.push(ConfigProblem::new(
            "tenant",
            "personal Microsoft accounts (consumers) cannot be used for schools",
        ));
    } else if is_multi_tenant(&tenant) {
        if c.allowed_tenants.is_empty() {
            p.push(ConfigProblem::new(
                "allowed_tenants",
                format!(
                    "required with tenant = \"{}\": list the district's tenant ids",
                    c.tenant
                ),
            ));
        }
    } else if !is_guid(&tenant)
        && (!tenant.contains('.') || tenant.contains(['/', '{', '}', ' ', '?', '#']))
    {
        p.push(ConfigProblem::new(
            "tenant",
            "must be a tenant GUID, a verified domain, \"organizations\" or \"common\"",
        ));
    }
    for (i, t) in c.allowed_tenants.iter().enumerate() {
        if !is_guid(t) {
            p.push(ConfigProblem::new(
                format!("allowed_tenants[{i}]"),
                "must be a tenant GUID",
            ));
        } else if t.eq_ignore_ascii_case(MSA_TENANT_ID) {
            p.push(ConfigProblem::new(
                format!("allowed_tenants[{i}]"),
                "the personal-account tenant is not a school",
            ));
        }
    }
    check_common(&mut p, c.clock_skew_secs, c.timeout_secs);
    p
}

/// An allow-list of tenant ids: at least one (when `required`), none empty, no wildcard.
pub(crate) fn check_ids(
    problems: &mut Vec<ConfigProblem>,
    path: &str,
    ids: &[String],
    required: bool,
) {
    if required && ids.is_empty() {
        problems.push(ConfigProblem::new(
            path,
            "list at least one id: logins from any other district are refused",
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if id.trim().is_empty() || id == "*" || id.contains(['/', ' ', '?', '#']) {
            problems.push(ConfigProblem::new(
                format!("{path}[{i}]"),
                "must be an id as the provider sends it",
            ));
        }
    }
}

fn check_clever(c: &CleverConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    check_url(&mut p, "oauth_base", Some(&c.oauth_base));
    check_url(&mut p, "api_base", Some(&c.api_base));
    check_ids(&mut p, "district_ids", &c.district_ids, true);
    check_common(&mut p, c.clock_skew_secs, c.timeout_secs);
    p
}

fn check_classlink(c: &ClassLinkConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    check_url(&mut p, "launchpad_base", Some(&c.launchpad_base));
    check_url(&mut p, "api_base", Some(&c.api_base));
    check_ids(&mut p, "tenant_ids", &c.tenant_ids, true);
    if !c.scopes.iter().any(|s| s == "openid") {
        p.push(ConfigProblem::new("scopes", "must include \"openid\""));
    }
    check_common(&mut p, c.clock_skew_secs, c.timeout_secs);
    p
}

fn check_gg4l(c: &Gg4lConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    check_url(&mut p, "base_url", Some(&c.base_url));
    check_url(&mut p, "jwks_url", Some(&c.jwks_url));
    if let Some(i) = &c.issuer
        && i.trim().is_empty()
    {
        p.push(ConfigProblem::new("issuer", "must not be empty"));
    }
    if c.district_ids.is_empty() && c.org_ids.is_empty() {
        p.push(ConfigProblem::new(
            "district_ids",
            "list the district GUIDs (district_ids) or org ids (org_ids) to accept",
        ));
    }
    check_ids(&mut p, "district_ids", &c.district_ids, false);
    check_ids(&mut p, "org_ids", &c.org_ids, false);
    check_common(&mut p, c.clock_skew_secs, c.timeout_secs);
    p
}

const CLEVER_REQUIRED: &[&str] = &["client_id", "client_secret", "district_ids"];
const CLASSLINK_REQUIRED: &[&str] = &["client_id", "client_secret", "tenant_ids"];
const GG4L_REQUIRED: &[&str] = &["client_id", "client_secret", "jwks_url"];

pub(crate) fn parse_kind<T: DeserializeOwned>(
    config: &Value,
    known: &[&str],
    required: &[&str],
    check: fn(&T) -> Vec<ConfigProblem>,
) -> Result<T, Vec<ConfigProblem>> {
    let c = parse::<T>(config, known, required)?;
    let problems = check(&c);
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(problems)
    }
}

/// Every problem in a provider's `config` for `kind`; empty when valid.
pub fn validate(kind: &str, config: &Value) -> Vec<ConfigProblem> {
    let result = match ProviderKind::parse(kind) {
        None => {
            return vec![ConfigProblem::new(
                "kind",
                format!(
                    "unknown provider kind {kind:?}; expected oidc, google, microsoft, clever, classlink, gg4l or saml"
                ),
            )];
        }
        Some(ProviderKind::Oidc) => parse_kind::<OidcConfig>(
            config,
            OIDC_KEYS,
            &["issuer", "client_id", "client_secret"],
            check_oidc,
        )
        .map(|_| ()),
        Some(ProviderKind::Google) => parse_kind::<GoogleConfig>(
            config,
            GOOGLE_KEYS,
            &["client_id", "client_secret"],
            check_google,
        )
        .map(|_| ()),
        Some(ProviderKind::Microsoft) => parse_kind::<MicrosoftConfig>(
            config,
            MICROSOFT_KEYS,
            &["client_id", "client_secret", "tenant"],
            check_microsoft,
        )
        .map(|_| ()),
        Some(ProviderKind::Clever) => {
            parse_kind::<CleverConfig>(config, CLEVER_KEYS, CLEVER_REQUIRED, check_clever)
                .map(|_| ())
        }
        Some(ProviderKind::ClassLink) => parse_kind::<ClassLinkConfig>(
            config,
            CLASSLINK_KEYS,
            CLASSLINK_REQUIRED,
            check_classlink,
        )
        .map(|_| ()),
        Some(ProviderKind::Gg4l) => {
            parse_kind::<Gg4lConfig>(config, GG4L_KEYS, GG4L_REQUIRED, check_gg4l).map(|_| ())
        }
        // SAML (feature `saml`): see `crate::saml`.
        Some(ProviderKind::Saml) => saml_kind::validate(config),
    };
    result.err().unwrap_or_default()
}

/// Builds a provider from valid settings. Never touches the network: discovery and JWKS
/// are fetched on the first login and cached.
pub fn build(
    settings: &ProviderSettings,
    http: &HttpClient,
    clock: Arc<dyn Clock>,
) -> Result<DynProvider, Vec<ConfigProblem>> {
    let id = settings.id.clone();
    let name = settings.display_name.clone();
    match ProviderKind::parse(&settings.kind) {
        None => Err(vec![ConfigProblem::new(
            "kind",
            format!("unknown provider kind {:?}", settings.kind),
        )]),
        Some(ProviderKind::Oidc) => {
            let c = parse_kind::<OidcConfig>(
                &settings.config,
                OIDC_KEYS,
                &["issuer", "client_id", "client_secret"],
                check_oidc,
            )?;
            Ok(Arc::new(OidcProvider::new(id, name, &c, http, clock)))
        }
        Some(ProviderKind::Google) => {
            let c = parse_kind::<GoogleConfig>(
                &settings.config,
                GOOGLE_KEYS,
                &["client_id", "client_secret"],
                check_google,
            )?;
            let domains = c
                .hosted_domains
                .clone()
                .unwrap_or_else(|| settings.tenant_domains.clone());
            if domains.is_empty() && !c.allow_consumer_accounts {
                return Err(vec![ConfigProblem::new(
                    "hosted_domains",
                    "no hosted domain (and the tenant has no domains) while consumer accounts are refused: nobody could sign in",
                )]);
            }
            Ok(Arc::new(GoogleProvider::new(
                id, name, &c, domains, http, clock,
            )))
        }
        Some(ProviderKind::Microsoft) => {
            let c = parse_kind::<MicrosoftConfig>(
                &settings.config,
                MICROSOFT_KEYS,
                &["client_id", "client_secret", "tenant"],
                check_microsoft,
            )?;
            Ok(Arc::new(MicrosoftProvider::new(id, name, &c, http, clock)))
        }
        Some(ProviderKind::Clever) => {
            let c = parse_kind::<CleverConfig>(
                &settings.config,
                CLEVER_KEYS,
                CLEVER_REQUIRED,
                check_clever,
            )?;
            Ok(Arc::new(CleverProvider::new(id, name, &c, http, clock)))
        }
        Some(ProviderKind::ClassLink) => {
            let c = parse_kind::<ClassLinkConfig>(
                &settings.config,
                CLASSLINK_KEYS,
                CLASSLINK_REQUIRED,
                check_classlink,
            )?;
            Ok(Arc::new(ClassLinkProvider::new(id, name, &c, http, clock)))
        }
        Some(ProviderKind::Gg4l) => {
            let c =
                parse_kind::<Gg4lConfig>(&settings.config, GG4L_KEYS, GG4L_REQUIRED, check_gg4l)?;
            Ok(Arc::new(Gg4lProvider::new(id, name, &c, http, clock)))
        }
        // SAML (feature `saml`): see `crate::saml`.
        Some(ProviderKind::Saml) => saml_kind::build(settings, http, clock),
    }
}

/// Dispatch of `kind = "saml"`, which exists only with the `saml` cargo feature.
#[cfg(feature = "saml")]
mod saml_kind {
    use super::*;
    pub(super) fn validate(config: &Value) -> Result<(), Vec<ConfigProblem>> {
        crate::saml::validate_config(config).map(|_| ())
    }
    pub(super) fn build(
        settings: &ProviderSettings,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Result<DynProvider, Vec<ConfigProblem>> {
        Ok(Arc::new(crate::saml::SamlProvider::build(
            settings, http, clock,
        )?))
    }
}

/// Without the `saml` feature a SAML provider is a configuration problem, never a panic.
#[cfg(not(feature = "saml"))]
mod saml_kind {
    use super::*;
    fn unsupported() -> Vec<ConfigProblem> {
        vec![ConfigProblem::new(
            "kind",
            "this Homeroom was built without SAML support (cargo feature `saml`)",
        )]
    }
    pub(super) fn validate(_config: &Value) -> Result<(), Vec<ConfigProblem>> {
        Err(unsupported())
    }
    pub(super) fn build(
        _settings: &ProviderSettings,
        _http: &HttpClient,
        _clock: Arc<dyn Clock>,
    ) -> Result<DynProvider, Vec<ConfigProblem>> {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(kind: &str, config: Value) -> Vec<String> {
        validate(kind, &config)
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn valid_configs_have_no_problems() {
        assert!(
            paths(
                "oidc",
                json!({"issuer": "https://idp.example", "client_id": "a", "client_secret": "b"})
            )
            .is_empty()
        );
        assert!(paths("google", json!({"client_id": "a", "client_secret": "b"})).is_empty());
        assert!(paths("microsoft", json!({"client_id": "a", "client_secret": "b", "tenant": MSA_TENANT_ID.replace('9', "1")})).is_empty());
        assert!(
            paths(
                "oidc",
                json!({"issuer": "http://127.0.0.1:9400", "client_id": "a", "client_secret": "b"})
            )
            .is_empty()
        );
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            "oidc",
            "google",
            "microsoft",
            "clever",
            "classlink",
            "gg4l",
            "saml",
        ] {
            let kind = ProviderKind::parse(k).unwrap();
            assert_eq!(kind.as_str(), k);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(k));
            assert_eq!(
                serde_json::from_value::<ProviderKind>(json!(k)).unwrap(),
                kind
            );
        }
    }

    #[test]
    fn portal_kinds_build_without_the_network() {
        let http = HttpClient::with_defaults().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(homeroom_core::SystemClock);
        for (kind, config) in [
            (
                "clever",
                json!({"client_id": "a", "client_secret": "b", "district_ids": ["d1"]}),
            ),
            (
                "clever",
                json!({"client_id": "a", "client_secret": "b", "district_ids": ["d1"], "mode": "oidc"}),
            ),
            (
                "classlink",
                json!({"client_id": "a", "client_secret": "b", "tenant_ids": [2291]}),
            ),
            (
                "gg4l",
                json!({"client_id": "a", "client_secret": "b", "jwks_url": "https://192.0.2.1/jwks", "org_ids": [1]}),
            ),
        ] {
            let settings = ProviderSettings {
                id: ProviderId::new(kind),
                display_name: kind.into(),
                kind: kind.into(),
                config,
                tenant_domains: vec![],
            };
            let p = build(&settings, &http, clock.clone()).unwrap();
            assert_eq!(p.kind().as_str(), kind);
            assert!(p.as_redirect().is_some());
        }
    }

    #[test]
    fn unknown_kind_and_unknown_keys() {
        assert_eq!(paths("saml2", json!({})), vec!["kind"]);
        assert_eq!(
            paths(
                "google",
                json!({"client_id": "a", "client_secret": "b", "clientsecret": "x"})
            ),
            vec!["clientsecret"]
        );
    }

    #[test]
    fn missing_or_empty_credentials() {
        assert_eq!(
            paths(
                "oidc",
                json!({"issuer": "https://i.example", "client_id": "a"})
            ),
            vec!["client_secret"]
        );
        assert_eq!(
            paths("google", json!({"client_id": "", "client_secret": "b"})),
            vec!["client_id"]
        );
        assert_eq!(paths("oidc", json!("nope")), vec![""]);
    }

    #[test]
    fn urls_must_be_https_except_loopback() {
        let c = |issuer: &str| json!({"issuer": issuer, "client_id": "a", "client_secret": "b"});
        assert_eq!(paths("oidc", c("http://idp.example")), vec!["issuer"]);
        assert_eq!(paths("oidc", c("/relative")), vec!["issuer"]);
        assert_eq!(paths("oidc", c("javascript:alert(1)")), vec!["issuer"]);
        assert!(paths("oidc", c("http://localhost:8080/x")).is_empty());
        assert!(paths("oidc", c("http://[::1]:8080")).is_empty());
        let d = json!({"issuer": "https://i.example", "client_id": "a", "client_secret": "b", "discovery_url": "http://evil.example/d"});
        assert_eq!(paths("oidc", d), vec!["discovery_url"]);
        assert_eq!(
            paths(
                "microsoft",
                json!({"client_id": "a", "client_secret": "b", "tenant": "district.org", "authority": "ftp://x"})
            ),
            vec!["authority"]
        );
    }

    #[test]
    fn scopes_need_openid_and_token_auth_is_checked() {
        let c = json!({"issuer": "https://i.example", "client_id": "a", "client_secret": "b", "scopes": ["email"]});
        assert_eq!(paths("oidc", c), vec!["scopes"]);
        let c = json!({"issuer": "https://i.example", "client_id": "a", "client_secret": "b", "token_auth": "private_key_jwt"});
        let problems = validate("oidc", &c);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("private_key_jwt"));
    }

    #[test]
    fn microsoft_tenants() {
        let c = |tenant: &str, allowed: Value| json!({"client_id": "a", "client_secret": "b", "tenant": tenant, "allowed_tenants": allowed});
        assert_eq!(
            paths("microsoft", c("organizations", json!([]))),
            vec!["allowed_tenants"]
        );
        assert_eq!(
            paths("microsoft", c("common", json!([]))),
            vec!["allowed_tenants"]
        );
        assert!(
            paths(
                "microsoft",
                c(
                    "organizations",
                    json!(["3c9e2f41-6b1a-4d0e-9f5c-7a2b8d4e6f10"])
                )
            )
            .is_empty()
        );
        assert_eq!(
            paths("microsoft", c("consumers", json!([]))),
            vec!["tenant"]
        );
        assert_eq!(
            paths("microsoft", c("not a tenant", json!([]))),
            vec!["tenant"]
        );
        assert_eq!(
            paths("microsoft", c("common", json!(["district.org"]))),
            vec!["allowed_tenants[0]"]
        );
        assert_eq!(
            paths("microsoft", c("common", json!([MSA_TENANT_ID]))),
            vec!["allowed_tenants[0]"]
        );
        assert!(paths("microsoft", c("district.org", json!([]))).is_empty());
    }

    #[test]
    fn limits_are_bounded() {
        let c = json!({"client_id": "a", "client_secret": "b", "timeout_secs": 0, "clock_skew_secs": 3600});
        let mut p = paths("google", c);
        p.sort();
        assert_eq!(p, vec!["clock_skew_secs", "timeout_secs"]);
    }

    #[test]
    fn build_does_not_touch_the_network_and_checks_domains() {
        let http = HttpClient::with_defaults().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(homeroom_core::SystemClock);
        let settings = ProviderSettings {
            id: ProviderId::new("google"),
            display_name: "Google".into(),
            kind: "google".into(),
            // An unroutable issuer: building must still succeed.
            config: json!({"client_id": "a", "client_secret": "b", "issuer": "https://192.0.2.1"}),
            tenant_domains: vec!["district.org".into()],
        };
        let p = build(&settings, &http, clock.clone()).unwrap();
        assert_eq!(p.kind(), ProviderKind::Google);
        assert_eq!(p.expected_issuer().as_deref(), Some("https://192.0.2.1"));
        assert!(p.as_redirect().is_some());
        let none = ProviderSettings {
            tenant_domains: vec![],
            ..settings
        };
        let Err(problems) = build(&none, &http, clock) else {
            panic!("built without domains")
        };
        assert_eq!(problems[0].path, "hosted_domains");
    }
}
