//! The one normalised identity every provider adapter returns, and Homeroom's roles.

use crate::ids::ProviderId;
use serde::{Deserialize, Serialize};

/// A role a person holds in a tenant.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    Student,
    Teacher,
    Staff,
    SchoolAdmin,
    DistrictAdmin,
    Guardian,
    ItAdmin,
}

/// What an upstream provider told us about the person, after the adapter validated the
/// protocol. Keyed by `(provider, subject)`, the provider's stable id (Google `sub`, Entra
/// `tid:oid`, ...): never by email alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamIdentity {
    pub provider: ProviderId,
    /// The provider's stable, never-reassigned subject.
    pub subject: String,
    pub email: Option<String>,
    /// True only when the adapter trusts the provider for this address (Google `hd`
    /// accounts with `email_verified`, Entra with `xms_edov`, ...).
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// OneRoster sourcedId when the provider carries one (ClassLink, Clever).
    pub sourced_id: Option<String>,
    /// The provider's own tenant signal that was checked (Google `hd`, Entra `tid`,...).
    pub upstream_tenant: Option<String>,
    /// The claims as received, with anything secret removed; shown in the troubleshooter.
    #[serde(default)]
    pub claims: serde_json::Value,
}

impl UpstreamIdentity {
    /// A minimal identity; adapters fill in the rest.
    pub fn new(provider: ProviderId, subject: impl Into<String>) -> Self {
        Self {
            provider,
            subject: subject.into(),
            email: None,
            email_verified: false,
            name: None,
            given_name: None,
            family_name: None,
            preferred_username: None,
            roles: Vec::new(),
            sourced_id: None,
            upstream_tenant: None,
            claims: serde_json::Value::Null,
        }
    }

    /// The best human label for this identity: email, then username, then subject.
    pub fn label(&self) -> String {
        self.email
            .clone()
            .or_else(|| self.preferred_username.clone())
            .unwrap_or_else(|| self.subject.clone())
    }
}

/// Removes values whose key suggests a secret before claims are stored for the trace.
pub fn redact_claims(mut v: serde_json::Value) -> serde_json::Value {
    const SECRET_KEYS: [&str; 7] = [
        "access_token",
        "refresh_token",
        "id_token",
        "code",
        "client_secret",
        "password",
        "at_hash",
    ];
    if let Some(obj) = v.as_object_mut() {
        for k in SECRET_KEYS {
            if obj.contains_key(k) {
                obj.insert(k.to_owned(), serde_json::Value::String("[redacted]".into()));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn roles_round_trip_as_snake_case() {
        assert_eq!(Role::from_str("school_admin").unwrap(), Role::SchoolAdmin);
        assert_eq!(Role::ItAdmin.to_string(), "it_admin");
    }

    #[test]
    fn redaction_hides_tokens() {
        let v = redact_claims(serde_json::json!({"sub": "1", "access_token": "abc"}));
        assert_eq!(v["access_token"], "[redacted]");
        assert_eq!(v["sub"], "1");
    }
}
