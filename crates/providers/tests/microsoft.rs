//! The Entra adapter against the sandbox's Microsoft flavour: templated issuer, `tid`
//! allow-list (RP-11), MSA refusal, `tid:oid` subject and `xms_edov` (RP-10).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use homeroom_core::LoginError;
use homeroom_sandbox::{DEMO_TENANT_ID, Flavour, SandboxUser, Tamper, demo_district_users};
use serde_json::json;

const MAYA: &str = "maya.chen@demo.homeroom.test";
const OTHER_TENANT: &str = "11111111-2222-4333-8444-555555555555";
const MSA: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

fn user(
    sub: &str,
    email: &str,
    tid: &str,
    oid: Option<&str>,
    edov: Option<serde_json::Value>,
) -> SandboxUser {
    let mut u = SandboxUser::new(sub, "Test", "User", email, "student");
    u.tid = Some(tid.into());
    u.oid = oid.map(str::to_owned);
    u.xms_edov = edov;
    u
}

fn users() -> Vec<SandboxUser> {
    let mut users = demo_district_users();
    users.push(user(
        "ms-foreign",
        "foreign@other.test",
        OTHER_TENANT,
        Some("aaaaaaaa-0000-4000-8000-000000000001"),
        None,
    ));
    users.push(user(
        "ms-msa",
        "kid@outlook.test",
        MSA,
        Some("aaaaaaaa-0000-4000-8000-000000000002"),
        None,
    ));
    users.push(user(
        "ms-nooid",
        "nooid@demo.homeroom.test",
        DEMO_TENANT_ID,
        None,
        None,
    ));
    users.push(user(
        "ms-edov-1",
        "one@demo.homeroom.test",
        DEMO_TENANT_ID,
        Some("aaaaaaaa-0000-4000-8000-000000000003"),
        Some(json!("1")),
    ));
    users.push(user(
        "ms-edov-none",
        "none@demo.homeroom.test",
        DEMO_TENANT_ID,
        Some("aaaaaaaa-0000-4000-8000-000000000004"),
        None,
    ));
    users.push(user(
        "ms-edov-false",
        "false@demo.homeroom.test",
        DEMO_TENANT_ID,
        Some("aaaaaaaa-0000-4000-8000-000000000005"),
        Some(json!(false)),
    ));
    users
}

async fn entra(tenant: &str, allowed: Vec<&str>) -> Harness {
    let tenant = tenant.to_owned();
    let allowed: Vec<String> = allowed.into_iter().map(str::to_owned).collect();
    start(
        Flavour::Microsoft {
            tenant_id: DEMO_TENANT_ID.into(),
        },
        users(),
        "microsoft",
        vec![],
        move |base| {
            json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "tenant": tenant,
               "allowed_tenants": allowed, "authority": base, "timeout_secs": 1})
        },
    )
    .await
}

#[tokio::test]
async fn single_tenant_success_keys_on_tid_and_oid() {
    let h = entra(DEMO_TENANT_ID, vec![]).await;
    let id = login(&h, MAYA).await.unwrap();
    assert_eq!(
        id.subject,
        format!("{DEMO_TENANT_ID}:0b6f2a4e-1c3d-4e5f-8a9b-000000001001")
    );
    assert_eq!(id.upstream_tenant.as_deref(), Some(DEMO_TENANT_ID));
    assert_eq!(id.email.as_deref(), Some(MAYA));
    assert_eq!(id.preferred_username.as_deref(), Some(MAYA));
    assert!(id.email_verified, "xms_edov true");
    assert_eq!(
        h.provider.expected_issuer(),
        Some(format!("{}/{DEMO_TENANT_ID}/v2.0", h.base))
    );
}

#[tokio::test]
async fn xms_edov_variants() {
    let h = entra(DEMO_TENANT_ID, vec![]).await;
    assert!(
        login(&h, "one@demo.homeroom.test")
            .await
            .unwrap()
            .email_verified,
        "\"1\""
    );
    assert!(
        !login(&h, "none@demo.homeroom.test")
            .await
            .unwrap()
            .email_verified,
        "absent"
    );
    assert!(
        !login(&h, "false@demo.homeroom.test")
            .await
            .unwrap()
            .email_verified,
        "false"
    );
}

#[tokio::test]
async fn foreign_and_personal_tenants_are_refused() {
    let h = entra(DEMO_TENANT_ID, vec![]).await;
    assert_eq!(
        refused(&h, "foreign@other.test").await,
        LoginError::TenantMismatch {
            used: OTHER_TENANT.into(),
            expected: vec![DEMO_TENANT_ID.into()]
        }
    );
    assert!(
        matches!(refused(&h, "kid@outlook.test").await, LoginError::TenantMismatch { used, .. } if used == MSA)
    );
}

#[tokio::test]
async fn multi_tenant_uses_the_template_and_the_allow_list() {
    let h = entra("organizations", vec![DEMO_TENANT_ID]).await;
    assert_eq!(h.provider.expected_issuer(), None);
    let id = login(&h, MAYA).await.unwrap();
    assert!(id.subject.starts_with(DEMO_TENANT_ID));
    assert!(matches!(
        refused(&h, "foreign@other.test").await,
        LoginError::TenantMismatch { .. }
    ));
    assert!(matches!(
        refused(&h, "kid@outlook.test").await,
        LoginError::TenantMismatch { .. }
    ));
    let h2 = entra("common", vec![DEMO_TENANT_ID, OTHER_TENANT]).await;
    assert!(login(&h2, "foreign@other.test").await.is_ok());
}

#[tokio::test]
async fn domain_tenant_with_allow_list() {
    let h = entra("demo.homeroom.test", vec![DEMO_TENANT_ID]).await;
    assert!(login(&h, MAYA).await.is_ok());
    assert!(matches!(
        refused(&h, "foreign@other.test").await,
        LoginError::TenantMismatch { .. }
    ));
}

#[tokio::test]
async fn missing_oid_is_subject_invalid() {
    let h = entra(DEMO_TENANT_ID, vec![]).await;
    assert_eq!(
        refused(&h, "nooid@demo.homeroom.test").await,
        LoginError::SubjectInvalid
    );
}

#[tokio::test]
async fn callback_iss_must_name_an_allowed_tenant() {
    let h = entra(DEMO_TENANT_ID, vec![]).await;
    let (mut cb, flow, _) = upstream(&h, MAYA).await;
    assert_eq!(cb.iss, None, "Entra sends no iss parameter");
    cb.iss = Some(format!("{}/{OTHER_TENANT}/v2.0", h.base));
    let err = h
        .provider
        .as_redirect()
        .unwrap()
        .finish(&cb, &flow)
        .await
        .unwrap_err();
    assert_eq!(err.error, LoginError::IssuerMismatch);
    let (mut cb, flow, _) = upstream(&h, MAYA).await;
    cb.iss = Some(format!("{}/{DEMO_TENANT_ID}/v2.0", h.base));
    assert!(
        h.provider
            .as_redirect()
            .unwrap()
            .finish(&cb, &flow)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn shared_refusals() {
    let h = entra(DEMO_TENANT_ID, vec![]).await;
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
    ];
    for (t, want) in cases {
        h.idp.set_tamper(t.clone());
        assert_eq!(refused(&h, MAYA).await, want, "{t:?}");
    }
    h.idp.set_tamper(Tamper::UnknownKid);
    assert!(login(&h, MAYA).await.is_ok());
}
