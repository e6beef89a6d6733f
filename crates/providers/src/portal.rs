//! Shared machinery of the school-portal adapters ([`clever`](crate::clever),
//! [`classlink`](crate::classlink), [`gg4l`](crate::gg4l)).
//!
//! This module owns:
//! - the **attribute mapping**: a per-kind preset ([`AttributeMap`]) of where email,
//!   names, username, role, school, grade and OneRoster `sourcedId` are found in the
//!   upstream's JSON, overridable per provider with the `claims` config table
//!   ([`ClaimOverrides`]: field -> source key, or a list of keys tried in order; dotted
//!   paths reach into objects and arrays, e.g. `roles.student.sis_id`, `schools.0`);
//! - the **role vocabulary** ([`RoleMap`]): a per-kind preset of upstream role strings,
//!   overridable with the `roles` config table (upstream value -> Homeroom role); an
//!   upstream role outside the vocabulary is never guessed (`TokenInvalid`);
//! - the tenant allow-list check (district / tenant / org ids -> `TenantMismatch`);
//! - small helpers for the portals' proprietary JSON APIs.
//!
//! Mapped values that [`UpstreamIdentity`] has no field for (school, grade, the raw role
//! strings) are kept in the identity's `claims` under [`MAPPED_CLAIMS_KEY`]; read them with
//! [`mapped_attributes`]. It owns no protocol state and makes no policy decision.

use crate::ProviderError;
use crate::http::HttpClient;
use crate::oidc::Claims;
use homeroom_core::identity::redact_claims;
use homeroom_core::{LoginError, ProviderId, Role, UpstreamIdentity};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Where the mapped attributes are kept in [`UpstreamIdentity::claims`].
pub const MAPPED_CLAIMS_KEY: &str = "homeroom_mapped";

/// One source key, or several tried in order (the first that yields a value wins). An
/// empty string or an empty list switches the attribute off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SourceKeys {
    /// One dotted path.
    One(String),
    /// Dotted paths tried in order.
    Many(Vec<String>),
}

impl SourceKeys {
    fn into_vec(self) -> Vec<String> {
        match self {
            SourceKeys::One(s) => vec![s],
            SourceKeys::Many(v) => v,
        }
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect()
    }
}

/// The `claims` config table: per attribute, the upstream key(s) to read instead of the
/// kind's preset. Unset attributes keep the preset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimOverrides {
    /// Email address (never trusted as verified from a school portal).
    #[serde(default)]
    pub email: Option<SourceKeys>,
    /// Full display name (when absent, given + family name).
    #[serde(default)]
    pub name: Option<SourceKeys>,
    /// Given name.
    #[serde(default)]
    pub given_name: Option<SourceKeys>,
    /// Family name.
    #[serde(default)]
    pub family_name: Option<SourceKeys>,
    /// District username (becomes `preferred_username`).
    #[serde(default)]
    pub username: Option<SourceKeys>,
    /// Role or user type; a string or an array of strings, looked up in the `roles` table.
    #[serde(default)]
    pub role: Option<SourceKeys>,
    /// School (id) the person belongs to.
    #[serde(default)]
    pub school: Option<SourceKeys>,
    /// Grade level.
    #[serde(default)]
    pub grade: Option<SourceKeys>,
    /// OneRoster `sourcedId` for roster matching within the tenant.
    #[serde(default)]
    pub sourced_id: Option<SourceKeys>,
}

/// The effective mapping: per attribute, the dotted paths tried in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeMap {
    pub email: Vec<String>,
    pub name: Vec<String>,
    pub given_name: Vec<String>,
    pub family_name: Vec<String>,
    pub username: Vec<String>,
    pub role: Vec<String>,
    pub school: Vec<String>,
    pub grade: Vec<String>,
    pub sourced_id: Vec<String>,
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl AttributeMap {
    /// A preset from static key lists, in the order email, name, given name, family name,
    /// username, role, school, grade, sourcedId.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn preset(
        email: &[&str],
        name: &[&str],
        given_name: &[&str],
        family_name: &[&str],
        username: &[&str],
        role: &[&str],
        school: &[&str],
        grade: &[&str],
        sourced_id: &[&str],
    ) -> Self {
        Self {
            email: keys(email),
            name: keys(name),
            given_name: keys(given_name),
            family_name: keys(family_name),
            username: keys(username),
            role: keys(role),
            school: keys(school),
            grade: keys(grade),
            sourced_id: keys(sourced_id),
        }
    }

    /// This map with the admin's overrides applied.
    pub fn with_overrides(mut self, o: &ClaimOverrides) -> Self {
        let set = |slot: &mut Vec<String>, v: &Option<SourceKeys>| {
            if let Some(v) = v {
                *slot = v.clone().into_vec();
            }
        };
        set(&mut self.email, &o.email);
        set(&mut self.name, &o.name);
        set(&mut self.given_name, &o.given_name);
        set(&mut self.family_name, &o.family_name);
        set(&mut self.username, &o.username);
        set(&mut self.role, &o.role);
        set(&mut self.school, &o.school);
        set(&mut self.grade, &o.grade);
        set(&mut self.sourced_id, &o.sourced_id);
        self
    }

    /// Reads every attribute from `doc`.
    pub fn apply(&self, doc: &Value) -> MappedAttributes {
        MappedAttributes {
            email: first_string(doc, &self.email),
            name: first_string(doc, &self.name),
            given_name: first_string(doc, &self.given_name),
            family_name: first_string(doc, &self.family_name),
            username: first_string(doc, &self.username),
            roles: all_strings(doc, &self.role),
            school: first_string(doc, &self.school),
            grade: first_string(doc, &self.grade),
            sourced_id: first_string(doc, &self.sourced_id),
        }
    }
}

/// The attributes read from an upstream's answer, before role mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedAttributes {
    pub email: Option<String>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub username: Option<String>,
    /// The upstream role strings as sent (before the `roles` table).
    #[serde(default)]
    pub roles: Vec<String>,
    pub school: Option<String>,
    pub grade: Option<String>,
    pub sourced_id: Option<String>,
}

/// The mapped attributes a portal adapter stored in `identity.claims` (school, grade and
/// the raw roles are only there).
pub fn mapped_attributes(identity: &UpstreamIdentity) -> Option<MappedAttributes> {
    identity
        .claims
        .get(MAPPED_CLAIMS_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The value at a dotted path (`a.b.0.c`; numeric segments index arrays).
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_string(doc: &Value, paths: &[String]) -> Option<String> {
    paths.iter().find_map(|p| lookup(doc, p).and_then(scalar))
}

/// The strings at the first path that yields any (a string, or an array of strings).
fn all_strings(doc: &Value, paths: &[String]) -> Vec<String> {
    for p in paths {
        let found: Vec<String> = match lookup(doc, p) {
            Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        };
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// Upstream role strings -> Homeroom roles, matched case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct RoleMap {
    entries: Vec<(String, Role)>,
}

impl RoleMap {
    /// The preset, with the admin's `roles` table applied on top (overrides win).
    pub fn new(preset: &[(&str, Role)], overrides: &BTreeMap<String, Role>) -> Self {
        let mut entries: Vec<(String, Role)> = overrides
            .iter()
            .map(|(k, r)| (k.trim().to_ascii_lowercase(), *r))
            .collect();
        for (k, r) in preset {
            let k = k.to_ascii_lowercase();
            if !entries.iter().any(|(e, _)| *e == k) {
                entries.push((k, *r));
            }
        }
        Self { entries }
    }

    /// The Homeroom role for an upstream value, if it is in the vocabulary.
    pub fn get(&self, raw: &str) -> Option<Role> {
        let raw = raw.trim().to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(k, _)| *k == raw)
            .map(|(_, r)| *r)
    }

    /// Maps every upstream role. Unknown values beside a known one are ignored (a
    /// multi-role user keeps the roles we understand, never more); when none is known (or
    /// none was sent) the login is refused with `TokenInvalid` naming the values.
    pub fn resolve(&self, raw: &[String], what: &str) -> Result<Vec<Role>, ProviderError> {
        let mut roles = Vec::new();
        for r in raw.iter().filter_map(|r| self.get(r)) {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        if roles.is_empty() {
            let reason = if raw.is_empty() {
                format!("no {what}")
            } else {
                format!("unknown {what} {:?}", raw.join(", "))
            };
            return Err(ProviderError::new(
                LoginError::TokenInvalid {
                    reason: reason.clone(),
                },
                reason,
            ));
        }
        Ok(roles)
    }
}

/// Refuses `used` unless it is in `expected` (ASCII case-insensitive).
pub(crate) fn check_allowed(
    used: Option<&str>,
    expected: &[String],
    what: &str,
) -> Result<(), ProviderError> {
    match used {
        Some(u) if expected.iter().any(|e| e.eq_ignore_ascii_case(u)) => Ok(()),
        _ => {
            let used = used.unwrap_or("").to_owned();
            let detail = if used.is_empty() {
                format!("no {what} in the upstream's answer")
            } else {
                format!("{what} {used:?} is not configured for this provider")
            };
            Err(ProviderError::new(
                LoginError::TenantMismatch {
                    used,
                    expected: expected.to_vec(),
                },
                detail,
            ))
        }
    }
}

/// Builds the identity from mapped attributes. Portal emails are never verified: they
/// link accounts only through the roster or an admin.
pub(crate) fn identity_from(
    provider: &ProviderId,
    subject: String,
    mapped: &MappedAttributes,
    roles: Vec<Role>,
    upstream_tenant: Option<String>,
    source: &Value,
) -> UpstreamIdentity {
    let mut id = UpstreamIdentity::new(provider.clone(), subject);
    id.email = mapped.email.clone();
    id.email_verified = false;
    id.given_name = mapped.given_name.clone();
    id.family_name = mapped.family_name.clone();
    id.name = mapped.name.clone().or_else(|| {
        let parts: Vec<&str> = [&mapped.given_name, &mapped.family_name]
            .iter()
            .filter_map(|p| p.as_deref())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    id.preferred_username = mapped.username.clone();
    id.roles = roles;
    id.sourced_id = mapped.sourced_id.clone();
    id.upstream_tenant = upstream_tenant;
    let mut claims = match redact_claims(source.clone()) {
        Value::Object(m) => m,
        other => {
            let mut m = Claims::new();
            m.insert("source".into(), other);
            m
        }
    };
    claims.insert(
        MAPPED_CLAIMS_KEY.into(),
        serde_json::to_value(mapped).unwrap_or(Value::Null),
    );
    id.claims = Value::Object(claims);
    id
}

/// `EmailMissing` when the provider requires an email and none was mapped.
pub(crate) fn require_email(
    required: bool,
    mapped: &MappedAttributes,
    provider_name: &str,
) -> Result<(), ProviderError> {
    if required && mapped.email.is_none() {
        return Err(ProviderError::new(
            LoginError::EmailMissing {
                provider: provider_name.to_owned(),
            },
            "no email in the upstream's answer and this provider requires one",
        ));
    }
    Ok(())
}

/// The upstream refused the login at its authorize endpoint (`?error=`).
pub(crate) fn upstream_error(
    cb: &crate::Callback,
    provider_name: &str,
) -> Result<(), ProviderError> {
    if let Some(error) = &cb.error {
        return Err(ProviderError::new(
            LoginError::UpstreamDenied {
                provider: provider_name.to_owned(),
                error: error.clone(),
            },
            cb.error_description.clone().unwrap_or_default(),
        ));
    }
    Ok(())
}

/// The callback's code, or `TokenInvalid`.
pub(crate) fn callback_code(cb: &crate::Callback) -> Result<&str, ProviderError> {
    cb.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
        let reason = "callback carried no authorization code";
        ProviderError::new(
            LoginError::TokenInvalid {
                reason: reason.into(),
            },
            reason,
        )
    })
}

/// A string member of a token response, or `TokenInvalid`.
pub(crate) fn token_field(tokens: &Claims, name: &str) -> Result<String, ProviderError> {
    tokens
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            let reason = format!("token response has no {name}");
            ProviderError::new(
                LoginError::TokenInvalid {
                    reason: reason.clone(),
                },
                reason,
            )
        })
}

/// `GET url` with the bearer token; a JSON object or a refusal (transport faults map to
/// their catalogue entries, a non-2xx to `UpstreamUnavailable`, junk to `TokenInvalid`).
pub(crate) async fn get_json(
    http: &HttpClient,
    provider_name: &str,
    url: &str,
    bearer: &str,
) -> Result<Claims, ProviderError> {
    let resp = http
        .get(url, Some(bearer))
        .await
        .map_err(|e| e.into_provider_error(provider_name))?;
    if !resp.is_success() {
        return Err(ProviderError::new(
            LoginError::UpstreamUnavailable {
                provider: provider_name.to_owned(),
            },
            format!("{url} answered HTTP {}", resp.status),
        ));
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => {
            let reason = format!("{url} did not answer a JSON object");
            Err(ProviderError::new(
                LoginError::TokenInvalid {
                    reason: reason.clone(),
                },
                reason,
            ))
        }
    }
}

/// A string or numeric id rendered as a string (ClassLink `TenantId`/`UserId` are numbers,
/// GG4L `org_id` too).
pub(crate) fn id_value(v: Option<&Value>) -> Option<String> {
    v.and_then(scalar)
}

/// Deserializes a list of ids given as strings or numbers (`[2291, "2292"]`).
pub(crate) fn id_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    let v: Vec<Id> = Vec::deserialize(d)?;
    Ok(v.into_iter()
        .map(|i| match i {
            Id::S(s) => s.trim().to_owned(),
            Id::N(n) => n.to_string(),
        })
        .collect())
}

/// Appends a path to a configured base URL (`https://api.clever.com` + `/v3.0/me`).
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_and_fallbacks() {
        let doc = json!({"name": {"first": "Ana"}, "schools": ["s1", "s2"], "n": 7, "e": ""});
        assert_eq!(lookup(&doc, "name.first"), Some(&json!("Ana")));
        assert_eq!(lookup(&doc, "schools.1"), Some(&json!("s2")));
        assert_eq!(lookup(&doc, "schools.x"), None);
        let map = AttributeMap::preset(
            &["e", "missing", "n"],
            &[],
            &["name.first"],
            &[],
            &[],
            &["schools"],
            &["schools.0"],
            &[],
            &[],
        );
        let m = map.apply(&doc);
        assert_eq!(m.email.as_deref(), Some("7"), "empty strings are skipped");
        assert_eq!(m.given_name.as_deref(), Some("Ana"));
        assert_eq!(m.roles, vec!["s1", "s2"]);
        assert_eq!(m.school.as_deref(), Some("s1"));
    }

    #[test]
    fn overrides_replace_or_switch_off() {
        let map = AttributeMap::preset(&["email"], &[], &[], &[], &[], &[], &[], &[], &["a"]);
        let o: ClaimOverrides =
            serde_json::from_value(json!({"email": "", "sourced_id": ["x", "y"]})).unwrap();
        let m = map.with_overrides(&o);
        assert!(m.email.is_empty());
        assert_eq!(m.sourced_id, vec!["x", "y"]);
        assert!(serde_json::from_value::<ClaimOverrides>(json!({"mail": "x"})).is_err());
    }

    #[test]
    fn roles_case_insensitive_overrides_win_unknown_refused() {
        let mut o = BTreeMap::new();
        o.insert("Staff".to_owned(), Role::SchoolAdmin);
        let map = RoleMap::new(&[("staff", Role::Staff), ("teacher", Role::Teacher)], &o);
        assert_eq!(map.get("STAFF"), Some(Role::SchoolAdmin));
        assert_eq!(
            map.resolve(&["teacher".into(), "alien".into()], "role")
                .unwrap(),
            vec![Role::Teacher]
        );
        let err = map.resolve(&["alien".into()], "role").unwrap_err();
        assert!(matches!(err.error, LoginError::TokenInvalid { .. }));
        assert!(map.resolve(&[], "role").is_err());
    }
}
