//! The SAML adapter against responses signed by the sandbox SAML IdP (libxmlsec1): the
//! genuine SP- and IdP-initiated responses log in, and every hostile variant is refused
//! with its own catalogue code (SAML-01..15 of the security catalogue).
#![cfg(feature = "saml")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use homeroom_core::{Clock, LoginError, ProviderId, SystemClock};
use homeroom_providers::http::HttpClient;
use homeroom_providers::saml::{SamlProvider, parse_xml};
use homeroom_providers::{Provider, ProviderSettings, SamlLogin, SpEndpoints};
use homeroom_sandbox::saml::{RSA_SHA1, ResponseSpec, SHA1, SamlIdp, SamlIdpConfig};
use homeroom_sandbox::{SandboxKeys, demo_district_users};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

const SP: &str = "http://127.0.0.1:18480/saml/test-saml/metadata";
const ACS: &str = "http://127.0.0.1:18480/saml/test-saml/acs";
const REQ: &str = "_0123456789abcdef0123456789abcdef01";

fn key_pem() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| SandboxKeys::generate().unwrap().private_pem().to_owned())
}
fn other_key_pem() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| SandboxKeys::generate().unwrap().private_pem().to_owned())
}

fn idp_with(key: &str, base: &str) -> SamlIdp {
    SamlIdp::new(SamlIdpConfig {
        base_url: base.into(),
        sp_entity_id: SP.into(),
        acs_url: ACS.into(),
        users: demo_district_users(),
        key_pem: key.into(),
        portal_apps: vec!["demo-app".into()],
    })
    .unwrap()
}

fn idp() -> &'static SamlIdp {
    static I: OnceLock<SamlIdp> = OnceLock::new();
    I.get_or_init(|| idp_with(key_pem(), "http://127.0.0.1:18480/sandbox/saml"))
}

fn provider_with(extra: Value) -> SamlProvider {
    let mut config = json!({"idp_metadata_xml": idp().metadata_xml(), "allow_idp_initiated": true});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let settings = ProviderSettings {
        id: ProviderId::new("test-saml"),
        display_name: "Test SAML".into(),
        kind: "saml".into(),
        config,
        tenant_domains: vec![],
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    SamlProvider::build(&settings, &HttpClient::with_defaults().unwrap(), clock).unwrap()
}

fn sp() -> SpEndpoints {
    SpEndpoints {
        entity_id: SP.into(),
        acs_url: ACS.into(),
    }
}

fn b64(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

fn student(irt: Option<&str>) -> ResponseSpec {
    idp()
        .spec("student1", irt)
        .attr(
            "urn:oid:0.9.2342.19200300.100.1.3",
            &["student1@district.test"],
        )
        .attr("urn:oid:1.3.6.1.4.1.5923.1.1.1.1", &["student"])
        .attr("urn:oid:2.5.4.42", &["Stu"])
}

async fn finish(xml: &str, expected: Option<&str>) -> Result<String, LoginError> {
    provider_with(json!({}))
        .finish(&b64(xml), expected, &sp())
        .await
        .map(|a| a.identity.subject)
        .map_err(|e| {
            eprintln!("refused: {}", e.detail);
            e.error
        })
}

async fn code(xml: &str, expected: Option<&str>) -> String {
    match finish(xml, expected).await {
        Ok(s) => format!("accepted as {s}"),
        Err(e) => e.code().to_owned(),
    }
}

fn signed(spec: &ResponseSpec) -> String {
    idp().response_xml(spec).unwrap()
}

/// A forged, unsigned assertion for teacher1 (shape of the genuine one).
fn forged(spec: &ResponseSpec, id: &str) -> String {
    let mut f = spec.clone();
    f.name_id = "teacher1".into();
    f.assertion_id = id.into();
    f.sign_assertion = false;
    f.assertion_xml(idp().certificate())
}

#[tokio::test]
async fn genuine_sp_and_idp_initiated_responses_log_in() {
    let p = provider_with(json!({}));
    let spec = student(Some(REQ));
    let a = p
        .finish(&b64(&signed(&spec)), Some(REQ), &sp())
        .await
        .unwrap();
    assert_eq!(a.identity.subject, "student1");
    assert_eq!(a.identity.email.as_deref(), Some("student1@district.test"));
    assert!(!a.identity.email_verified);
    assert_eq!(a.identity.given_name.as_deref(), Some("Stu"));
    assert_eq!(a.identity.roles, vec![homeroom_core::Role::Student]);
    assert_eq!(a.assertion_id, spec.assertion_id);
    assert_eq!(a.issuer, idp().entity_id());
    assert!(a.not_on_or_after >= spec.confirmation_not_on_or_after);
    // Both the Response and the assertion signed.
    let mut both = student(Some(REQ));
    both.sign_response = true;
    assert_eq!(
        code(&signed(&both), Some(REQ)).await,
        "accepted as student1"
    );
    // Only the Response signed.
    let mut resp_only = student(Some(REQ));
    resp_only.sign_response = true;
    resp_only.sign_assertion = false;
    assert_eq!(
        code(&signed(&resp_only), Some(REQ)).await,
        "accepted as student1"
    );
    // IdP-initiated: no InResponseTo anywhere, expected None.
    assert_eq!(
        code(&signed(&student(None)), None).await,
        "accepted as student1"
    );
    let env = p.inspect(&b64(&signed(&spec))).unwrap();
    assert_eq!(env.in_response_to.as_deref(), Some(REQ));
    assert_eq!(env.issuer, Some(idp().entity_id()));
}

#[tokio::test]
async fn unsigned_tampered_and_foreign_signatures_are_refused() {
    let mut unsigned = student(Some(REQ));
    unsigned.sign_assertion = false;
    assert_eq!(
        code(&signed(&unsigned), Some(REQ)).await,
        "saml.signature_missing"
    );
    // Every signature removed from a signed response.
    let xml = signed(&student(Some(REQ)));
    let start = xml.find("<ds:Signature").unwrap();
    let end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let stripped = format!("{}{}", &xml[..start], &xml[end..]);
    assert_eq!(code(&stripped, Some(REQ)).await, "saml.signature_missing");
    // One character of the NameID changed after signing.
    let tampered = xml.replace(">student1<", ">student2<");
    assert_ne!(tampered, xml);
    assert_eq!(code(&tampered, Some(REQ)).await, "saml.signature_invalid");
    // Re-signed with another key (its certificate in KeyInfo): only metadata keys count.
    let other = idp_with(other_key_pem(), "http://127.0.0.1:18480/sandbox/saml");
    let foreign = other.response_xml(&student(Some(REQ))).unwrap();
    assert_eq!(code(&foreign, Some(REQ)).await, "saml.signature_invalid");
}

#[tokio::test]
async fn signature_wrapping_variants_are_refused() {
    let spec = student(Some(REQ));
    let cert = idp().certificate();
    let signed_assertion = {
        let xml = signed(&spec);
        let s = xml.find("<saml:Assertion").unwrap();
        let e = xml.rfind("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
        xml[s..e].to_owned()
    };
    let forged_other = forged(&spec, "_forged000000000000000000000000000");
    let forged_same_id = forged(&spec, &spec.assertion_id);
    // (a) forged assertion appended after the signed one, (b) before it.
    for assertion in [
        format!("{signed_assertion}{forged_other}"),
        format!("{forged_other}{signed_assertion}"),
        // (c) forged assertion reusing the signed one's ID.
        format!("{forged_same_id}{signed_assertion}"),
    ] {
        let xml = spec.response_xml(&assertion, cert);
        assert_eq!(
            code(&xml, Some(REQ)).await,
            "saml.multiple_assertions",
            "{xml}"
        );
    }
    // (d) signed assertion parked in samlp:Extensions, forged one as the Response's child.
    let parked = spec.response_xml(&forged_other, cert).replace(
        "<samlp:Status>",
        &format!("<samlp:Extensions>{signed_assertion}</samlp:Extensions><samlp:Status>"),
    );
    assert_eq!(code(&parked, Some(REQ)).await, "saml.multiple_assertions");
    // (e) signed assertion nested inside the forged one.
    let nested_forged = forged_other.replace(
        "<saml:Subject>",
        &format!("{signed_assertion}<saml:Subject>"),
    );
    let nested = spec.response_xml(&nested_forged, cert);
    assert_eq!(code(&nested, Some(REQ)).await, "saml.multiple_assertions");
    // (f) the only (forged) assertion carries a copy of a valid signature for another ID.
    let sig_start = signed_assertion.find("<ds:Signature").unwrap();
    let sig_end = signed_assertion.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let sig = &signed_assertion[sig_start..sig_end];
    let with_copied_sig = forged_other.replace("</saml:Issuer>", &format!("</saml:Issuer>{sig}"));
    let copied = spec.response_xml(&with_copied_sig, cert);
    assert_eq!(code(&copied, Some(REQ)).await, "saml.signature_invalid");
    // (g) a signed Response whose signature is moved into an Extensions element.
    let mut resp_signed = student(Some(REQ));
    resp_signed.sign_response = true;
    let xml = signed(&resp_signed);
    let moved = {
        let s = xml.find("<ds:Signature").unwrap();
        let e = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        let sig = xml[s..e].to_owned();
        let without = format!("{}{}", &xml[..s], &xml[e..]);
        without.replace(
            "<samlp:Status>",
            &format!("<samlp:Extensions>{sig}</samlp:Extensions><samlp:Status>"),
        )
    };
    let c = code(&moved, Some(REQ)).await;
    assert!(
        c == "saml.signature_invalid" || c == "saml.signature_missing",
        "{c}"
    );
}

#[tokio::test]
async fn comment_inside_name_id_never_truncates_it() {
    let mut spec = student(Some(REQ));
    spec.name_id = "student1@district.test.evil.test".into();
    let xml = signed(&spec).replace(
        "student1@district.test.evil.test</saml:NameID>",
        "student1@district.test<!---->.evil.test</saml:NameID>",
    );
    assert!(xml.contains("<!---->"));
    // Exclusive c14n ignores comments, so the signature alone would still verify; samael's
    // reduction to signed content cannot match the split text back and fails closed, so
    // the response is refused, and never read as student1@district.test.
    assert_eq!(code(&xml, Some(REQ)).await, "saml.signature_invalid");
    // Our own reader takes the whole text, comment or not.
    let root = parse_xml(&xml).unwrap();
    assert!(format!("{root:?}").contains("student1@district.test.evil.test"));
}

#[tokio::test]
async fn addressing_time_and_correlation_checks() {
    let with = |f: &dyn Fn(&mut ResponseSpec)| {
        let mut s = student(Some(REQ));
        f(&mut s);
        signed(&s)
    };
    let cases: Vec<(String, Option<&str>, &str)> = vec![
        (
            with(&|s| s.audiences = vec!["https://other-sp.example/".into()]),
            Some(REQ),
            "saml.audience_invalid",
        ),
        (
            with(&|s| s.audiences = vec![]),
            Some(REQ),
            "saml.audience_invalid",
        ),
        (
            with(&|s| s.recipient = "http://127.0.0.1:9999/acs".into()),
            Some(REQ),
            "saml.recipient_invalid",
        ),
        (
            with(&|s| s.destination = Some("http://127.0.0.1:9999/acs".into())),
            Some(REQ),
            "saml.destination_invalid",
        ),
        (
            with(&|s| s.issuer = "https://other-idp.example/".into()),
            Some(REQ),
            "saml.issuer_invalid",
        ),
        (
            with(&|s| s.assertion_issuer = Some("https://other-idp.example/".into())),
            Some(REQ),
            "saml.issuer_invalid",
        ),
        (
            with(&|s| {
                s.not_on_or_after -= 900;
            }),
            Some(REQ),
            "saml.expired",
        ),
        (
            with(&|s| {
                s.confirmation_not_on_or_after -= 900;
            }),
            Some(REQ),
            "saml.expired",
        ),
        (
            with(&|s| {
                s.issue_instant -= 3600;
            }),
            Some(REQ),
            "saml.expired",
        ),
        (
            with(&|s| {
                s.not_before += 600;
            }),
            Some(REQ),
            "saml.not_yet_valid",
        ),
        (
            with(&|s| {
                s.issue_instant += 600;
            }),
            Some(REQ),
            "saml.not_yet_valid",
        ),
        (
            signed(&student(Some(REQ))),
            Some("_ffffffffffffffffffffffffffffffff"),
            "saml.in_response_to_invalid",
        ),
        (
            signed(&student(Some(REQ))),
            None,
            "saml.in_response_to_invalid",
        ),
        (
            signed(&student(None)),
            Some(REQ),
            "saml.in_response_to_invalid",
        ),
        (
            with(&|s| {
                s.signature_method = RSA_SHA1.into();
                s.digest_method = SHA1.into();
            }),
            Some(REQ),
            "saml.algorithm_not_allowed",
        ),
        (
            with(&|s| {
                s.digest_method = SHA1.into();
            }),
            Some(REQ),
            "saml.algorithm_not_allowed",
        ),
        (
            with(&|s| {
                s.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into();
            }),
            Some(REQ),
            "saml.idp_status",
        ),
    ];
    for (xml, expected, want) in cases {
        assert_eq!(code(&xml, expected).await, want, "{xml}");
    }
}

#[tokio::test]
async fn dtd_encryption_and_malformed_messages_are_refused() {
    let xml = signed(&student(Some(REQ)));
    let body = xml
        .trim_start_matches("<?xml version=\"1.0\"?>")
        .trim_start();
    let xxe = format!(
        "<!DOCTYPE r [<!ENTITY x SYSTEM \"http://127.0.0.1:9600/xxe\">]>{}",
        body.replace(">student1<", ">&x;<")
    );
    assert_eq!(code(&xxe, Some(REQ)).await, "saml.dtd_forbidden");
    let laughs = format!("<!DOCTYPE r [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>{body}");
    assert_eq!(code(&laughs, Some(REQ)).await, "saml.dtd_forbidden");
    let encrypted = xml.replace(
        "<samlp:Status>",
        "<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\"/></saml:EncryptedAssertion><samlp:Status>",
    );
    assert_eq!(
        code(&encrypted, Some(REQ)).await,
        "saml.encryption_not_allowed"
    );
    let p = provider_with(json!({}));
    for bad in ["%%%".to_owned(), b64("<a/>"), b64(&"x".repeat(300_000))] {
        let e = p.finish(&bad, Some(REQ), &sp()).await.unwrap_err();
        assert_eq!(e.error.code(), "saml.message_invalid");
    }
}

#[tokio::test]
async fn attribute_presets_tenants_and_roles() {
    // ClassLink preset: tenant attribute required and checked.
    let p = provider_with(json!({"preset": "classlink", "tenant_ids": [2291]}));
    let ok = idp()
        .spec("cl-77", Some(REQ))
        .attr("TenantId", &["2291"])
        .attr("Email", &["kid@district.test"])
        .attr("Role", &["Student"])
        .attr("OR:userSourcedId", &["sourced-77"]);
    let a = p
        .finish(&b64(&signed(&ok)), Some(REQ), &sp())
        .await
        .unwrap();
    assert_eq!(a.identity.sourced_id.as_deref(), Some("sourced-77"));
    assert_eq!(a.identity.upstream_tenant.as_deref(), Some("2291"));
    let wrong = idp()
        .spec("cl-78", Some(REQ))
        .attr("TenantId", &["9999"])
        .attr("Role", &["Student"]);
    let e = p
        .finish(&b64(&signed(&wrong)), Some(REQ), &sp())
        .await
        .unwrap_err();
    assert_eq!(e.error.code(), "upstream.tenant_mismatch");
    // Unknown role only: refused; overrides map it.
    let odd = idp()
        .spec("x", Some(REQ))
        .attr("urn:oid:1.3.6.1.4.1.5923.1.1.1.1", &["wizard"]);
    let e = provider_with(json!({}))
        .finish(&b64(&signed(&odd)), Some(REQ), &sp())
        .await
        .unwrap_err();
    assert_eq!(e.error.code(), "upstream.token_invalid");
    let a = provider_with(json!({"roles": {"wizard": "teacher"}}))
        .finish(&b64(&signed(&odd)), Some(REQ), &sp())
        .await
        .unwrap();
    assert_eq!(a.identity.roles, vec![homeroom_core::Role::Teacher]);
    // A transient NameID is not a subject.
    let mut t = student(Some(REQ));
    t.name_id_format = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient".into();
    assert_eq!(
        code(&signed(&t), Some(REQ)).await,
        "upstream.subject_invalid"
    );
}

#[tokio::test]
async fn metadata_and_authn_request() {
    let p = provider_with(json!({}));
    assert_eq!(p.kind().as_str(), "saml");
    assert!(p.as_saml().is_some() && p.as_redirect().is_none());
    let md = p.sp_metadata(&sp()).await.unwrap();
    assert!(md.contains(SP) && md.contains(ACS));
    let url = p
        .begin(&homeroom_providers::SamlBegin {
            request_id: REQ.into(),
            relay_state: "hopkey".into(),
            sp: sp(),
            force_authn: false,
        })
        .await
        .unwrap();
    assert!(
        url.as_str()
            .starts_with("http://127.0.0.1:18480/sandbox/saml/sso?SAMLRequest=")
    );
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q.get("RelayState").map(String::as_str), Some("hopkey"));
    // Short (guessable) request ids are refused.
    let e = p
        .begin(&homeroom_providers::SamlBegin {
            request_id: "id-12345".into(),
            relay_state: String::new(),
            sp: sp(),
            force_authn: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.error, LoginError::Internal);
}
