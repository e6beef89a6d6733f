//! The checks behind the admin API's provider and app endpoints, shared with the console's
//! forms so both refuse the same input with the same field (a key path such as
//! `config.client_secret` or `redirect_uris[0]`) and reason. Also owns how a settings
//! change is merged into a provider's stored settings (secrets kept unless replaced).
//! Nothing here writes; callers write only after every check passed.

use crate::admin::{APP_SCOPES, AppCreate, AppPatch, ProviderCreate};
use serde_json::Value;

/// One refused field: where (`config.issuer`, `redirect_uris[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Provider ids: 2 to 64 letters, digits, `-`, `_`.
pub fn check_provider_id(id: &str) -> Result<(), Invalid> {
    let ok = (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid("id", "2 to 64 characters: letters, digits, - _"))
    }
}

/// A display name: 1 to 100 characters after trimming.
pub fn check_display_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.trim().is_empty() || name.len() > 100 {
        Err(invalid(field, "must be 1 to 100 characters"))
    } else {
        Ok(())
    }
}

/// The first problem of a kind's settings, as `homeroom check-config` reports it, with the
/// key path under `config.` (or `kind`).
pub fn check_provider_settings(kind: &str, config: &Value) -> Result<(), Invalid> {
    match homeroom_providers::validate(kind, config)
        .into_iter()
        .next()
    {
        None => Ok(()),
        Some(p) => {
            let field = if p.path == "kind" {
                "kind".to_owned()
            } else if p.path.is_empty() {
                "config".to_owned()
            } else {
                format!("config.{}", p.path)
            };
            Err(invalid(field, p.reason))
        }
    }
}

/// Every check of a new provider.
pub fn check_provider_create(c: &ProviderCreate) -> Result<(), Invalid> {
    check_provider_id(&c.id)?;
    check_display_name("display_name", &c.display_name)?;
    check_provider_settings(&c.kind, &c.config)
}

/// Whether a settings key holds a secret (never shown, kept unless replaced).
pub fn is_secret_key(k: &str) -> bool {
    k.contains("secret") || k.contains("password") || k.contains("key")
}

/// Applies a settings change to the stored settings: each key of `patch` replaces the
/// stored one, `null` removes it, and a secret sent as `"[redacted]"` or `""` (what a
/// client read back, or a form left blank) keeps the stored secret.
pub fn merge_settings(current: &Value, patch: &Value) -> Result<Value, Invalid> {
    let Some(changes) = patch.as_object() else {
        return Err(invalid("config", "must be a JSON object of settings"));
    };
    let mut merged = current.as_object().cloned().unwrap_or_default();
    for (k, v) in changes {
        let keep_secret = is_secret_key(k)
            && matches!(v.as_str(), Some("[redacted]") | Some(""))
            && merged.contains_key(k);
        if keep_secret {
            continue;
        }
        if v.is_null() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(merged))
}

/// The first unacceptable URI of a list, as its indexed field.
fn check_uris(field: &str, uris: &[String], native: bool) -> Result<(), Invalid> {
    match uris.iter().enumerate().find_map(|(i, u)| {
        crate::oauth::check_redirect_uri(u, native).map(|reason| (format!("{field}[{i}]"), reason))
    }) {
        None => Ok(()),
        Some((f, reason)) => Err(invalid(f, reason)),
    }
}

/// Every check of a new app; on success the scopes and the id-token algorithm to store.
pub fn check_app_create(c: &AppCreate) -> Result<(Vec<String>, String), Invalid> {
    let id_ok = (3..=64).contains(&c.client_id.len())
        && c.client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !id_ok {
        return Err(invalid(
            "client_id",
            "3 to 64 characters: letters, digits, - _ .",
        ));
    }
    check_display_name("name", &c.name)?;
    if c.redirect_uris.is_empty() {
        return Err(invalid(
            "redirect_uris",
            "at least one redirect URI is required",
        ));
    }
    check_uris("redirect_uris", &c.redirect_uris, c.native)?;
    check_uris(
        "post_logout_redirect_uris",
        &c.post_logout_redirect_uris,
        c.native,
    )?;
    for (field, v) in [
        ("start_url", &c.start_url),
        ("initiate_login_uri", &c.initiate_login_uri),
    ] {
        if let Some(u) = v
            && let Some(reason) = crate::oauth::check_redirect_uri(u, false)
        {
            return Err(invalid(field, reason));
        }
    }
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let ok = url::Url::parse(o).is_ok_and(|u| {
            matches!(u.scheme(), "https" | "http") && u.origin().ascii_serialization() == *o
        });
        if !ok {
            return Err(invalid(
                format!("allowed_origins[{i}]"),
                "an origin: scheme, host and optional port (https://app.example.org)",
            ));
        }
    }
    let scopes = c.scopes.clone().unwrap_or_else(|| {
        ["openid", "profile", "email", "offline_access"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    });
    if let Some((i, s)) = scopes
        .iter()
        .enumerate()
        .find(|(_, s)| !APP_SCOPES.contains(&s.as_str()))
    {
        return Err(invalid(
            format!("scopes[{i}]"),
            format!("unknown scope {s:?}"),
        ));
    }
    let alg = c.id_token_alg.clone().unwrap_or_else(|| "RS256".into());
    if !matches!(alg.as_str(), "RS256" | "ES256") {
        return Err(invalid("id_token_alg", "must be RS256 or ES256"));
    }
    Ok((scopes, alg))
}

/// Every check of an app change (`native`: the app already uses private-use schemes).
pub fn check_app_patch(p: &AppPatch, native: bool) -> Result<(), Invalid> {
    if let Some(n) = &p.name {
        check_display_name("name", n)?;
    }
    if let Some(u) = &p.redirect_uris {
        if u.is_empty() {
            return Err(invalid(
                "redirect_uris",
                "at least one redirect URI is required",
            ));
        }
        check_uris("redirect_uris", u, native)?;
    }
    if let Some(u) = &p.post_logout_redirect_uris {
        check_uris("post_logout_redirect_uris", u, native)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_keeps_secrets_unless_replaced_and_null_removes() {
        let cur = json!({"issuer": "https://a", "client_secret": "s1", "scopes": ["openid"]});
        let m = merge_settings(
            &cur,
            &json!({"issuer": "https://b", "client_secret": "[redacted]", "scopes": null}),
        )
        .unwrap();
        assert_eq!(m, json!({"issuer": "https://b", "client_secret": "s1"}));
        let m = merge_settings(&cur, &json!({"client_secret": "s2"})).unwrap();
        assert_eq!(m["client_secret"], "s2");
        assert_eq!(
            merge_settings(&cur, &json!([1])).unwrap_err().field,
            "config"
        );
    }

    #[test]
    fn provider_settings_problems_name_their_key() {
        let e = check_provider_settings("oidc", &json!({"issuer": "https://a", "client_id": "x"}))
            .unwrap_err();
        assert_eq!(e.field, "config.client_secret");
        assert_eq!(
            check_provider_settings("nope", &json!({}))
                .unwrap_err()
                .field,
            "kind"
        );
        assert_eq!(check_provider_id("a").unwrap_err().field, "id");
    }
}
