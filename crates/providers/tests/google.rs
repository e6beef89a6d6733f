//! The Google adapter against the sandbox's Google flavour: `hd` checks (RP-09), email
//! trust, issuer forms and the shared refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use homeroom_core::LoginError;
use homeroom_sandbox::{Flavour, SandboxUser, Tamper, demo_district_users};
use serde_json::json;

const MAYA: &str = "maya.chen@demo.homeroom.test";

fn users() -> Vec<SandboxUser> {
    let mut users = demo_district_users();
    let mut consumer = SandboxUser::new(
        "g-consumer-1",
        "Kid",
        "Personal",
        "kid.personal@gmail.test",
        "student",
    );
    consumer.hd = None;
    let mut other = SandboxUser::new(
        "g-other-1",
        "Nia",
        "Other",
        "nia@otherdistrict.test",
        "student",
    );
    other.hd = Some("otherdistrict.test".into());
    users.push(consumer);
    users.push(other);
    users
}

async fn google(extra: serde_json::Value) -> Harness {
    start(Flavour::Google, users(), "google", vec!["demo.homeroom.test".into()], move |base| {
        let mut c = json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "issuer": base, "timeout_secs": 1});
        if let (Some(obj), Some(more)) = (c.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        c
    })
    .await
}

#[tokio::test]
async fn workspace_account_of_the_district_signs_in() {
    let h = google(json!({})).await;
    let (_, _, url) = upstream(&h, MAYA).await;
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q["hd"], "demo.homeroom.test",
        "single hosted domain goes into the URL as a hint"
    );
    assert_eq!(q["scope"], "openid email profile");
    let id = login(&h, MAYA).await.unwrap();
    assert_eq!(id.subject, "demo-student-1001");
    assert!(id.email_verified);
    assert_eq!(id.upstream_tenant.as_deref(), Some("demo.homeroom.test"));
}

#[tokio::test]
async fn consumer_account_is_a_domain_mismatch_naming_the_email() {
    let h = google(json!({})).await;
    let err = refused(&h, "kid.personal@gmail.test").await;
    assert_eq!(
        err,
        LoginError::DomainMismatch {
            used: "kid.personal@gmail.test".into(),
            expected: vec!["demo.homeroom.test".into()]
        }
    );
}

#[tokio::test]
async fn another_districts_workspace_is_refused() {
    let h = google(json!({})).await;
    assert!(
        matches!(refused(&h, "nia@otherdistrict.test").await, LoginError::DomainMismatch { used, .. } if used == "nia@otherdistrict.test")
    );
}

#[tokio::test]
async fn hosted_domains_compare_case_insensitively() {
    let h = google(json!({"hosted_domains": ["Demo.Homeroom.TEST", "other.test"]})).await;
    let (_, _, url) = upstream(&h, MAYA).await;
    assert!(
        !url.query_pairs().any(|(k, _)| k == "hd"),
        "no hd hint with several domains"
    );
    assert!(login(&h, MAYA).await.is_ok());
}

#[tokio::test]
async fn consumer_accounts_when_allowed_are_unverified() {
    let h = google(json!({"allow_consumer_accounts": true})).await;
    let id = login(&h, "kid.personal@gmail.test").await.unwrap();
    assert_eq!(id.subject, "g-consumer-1");
    assert!(!id.email_verified, "consumer email is not trusted");
    assert_eq!(id.upstream_tenant, None);
    // A configured list still refuses another Workspace domain.
    assert!(matches!(
        refused(&h, "nia@otherdistrict.test").await,
        LoginError::DomainMismatch { .. }
    ));
}

#[tokio::test]
async fn bare_issuer_form_is_accepted_only_for_this_issuer() {
    let h = google(json!({})).await;
    let (mut cb, flow, _) = upstream(&h, MAYA).await;
    cb.iss = Some(h.base.trim_start_matches("http://").to_owned());
    assert!(
        h.provider
            .as_redirect()
            .unwrap()
            .finish(&cb, &flow)
            .await
            .is_ok()
    );
    let (mut cb, flow, _) = upstream(&h, MAYA).await;
    cb.iss = Some("https://accounts.evil.test".into());
    let err = h
        .provider
        .as_redirect()
        .unwrap()
        .finish(&cb, &flow)
        .await
        .unwrap_err();
    assert_eq!(err.error, LoginError::IssuerMismatch);
}

#[tokio::test]
async fn shared_refusals() {
    let h = google(json!({})).await;
    let cases = [
        (Tamper::BadSignature, LoginError::SignatureInvalid),
        (Tamper::AlgNone, LoginError::SignatureInvalid),
        (Tamper::Hs256WithClientSecret, LoginError::SignatureInvalid),
        (Tamper::WrongIssuer, LoginError::IssuerInvalid),
        (Tamper::WrongAudience, LoginError::AudienceInvalid),
        (Tamper::ExtraAudienceNoAzp, LoginError::AudienceInvalid),
        (Tamper::NoNonce, LoginError::NonceInvalid),
        (Tamper::WrongNonce, LoginError::NonceInvalid),
        (Tamper::Expired, LoginError::TokenExpired),
        (Tamper::MissingSub, LoginError::SubjectInvalid),
        (
            Tamper::TokenEndpointError,
            LoginError::TokenExchangeFailed {
                provider: "Test IdP".into(),
            },
        ),
        (
            Tamper::HugeTokenResponse,
            LoginError::ResponseTooLarge {
                provider: "Test IdP".into(),
            },
        ),
        (
            Tamper::SlowToken { secs: 3 },
            LoginError::UpstreamTimeout {
                provider: "Test IdP".into(),
            },
        ),
    ];
    for (t, want) in cases {
        h.idp.set_tamper(t.clone());
        assert_eq!(refused(&h, MAYA).await, want, "{t:?}");
    }
    h.idp.set_tamper(Tamper::UnknownKid);
    assert!(login(&h, MAYA).await.is_ok());
}
