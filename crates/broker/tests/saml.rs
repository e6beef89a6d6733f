#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The SAML ACS end to end in the broker, against the sandbox SAML IdP's signed responses:
//! SP-initiated login through the pipeline (hop found by InResponseTo, browser binding),
//! the replay cache, a response answering another browser's request, IdP-initiated login
//! only where enabled and RelayState only as an allowlisted app alias.

mod common;
use base64::Engine as _;
use common::*;
use homeroom_core::{ProviderId, TenantId};
use homeroom_directory::ProviderRecord;
use homeroom_sandbox::saml::{SamlIdp, SamlIdpConfig, authn_request_fields};
use homeroom_sandbox::{SandboxKeys, demo_district_users};
use std::sync::OnceLock;

fn key_pem() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| SandboxKeys::generate().unwrap().private_pem().to_owned())
}

fn idp_for(h: &Harness, provider: &str) -> SamlIdp {
    SamlIdp::new(SamlIdpConfig {
        base_url: format!("{}/sandbox/saml", h.base),
        sp_entity_id: format!("{}/saml/{provider}/metadata", h.base),
        acs_url: format!("{}/saml/{provider}/acs", h.base),
        users: demo_district_users(),
        key_pem: key_pem().into(),
        portal_apps: vec![APP.into()],
    })
    .unwrap()
}

/// Registers `test-saml` (IdP-initiated off) and `test-saml-u` (IdP-initiated on, RelayState
/// `APP` allowlisted).
async fn with_saml(h: &Harness) -> (SamlIdp, SamlIdp) {
    let a = idp_for(h, "test-saml");
    let u = idp_for(h, "test-saml-u");
    for (id, idp, extra) in [
        ("test-saml", &a, serde_json::json!({})),
        (
            "test-saml-u",
            &u,
            serde_json::json!({"allow_idp_initiated": true, "relay_state_apps": [APP]}),
        ),
    ] {
        let mut config =
            serde_json::json!({"idp_metadata_xml": idp.metadata_xml(), "trust_email": true});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        h.state
            .directory
            .upsert_provider(&ProviderRecord {
                id: ProviderId::new(id),
                tenant: TenantId::new("t1"),
                kind: "saml".into(),
                display_name: format!("SAML {id}"),
                enabled: true,
                config,
            })
            .await
            .unwrap();
    }
    let http = homeroom_providers::http::HttpClient::with_defaults().unwrap();
    let failures = h
        .state
        .providers
        .reload(
            &h.state.directory,
            &http,
            std::sync::Arc::new(h.clock.clone()),
        )
        .await
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    (a, u)
}

/// Starts an SP-initiated login in `b`; returns (AuthnRequest ID, RelayState).
async fn start(b: &reqwest::Client, h: &Harness, provider: &str) -> (String, String) {
    let r = b
        .get(format!("{}/login/start?provider={provider}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    let loc = location(&r);
    assert!(
        loc.starts_with(&format!("{}/sandbox/saml/sso?", h.base)),
        "{loc}"
    );
    let req = query_param(&loc, "SAMLRequest").unwrap();
    let relay = query_param(&loc, "RelayState").unwrap();
    let (id, acs, issuer) = authn_request_fields(&req).unwrap();
    assert!(id.len() >= 23, "request id {id} too short");
    assert_eq!(acs.unwrap(), format!("{}/saml/{provider}/acs", h.base));
    assert_eq!(
        issuer.unwrap(),
        format!("{}/saml/{provider}/metadata", h.base)
    );
    (id, relay)
}

fn response(idp: &SamlIdp, irt: Option<&str>) -> String {
    let spec = idp
        .spec("maya-saml-1001", irt)
        .attr("urn:oid:0.9.2342.19200300.100.1.3", &[STUDENT])
        .attr("urn:oid:1.3.6.1.4.1.5923.1.1.1.1", &["student"]);
    base64::engine::general_purpose::STANDARD.encode(idp.response_xml(&spec).unwrap())
}

async fn post(
    b: &reqwest::Client,
    h: &Harness,
    provider: &str,
    saml: &str,
    relay: &str,
) -> reqwest::Response {
    b.post(format!("{}/saml/{provider}/acs", h.base))
        .form(&[("SAMLResponse", saml), ("RelayState", relay)])
        .send()
        .await
        .unwrap()
}

/// POST then the continuation GET; returns the final response.
async fn post_and_continue(
    b: &reqwest::Client,
    h: &Harness,
    provider: &str,
    saml: &str,
    relay: &str,
) -> reqwest::Response {
    let r = post(b, h, provider, saml, relay).await;
    if r.status().as_u16() != 303 {
        return r;
    }
    let loc = location(&r);
    assert!(
        loc.starts_with(&format!("/saml/{provider}/acs?continue=")),
        "{loc}"
    );
    b.get(format!("{}{loc}", h.base)).send().await.unwrap()
}

#[tokio::test]
async fn metadata_names_entity_and_acs() {
    let h = harness().await;
    with_saml(&h).await;
    let r = reqwest::get(format!("{}/saml/test-saml/metadata", h.base))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("samlmetadata")
    );
    let xml = r.text().await.unwrap();
    assert!(xml.contains(&format!("entityID=\"{}/saml/test-saml/metadata\"", h.base)));
    assert!(xml.contains(&format!("{}/saml/test-saml/acs", h.base)));
    let r = reqwest::get(format!("{}/saml/idp/metadata", h.base))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[cfg(feature = "saml")]
/// The `certificate` finding of `test-saml`'s connection test (a fresh admin token each
/// time: the tests move the clock by years).
async fn certificate_finding(h: &Harness) -> serde_json::Value {
    let token = admin_bot_token(h, "saml-ops-bot", "saml-ops-secret").await;
    let r = admin_api(
        h,
        &token,
        reqwest::Method::POST,
        "/providers/test-saml/test",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let report = json(r).await;
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "certificate")
        .unwrap_or_else(|| panic!("no certificate finding in {report}"))
        .clone()
}

// The connection test reads certificates only in a broker built with its `saml` feature
// (on in `cargo test --workspace`, through the homeroom binary's default features).
#[cfg(feature = "saml")]
#[tokio::test]
async fn test_connection_reports_the_signing_certificate_end_date() {
    let h = harness().await;
    with_saml(&h).await;
    // The sandbox IdP's certificate is good for 10 years.
    let f = certificate_finding(&h).await;
    assert_eq!(f["status"], "ok", "{f}");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("Homeroom sandbox SAML IdP"), "{msg}");
    assert!(msg.contains("valid until"), "{msg}");
    // Nine years and eleven months on: it ends within 30 days.
    h.clock.advance(3650 * 86_400 - 20 * 86_400);
    let f = certificate_finding(&h).await;
    assert_eq!(f["status"], "warn", "{f}");
    assert!(f["message"].as_str().unwrap().contains("expires on"), "{f}");
    // Past its end: still a warning (SAML trusts the key), with what to do.
    h.clock.advance(60 * 86_400);
    let f = certificate_finding(&h).await;
    assert_eq!(f["status"], "warn", "{f}");
    assert!(f["message"].as_str().unwrap().contains("expired on"), "{f}");
    assert!(
        f["action"]
            .as_str()
            .unwrap()
            .contains("refresh the metadata"),
        "{f}"
    );
}

#[tokio::test]
async fn sp_initiated_login_then_replay_is_refused() {
    let h = harness().await;
    let (idp, _) = with_saml(&h).await;
    let b = browser();
    let (id, relay) = start(&b, &h, "test-saml").await;
    let saml = response(&idp, Some(&id));
    let r = post_and_continue(&b, &h, "test-saml", &saml, &relay).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("hr_session=")),
        "no session cookie"
    );
    assert!(r.text().await.unwrap().contains("signed in"));
    // The same response again: same browser, then a fresh one.
    for jar in [&b, &browser()] {
        let (status, code, _) = page_code(post(jar, &h, "test-saml", &saml, &relay).await).await;
        assert_eq!((status, code.as_str()), (400, "saml.replay"));
    }
}

#[tokio::test]
async fn response_for_another_browser_is_refused() {
    let h = harness().await;
    let (idp, _) = with_saml(&h).await;
    let victim = browser();
    let (id, relay) = start(&victim, &h, "test-saml").await;
    // The attacker's browser posts the response to the victim's request.
    let attacker = browser();
    let _ = start(&attacker, &h, "test-saml").await;
    let r = post_and_continue(
        &attacker,
        &h,
        "test-saml",
        &response(&idp, Some(&id)),
        &relay,
    )
    .await;
    let (status, code, _) = page_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "saml.in_response_to_invalid")
    );
    // A response to a request this Homeroom never sent.
    let r = post(
        &attacker,
        &h,
        "test-saml",
        &response(&idp, Some("_0000000000000000000000000000000000")),
        "",
    )
    .await;
    assert_eq!(page_code(r).await.1, "saml.in_response_to_invalid");
    // An unsigned response to a genuine request.
    let b = browser();
    let (id, relay) = start(&b, &h, "test-saml").await;
    let mut spec = idp.spec("maya-saml-1001", Some(&id));
    spec.sign_assertion = false;
    let unsigned =
        base64::engine::general_purpose::STANDARD.encode(idp.response_xml(&spec).unwrap());
    let r = post(&b, &h, "test-saml", &unsigned, &relay).await;
    assert_eq!(page_code(r).await.1, "saml.signature_missing");
    // A DTD never reaches a parser.
    let dtd = base64::engine::general_purpose::STANDARD
        .encode("<!DOCTYPE r [<!ENTITY x SYSTEM \"http://127.0.0.1:9/x\">]><samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\">&x;</samlp:Response>");
    let r = post(&b, &h, "test-saml", &dtd, &relay).await;
    assert_eq!(page_code(r).await.1, "saml.dtd_forbidden");
}

#[tokio::test]
async fn idp_initiated_only_where_enabled_and_relay_state_only_as_alias() {
    let h = harness().await;
    let (idp, idp_u) = with_saml(&h).await;
    let b = browser();
    let r = post(&b, &h, "test-saml", &response(&idp, None), "").await;
    assert_eq!(page_code(r).await.1, "saml.unsolicited_disabled");
    for evil in [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "other-app",
    ] {
        let r = post(&b, &h, "test-saml-u", &response(&idp_u, None), evil).await;
        let (status, code, _) = page_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "saml.relaystate_not_allowed"),
            "{evil}"
        );
    }
    // Allowlisted alias: signed in, continues to the app (no start URL: signed-in page).
    let saml = response(&idp_u, None);
    let r = post_and_continue(&b, &h, "test-saml-u", &saml, APP).await;
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.headers());
    // Replayed unsolicited response.
    let r = post(&browser(), &h, "test-saml-u", &saml, APP).await;
    assert_eq!(page_code(r).await.1, "saml.replay");
    // An SP-initiated response posted as if unsolicited is still checked for InResponseTo.
    let b2 = browser();
    let (id, _) = start(&b2, &h, "test-saml-u").await;
    let r = post_and_continue(&b2, &h, "test-saml-u", &response(&idp_u, Some(&id)), "").await;
    assert_eq!(
        r.status().as_u16(),
        200,
        "InResponseTo found the hop without RelayState"
    );
}
