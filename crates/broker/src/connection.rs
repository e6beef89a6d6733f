//! "Test connection" for an upstream provider: the checks IT runs by hand when a provider
//! is added or a school reports that sign-in broke, run at once and reported plainly.
//!
//! This module owns the checks and their wording. For OpenID providers (`oidc`, `google`,
//! `microsoft`): the discovery document, its issuer against the configured one, the clock
//! against the provider's `Date` header, the JWKS (usable keys for the algorithms the
//! provider says it signs with, among those Homeroom accepts), and the redirect URI
//! registration, by sending the provider an authorization request with our callback and
//! `prompt=none` and reading whether it refuses the redirect URI. For SAML providers: the
//! IdP metadata (entity ID, signing certificates, SSO endpoint), each signing certificate's
//! end date (expired or within 30 days: `warn`) and the clock. Every finding
//! has an id, `ok` / `warn` / `fail`, a plain sentence and what to do; where the provider
//! gives no way to check something the finding says "could not check" (`warn`).
//!
//! Nothing here changes any state: the test authorization request carries a random `state`
//! that Homeroom never stored, so whatever comes back to the callback is refused.

use crate::AppState;
use homeroom_directory::ProviderRecord;
use homeroom_providers::BeginLogin;
use serde::Serialize;
use utoipa::ToSchema;

/// How a finding came out; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FindingStatus {
    Ok,
    Warn,
    Fail,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One finding of a connection test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionFinding {
    /// What was checked: `settings`, `discovery`, `issuer`, `clock`, `jwks`,
    /// `redirect_uri`, `metadata`.
    pub id: String,
    pub status: FindingStatus,
    /// What was found, in plain words.
    pub message: String,
    /// What to do about it (`null` when nothing needs doing).
    pub action: Option<String>,
}

/// The result of a connection test: every finding and the worst status among them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionReport {
    pub provider: String,
    pub status: FindingStatus,
    pub findings: Vec<ConnectionFinding>,
}

fn finding(
    id: &str,
    status: FindingStatus,
    message: String,
    action: Option<String>,
) -> ConnectionFinding {
    ConnectionFinding {
        id: id.into(),
        status,
        message,
        action,
    }
}

fn ok(id: &str, message: String) -> ConnectionFinding {
    finding(id, FindingStatus::Ok, message, None)
}

fn warn(id: &str, message: String, action: &str) -> ConnectionFinding {
    finding(id, FindingStatus::Warn, message, Some(action.into()))
}

fn fail(id: &str, message: String, action: String) -> ConnectionFinding {
    finding(id, FindingStatus::Fail, message, Some(action))
}

/// Runs every check that applies to the provider (the caller audits).
pub async fn test(state: &AppState, rec: &ProviderRecord) -> ConnectionReport {
    let mut findings = Vec::new();
    if state.providers.get(&rec.id).is_none() {
        let problem = homeroom_providers::validate(&rec.kind, &rec.config)
            .into_iter()
            .next()
            .map(|p| format!("{}: {}", p.path, p.reason))
            .unwrap_or_else(|| "the settings could not be loaded".into());
        findings.push(fail(
            "settings",
            format!("The provider is not in service: {problem}."),
            "Fix the provider's settings (homeroom check-config names every problem).".into(),
        ));
    } else if rec.kind == "saml" {
        saml_checks(state, rec, &mut findings).await;
    } else {
        oidc_checks(state, rec, &mut findings).await;
    }
    let status = findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(FindingStatus::Ok);
    ConnectionReport {
        provider: rec.id.to_string(),
        status,
        findings,
    }
}

/// The issuer the provider's discovery document must name, when it has one.
fn expected_issuer(rec: &ProviderRecord) -> Option<String> {
    rec.config["issuer"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| match rec.kind.as_str() {
            "google" => Some("https://accounts.google.com".to_owned()),
            "microsoft" => rec.config["tenant"].as_str().map(|t| {
                format!(
                    "{}/{t}/v2.0",
                    rec.config["authority"]
                        .as_str()
                        .unwrap_or("https://login.microsoftonline.com")
                        .trim_end_matches('/')
                )
            }),
            _ => None,
        })
}

fn allowed_skew(rec: &ProviderRecord) -> i64 {
    rec.config["clock_skew_secs"]
        .as_i64()
        .filter(|s| *s > 0)
        .unwrap_or(60)
}

/// The clock finding from a response's `Date` header (`None`: the provider sent none).
pub fn clock_finding(date: Option<i64>, now: i64, allowed: i64) -> ConnectionFinding {
    let Some(date) = date else {
        return warn(
            "clock",
            "Could not check the clock: the provider's answer has no Date header.".into(),
            "Make sure this server's clock is synchronised (NTP).",
        );
    };
    let skew = date - now;
    let how = if skew >= 0 { "ahead of" } else { "behind" };
    let message = format!(
        "The provider's clock is {} s {how} ours (tokens are accepted with up to {allowed} s of difference).",
        skew.abs()
    );
    if skew.abs() <= allowed / 2 {
        ok("clock", message)
    } else {
        let action = "Synchronise this server's clock (NTP, e.g. timedatectl set-ntp true); if the provider's clock is wrong, tell its administrators.";
        if skew.abs() <= allowed {
            warn("clock", message, action)
        } else {
            fail("clock", message, action.into())
        }
    }
}

async fn oidc_checks(state: &AppState, rec: &ProviderRecord, out: &mut Vec<ConnectionFinding>) {
    match expected_issuer(rec) {
        Some(issuer) => discovery_checks(state, rec, &issuer, out).await,
        None => out.push(warn(
            "discovery",
            format!(
                "Could not check discovery: {} providers have fixed endpoints and no discovery document.",
                rec.kind
            ),
            "Sign in once through the provider to test it end to end.",
        )),
    }
    out.push(redirect_uri_check(state, rec).await);
}

async fn discovery_checks(
    state: &AppState,
    rec: &ProviderRecord,
    issuer: &str,
    out: &mut Vec<ConnectionFinding>,
) {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = match state.http.get(&url, None).await {
        Ok(r) if r.is_success() => r,
        Ok(r) => {
            out.push(fail(
                "discovery",
                format!("{url} answered HTTP {}.", r.status),
                "Check the issuer in the provider's settings: the discovery document lives at issuer + /.well-known/openid-configuration.".into(),
            ));
            return;
        }
        Err(e) => {
            out.push(fail(
                "discovery",
                format!("{url} could not be fetched: {e}."),
                "Check the issuer URL and that this server can reach it (DNS, firewall, proxy)."
                    .into(),
            ));
            return;
        }
    };
    out.push(clock_finding(resp.date, state.now(), allowed_skew(rec)));
    let doc: serde_json::Value = match serde_json::from_slice(&resp.body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            out.push(fail(
                "discovery",
                format!("{url} is not a JSON discovery document."),
                "Check the issuer in the provider's settings.".into(),
            ));
            return;
        }
    };
    out.push(ok("discovery", format!("Fetched {url}.")));
    let theirs = doc["issuer"].as_str().unwrap_or("");
    let multi_tenant = rec.kind == "microsoft" && theirs.contains("{tenantid}");
    if theirs == issuer || multi_tenant {
        out.push(ok(
            "issuer",
            format!("The provider names itself {theirs}, as configured."),
        ));
    } else {
        out.push(fail(
            "issuer",
            format!("Configured issuer {issuer}, but the provider names itself {theirs:?}."),
            if rec.kind == "oidc" {
                format!(
                    "Set the provider's issuer to exactly {theirs} (ID tokens are checked against it)."
                )
            } else {
                "Check the provider's tenant and authority settings.".into()
            },
        ));
    }
    let Some(jwks_uri) = doc["jwks_uri"].as_str() else {
        out.push(fail(
            "jwks",
            "The discovery document has no jwks_uri.".into(),
            "Ask the provider's administrators for its signing keys (JWKS).".into(),
        ));
        return;
    };
    let algs: Vec<String> = match doc["id_token_signing_alg_values_supported"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        None => vec!["RS256".into()],
    };
    out.push(jwks_check(state, jwks_uri, &algs).await);
}

/// The key family an ID-token algorithm Homeroom accepts needs (asymmetric only).
fn key_family(alg: &str) -> Option<(&'static str, Option<&'static str>)> {
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" => Some(("RSA", None)),
        "ES256" => Some(("EC", Some("P-256"))),
        "ES384" => Some(("EC", Some("P-384"))),
        _ => None,
    }
}

/// Whether a JWK can verify signatures of `alg`.
fn usable_for(key: &serde_json::Value, alg: &str) -> bool {
    let Some((kty, crv)) = key_family(alg) else {
        return false;
    };
    let s = |n: &str| key[n].as_str();
    if s("kty") != Some(kty) || crv.is_some_and(|c| s("crv") != Some(c)) {
        return false;
    }
    if s("use").is_some_and(|u| u != "sig") || s("alg").is_some_and(|a| a != alg) {
        return false;
    }
    serde_json::from_value::<jsonwebtoken::jwk::Jwk>(key.clone())
        .ok()
        .and_then(|jwk| jsonwebtoken::DecodingKey::from_jwk(&jwk).ok())
        .is_some()
}

/// The JWKS finding: usable keys for the algorithms the provider signs with.
pub async fn jwks_check(state: &AppState, jwks_uri: &str, algs: &[String]) -> ConnectionFinding {
    let resp = match state.http.get(jwks_uri, None).await {
        Ok(r) if r.is_success() => r,
        Ok(r) => {
            return fail(
                "jwks",
                format!("{jwks_uri} answered HTTP {}.", r.status),
                "Ask the provider's administrators why its signing keys are not published.".into(),
            );
        }
        Err(e) => {
            return fail(
                "jwks",
                format!("{jwks_uri} could not be fetched: {e}."),
                "Check that this server can reach the provider (DNS, firewall, proxy).".into(),
            );
        }
    };
    let keys: Vec<serde_json::Value> = serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v["keys"].as_array().cloned())
        .unwrap_or_default();
    let accepted: Vec<&String> = algs.iter().filter(|a| key_family(a).is_some()).collect();
    if accepted.is_empty() {
        return fail(
            "jwks",
            format!(
                "The provider signs ID tokens with {}, none of which Homeroom accepts (RS256, RS384, RS512, PS256, ES256, ES384).",
                algs.join(", ")
            ),
            "Configure the provider to sign ID tokens with RS256 or ES256.".into(),
        );
    }
    let missing: Vec<&str> = accepted
        .iter()
        .filter(|a| !keys.iter().any(|k| usable_for(k, a)))
        .map(|a| a.as_str())
        .collect();
    let usable = keys
        .iter()
        .filter(|k| accepted.iter().any(|a| usable_for(k, a)))
        .count();
    if missing.len() == accepted.len() {
        fail(
            "jwks",
            format!(
                "The JWKS at {jwks_uri} has {} key(s), none usable for {}.",
                keys.len(),
                missing.join(", ")
            ),
            "Ask the provider's administrators to publish its signing keys (use \"sig\").".into(),
        )
    } else if !missing.is_empty() {
        warn(
            "jwks",
            format!(
                "{usable} usable signing key(s), but none for {} (the provider says it may sign with it).",
                missing.join(", ")
            ),
            "If sign-ins fail with an unknown key, ask the provider to publish keys for every algorithm it uses.",
        )
    } else {
        ok(
            "jwks",
            format!(
                "{usable} usable signing key(s) for {}.",
                accepted
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }
}

/// Whether a provider's answer says the redirect URI is not registered.
fn refuses_redirect_uri(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    if t.contains("redirect_uri_mismatch") || t.contains("aadsts50011") {
        return true;
    }
    let names = ["redirect_uri", "redirect uri", "reply url", "redirect url"];
    let verdicts = [
        "did not match",
        "does not match",
        "doesn't match",
        "not registered",
        "mismatch",
        "invalid",
        "not valid",
        "not allowed",
        "unknown",
    ];
    names.iter().any(|n| t.contains(n)) && verdicts.iter().any(|v| t.contains(v))
}

/// Sends the provider an authorization request with our callback and `prompt=none` and
/// reads whether it accepts the redirect URI.
async fn redirect_uri_check(state: &AppState, rec: &ProviderRecord) -> ConnectionFinding {
    let redirect_uri = state.settings.url(&format!("/callback/{}", rec.id));
    let client_id = rec.config["client_id"].as_str().unwrap_or("");
    let register = format!(
        "Register {redirect_uri} exactly (scheme, host, port and path) as a redirect URI of client {client_id} at the provider."
    );
    let Some(registered) = state.providers.get(&rec.id) else {
        return warn(
            "redirect_uri",
            "Could not check the redirect URI: the provider is not in service.".into(),
            "Fix the provider's settings first.",
        );
    };
    let Some(redirect) = registered.provider.as_redirect() else {
        return warn(
            "redirect_uri",
            "Could not check the redirect URI: this provider does not sign in by redirect.".into(),
            "Sign in once through the provider to test it end to end.",
        );
    };
    let token = |n| homeroom_core::crypto::random_token(n).unwrap_or_default();
    let begin = BeginLogin {
        state: format!("test-{}", token(16)),
        nonce: token(16),
        pkce_challenge: homeroom_core::crypto::pkce_s256(&token(32)),
        redirect_uri: redirect_uri.clone(),
        prompt: Some("none".into()),
        login_hint: None,
    };
    let url = match redirect.begin(&begin).await {
        Ok(u) => u,
        Err(e) => {
            return warn(
                "redirect_uri",
                format!(
                    "Could not check the redirect URI: the sign-in request could not be built ({}).",
                    e.detail
                ),
                "Fix the findings above first.",
            );
        }
    };
    let resp = match state.http.get(url.as_str(), None).await {
        Ok(r) => r,
        Err(e) => {
            return warn(
                "redirect_uri",
                format!(
                    "Could not check the redirect URI: the authorization endpoint could not be reached ({e})."
                ),
                "Check that this server can reach the provider.",
            );
        }
    };
    let location = resp.location.clone().unwrap_or_default();
    let back_to_us = location
        .split(['?', '#'])
        .next()
        .is_some_and(|l| l == redirect_uri);
    let body = String::from_utf8_lossy(&resp.body[..resp.body.len().min(64 * 1024)]);
    if (300..400).contains(&resp.status) && back_to_us {
        ok(
            "redirect_uri",
            format!(
                "The provider answered a test sign-in request at {redirect_uri}: the redirect URI is registered."
            ),
        )
    } else if refuses_redirect_uri(&location) || refuses_redirect_uri(&body) {
        fail(
            "redirect_uri",
            format!(
                "The provider refused the redirect URI {redirect_uri} (HTTP {}): it is not registered for client {client_id}.",
                resp.status
            ),
            register,
        )
    } else {
        warn(
            "redirect_uri",
            format!(
                "Could not check the redirect URI: the provider answered HTTP {} without saying whether {redirect_uri} is registered.",
                resp.status
            ),
            &format!(
                "Make sure {redirect_uri} is registered for client {client_id}, then sign in once to confirm."
            ),
        )
    }
}

async fn saml_checks(state: &AppState, rec: &ProviderRecord, out: &mut Vec<ConnectionFinding>) {
    let metadata_action =
        "Check the IdP metadata setting (idp_metadata_url, idp_metadata_file or idp_metadata_xml).";
    let (xml, date) = if let Some(url) = rec.config["idp_metadata_url"].as_str() {
        match state.http.get(url, None).await {
            Ok(r) if r.is_success() => (String::from_utf8_lossy(&r.body).into_owned(), r.date),
            Ok(r) => {
                out.push(fail(
                    "metadata",
                    format!("{url} answered HTTP {}.", r.status),
                    metadata_action.into(),
                ));
                return;
            }
            Err(e) => {
                out.push(fail(
                    "metadata",
                    format!("{url} could not be fetched: {e}."),
                    "Check the metadata URL and that this server can reach it.".into(),
                ));
                return;
            }
        }
    } else if let Some(x) = rec.config["idp_metadata_xml"].as_str() {
        (x.to_owned(), None)
    } else if let Some(f) = rec.config["idp_metadata_file"].as_str() {
        match tokio::fs::read_to_string(f).await {
            Ok(x) => (x, None),
            Err(e) => {
                out.push(fail(
                    "metadata",
                    format!("{f} could not be read: {e}."),
                    metadata_action.into(),
                ));
                return;
            }
        }
    } else {
        out.push(fail(
            "metadata",
            "No IdP metadata is configured.".into(),
            metadata_action.into(),
        ));
        return;
    };
    if rec.config["idp_metadata_url"].is_string() {
        out.push(clock_finding(date, state.now(), 180));
    } else {
        out.push(warn(
            "clock",
            "Could not check the clock: the metadata is not fetched from the IdP.".into(),
            "Make sure this server's clock is synchronised (NTP).",
        ));
    }
    saml_metadata_finding(rec, &xml, state.now(), out);
    out.push(warn(
        "redirect_uri",
        "Could not check the assertion consumer URL: SAML IdPs do not tell whether an SP is registered.".into(),
        &format!(
            "Make sure the IdP trusts our SP metadata at {}.",
            state.settings.url(&format!("/saml/{}/metadata", rec.id))
        ),
    ));
}

#[cfg(feature = "saml")]
fn saml_metadata_finding(
    rec: &ProviderRecord,
    xml: &str,
    now: i64,
    out: &mut Vec<ConnectionFinding>,
) {
    let wanted = rec.config["idp_entity_id"].as_str();
    match homeroom_providers::saml::IdpMetadata::parse(xml, wanted) {
        Ok(m) => {
            out.push(ok(
                "metadata",
                format!(
                    "IdP {} with {} signing certificate(s); sign-in at {}.",
                    m.entity_id,
                    m.certs.len(),
                    m.sso_redirect
                ),
            ));
            out.extend(m.cert_dates().iter().map(|d| cert_finding(d, now)));
        }
        Err(reason) => out.push(fail(
            "metadata",
            format!("The IdP metadata cannot be used: {reason}."),
            "Download fresh metadata from the IdP (it must name one IdP with a signing certificate).".into(),
        )),
    }
}

/// A signing certificate this close to its end is reported (`warn`).
#[cfg(feature = "saml")]
const CERT_WARN_DAYS: i64 = 30;

/// One finding per IdP signing certificate: its end date, graded. An expired certificate
/// still verifies (SAML trusts the metadata's key), so this is a `warn`, never a `fail`:
/// what breaks sign-in is the IdP switching to its next certificate before Homeroom has
/// the new metadata.
#[cfg(feature = "saml")]
fn cert_finding(
    d: &Result<homeroom_providers::saml::CertDates, String>,
    now: i64,
) -> ConnectionFinding {
    let refresh = "Ask the IdP's administrators when they switch to a new signing certificate; the day they do, refresh the metadata here (a metadata URL is re-read by itself).";
    let d = match d {
        Ok(d) => d,
        Err(e) => {
            return warn(
                "certificate",
                format!("Could not read a signing certificate's dates: {e}."),
                refresh,
            );
        }
    };
    let who = format!("{} (SHA-256 {})", d.subject, d.fingerprint);
    let days = (d.not_after - now).div_euclid(86_400);
    if d.not_after <= now {
        warn(
            "certificate",
            format!(
                "The IdP's signing certificate {who} expired on {}. Sign-ins still verify with it, but an IdP usually replaces an expired certificate, and sign-ins fail from that moment until the metadata is refreshed.",
                d.not_after_text
            ),
            refresh,
        )
    } else if days < CERT_WARN_DAYS {
        warn(
            "certificate",
            format!(
                "The IdP's signing certificate {who} expires on {} (in {days} day(s)). Expect the IdP to switch to a new one around then.",
                d.not_after_text
            ),
            refresh,
        )
    } else {
        ok(
            "certificate",
            format!(
                "The IdP's signing certificate {who} is valid until {}.",
                d.not_after_text
            ),
        )
    }
}

#[cfg(not(feature = "saml"))]
fn saml_metadata_finding(
    _rec: &ProviderRecord,
    _xml: &str,
    _now: i64,
    out: &mut Vec<ConnectionFinding>,
) {
    out.push(warn(
        "metadata",
        "Could not check the metadata: this build has no SAML support.".into(),
        "Build Homeroom with the saml feature.",
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "saml")]
    #[test]
    fn certificate_findings_grade_the_end_date() {
        use homeroom_providers::saml::CertDates;
        let cert = |not_after: i64| {
            Ok(CertDates {
                subject: "idp.example".into(),
                fingerprint: "ab:cd".into(),
                not_after,
                not_after_text: "Jan  1 00:00:00 2030 GMT".into(),
            })
        };
        let now = 1_000_000_000;
        let far = cert_finding(&cert(now + 90 * 86_400), now);
        assert_eq!(far.status, FindingStatus::Ok);
        assert!(far.message.contains("valid until Jan  1 00:00:00 2030 GMT"));
        let soon = cert_finding(&cert(now + 10 * 86_400 + 5), now);
        assert_eq!(soon.status, FindingStatus::Warn);
        assert!(soon.message.contains("in 10 day(s)"), "{}", soon.message);
        assert!(soon.action.is_some());
        let gone = cert_finding(&cert(now - 1), now);
        assert_eq!(gone.status, FindingStatus::Warn);
        assert!(gone.message.contains("expired on"), "{}", gone.message);
        assert!(gone.message.contains("idp.example (SHA-256 ab:cd)"));
        let bad = cert_finding(&Err("not an X.509 certificate".into()), now);
        assert_eq!(bad.status, FindingStatus::Warn);
    }

    #[test]
    fn clock_findings_grade_the_skew() {
        assert_eq!(
            clock_finding(Some(1005), 1000, 60).status,
            FindingStatus::Ok
        );
        assert_eq!(
            clock_finding(Some(955), 1000, 60).status,
            FindingStatus::Warn
        );
        let far = clock_finding(Some(1600), 1000, 60);
        assert_eq!(far.status, FindingStatus::Fail);
        assert!(far.message.contains("600 s ahead"), "{}", far.message);
        assert_eq!(clock_finding(None, 1000, 60).status, FindingStatus::Warn);
    }

    #[test]
    fn redirect_uri_refusals_are_recognised() {
        for refusal in [
            "redirect_uri did not match any of the client's registered redirect_uris",
            "redirect_uri is not registered for this client.",
            "Error 400: redirect_uri_mismatch",
            "AADSTS50011: The redirect URI specified in the request does not match",
        ] {
            assert!(refuses_redirect_uri(refusal), "{refusal}");
        }
        assert!(!refuses_redirect_uri("<title>Sign in</title>"));
        assert!(!refuses_redirect_uri("invalid client"));
    }

    #[test]
    fn only_asymmetric_algorithms_with_matching_keys_are_usable() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        assert!(usable_for(&ec, "ES256"));
        assert!(!usable_for(&ec, "RS256"));
        assert!(!usable_for(&ec, "HS256"));
        let mut enc = ec.clone();
        enc["use"] = "enc".into();
        assert!(!usable_for(&enc, "ES256"));
    }
}
