//! The Clever adapter against the Clever emulator: OAuth and OIDC modes, success and every
//! refusal (providers.md §3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod portal;

use homeroom_core::{LoginError, Role};
use homeroom_providers::portal::mapped_attributes;
use homeroom_providers::{DynProvider, ProviderKind};
use homeroom_sandbox::{
    CLEVER_OTHER_DISTRICT_ID, CleverIdp, CleverIdpConfig, DEMO_CLEVER_DISTRICT_ID, PortalTamper,
    ServerGuard, demo_clever_district,
};
use portal::*;
use serde_json::{Value, json};

const MAYA: &str = "maya.chen@demo.homeroom.test";
const MAYA_ID: &str = "6502e8a1c3b7a90012f4d000";

fn sorted(mut roles: Vec<Role>) -> Vec<String> {
    roles.sort_by_key(|r| r.to_string());
    roles.iter().map(|r| r.to_string()).collect()
}

struct H {
    idp: CleverIdp,
    provider: DynProvider,
    _guard: ServerGuard,
}

async fn start(extra: Value) -> H {
    let config = CleverIdpConfig::new(vec![client()], demo_clever_district(), keys());
    let (idp, _, guard) = CleverIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let provider = provider(
        "clever",
        with(
            json!({
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "district_ids": [DEMO_CLEVER_DISTRICT_ID],
                "oauth_base": base, "api_base": base, "timeout_secs": 2,
            }),
            extra,
        ),
    );
    H {
        idp,
        provider,
        _guard: guard,
    }
}

#[tokio::test]
async fn oauth_success_keys_on_the_clever_id_and_never_trusts_email() {
    let h = start(json!({})).await;
    assert_eq!(h.provider.kind(), ProviderKind::Clever);
    let (_, _, url) = upstream(&h.provider, MAYA).await;
    assert!(
        url.as_str()
            .starts_with(&format!("{}/oauth/authorize?", h.idp.base_url()))
    );
    let q = query(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["district_id"], DEMO_CLEVER_DISTRICT_ID);
    assert!(!q.contains_key("scope") && !q.contains_key("code_challenge"));

    let id = login(&h.provider, MAYA).await.unwrap();
    assert_eq!(id.subject, MAYA_ID);
    assert_eq!(id.roles, vec![Role::Student]);
    assert_eq!(id.email.as_deref(), Some(MAYA));
    assert!(!id.email_verified, "Clever emails are never verified");
    assert_eq!(id.sourced_id.as_deref(), Some("demo-student-1001"));
    assert_eq!(id.upstream_tenant.as_deref(), Some(DEMO_CLEVER_DISTRICT_ID));
    assert_eq!(id.name.as_deref(), Some("Maya Chen"));
    assert_eq!(id.preferred_username.as_deref(), Some("mayachen"));
    let mapped = mapped_attributes(&id).unwrap();
    assert_eq!(mapped.grade.as_deref(), Some("7"));
    assert_eq!(
        mapped.school.as_deref(),
        Some(homeroom_sandbox::DEMO_SCHOOL_ID)
    );
    assert_eq!(h.idp.requests("/v3.0/me"), 1);
    assert_eq!(h.idp.requests("/v3.0/users"), 1);
    assert_eq!(h.idp.requests("/userinfo"), 0);
}

#[tokio::test]
async fn multi_role_admin_and_students_without_email() {
    let h = start(json!({})).await;
    let omar = login(&h.provider, "omar.haddad@demo.homeroom.test")
        .await
        .unwrap();
    assert_eq!(sorted(omar.roles), sorted(vec![Role::Teacher, Role::Staff]));
    assert_eq!(omar.sourced_id.as_deref(), Some("demo-teacher-2002"));
    let dana = login(&h.provider, "dana.whitfield@demo.homeroom.test")
        .await
        .unwrap();
    assert_eq!(dana.roles, vec![Role::DistrictAdmin]);
    // Sam has no email at Clever: accepted by default (Clever: do not block missing data).
    let sam = login(&h.provider, "sampatel").await.unwrap();
    assert_eq!(sam.email, None);
    assert_eq!(sam.roles, vec![Role::Student]);
    let strict = start(json!({"require_email": true})).await;
    assert_eq!(
        refused(&strict.provider, "sampatel").await,
        LoginError::EmailMissing {
            provider: NAME.into()
        }
    );
}

#[tokio::test]
async fn claim_and_role_overrides() {
    let h = start(json!({
        "claims": {"sourced_id": "roles.teacher.teacher_number", "email": ""},
        "roles": {"staff": "school_admin"},
    }))
    .await;
    let omar = login(&h.provider, "omar.haddad@demo.homeroom.test")
        .await
        .unwrap();
    assert_eq!(
        sorted(omar.roles),
        sorted(vec![Role::Teacher, Role::SchoolAdmin])
    );
    assert_eq!(omar.sourced_id.as_deref(), Some("demo-teacher-2002"));
    assert_eq!(omar.email, None, "email mapping switched off");
}

#[tokio::test]
async fn oauth_refusals() {
    let h = start(json!({})).await;
    login(&h.provider, MAYA).await.unwrap();
    let cases = [
        (
            PortalTamper::WrongDistrict,
            LoginError::TenantMismatch {
                used: CLEVER_OTHER_DISTRICT_ID.into(),
                expected: vec![DEMO_CLEVER_DISTRICT_ID.into()],
            },
        ),
        (PortalTamper::ExpiredCode, exchange_failed()),
        (PortalTamper::ReusedCode, exchange_failed()),
        (
            PortalTamper::UnknownRole,
            LoginError::TokenInvalid {
                reason: "unknown Clever user type \"superhero\"".into(),
            },
        ),
    ];
    for (t, want) in cases {
        h.idp.set_tamper(t.clone());
        assert_eq!(refused(&h.provider, MAYA).await, want, "{t:?}");
    }
    h.idp.set_tamper(PortalTamper::None);
    login(&h.provider, MAYA).await.unwrap();
}

#[tokio::test]
async fn missing_email_is_refused_only_when_required() {
    let h = start(json!({"require_email": true})).await;
    h.idp.set_tamper(PortalTamper::MissingEmail);
    assert_eq!(
        refused(&h.provider, MAYA).await,
        LoginError::EmailMissing {
            provider: NAME.into()
        }
    );
    let lax = start(json!({})).await;
    lax.idp.set_tamper(PortalTamper::MissingEmail);
    assert_eq!(login(&lax.provider, MAYA).await.unwrap().email, None);
}

#[tokio::test]
async fn a_code_presented_twice_fails_the_second_time() {
    let h = start(json!({})).await;
    let (cb, flow, _) = upstream(&h.provider, MAYA).await;
    let r = h.provider.as_redirect().unwrap();
    r.finish(&cb, &flow).await.unwrap();
    assert_eq!(
        r.finish(&cb, &flow).await.unwrap_err().error,
        exchange_failed()
    );
}

#[tokio::test]
async fn another_district_configured_is_a_tenant_mismatch() {
    let h = start(json!({"district_ids": ["5e8f1c2a9b3d4e0012a70000"]})).await;
    assert_eq!(
        refused(&h.provider, MAYA).await,
        LoginError::TenantMismatch {
            used: DEMO_CLEVER_DISTRICT_ID.into(),
            expected: vec!["5e8f1c2a9b3d4e0012a70000".into()],
        }
    );
}

#[tokio::test]
async fn upstream_error_on_the_callback_is_denied() {
    let h = start(json!({})).await;
    let (mut cb, flow, _) = upstream(&h.provider, MAYA).await;
    cb.code = None;
    cb.error = Some("access_denied".into());
    let err = h
        .provider
        .as_redirect()
        .unwrap()
        .finish(&cb, &flow)
        .await
        .unwrap_err();
    assert_eq!(
        err.error,
        LoginError::UpstreamDenied {
            provider: NAME.into(),
            error: "access_denied".into()
        }
    );
}

#[tokio::test]
async fn oidc_mode_success_and_refusals() {
    let h = start(json!({"mode": "oidc"})).await;
    assert_eq!(
        h.provider.expected_issuer().as_deref(),
        Some(h.idp.base_url())
    );
    let (_, _, url) = upstream(&h.provider, MAYA).await;
    let q = query(&url);
    assert_eq!(q["scope"], "openid");
    assert!(q.contains_key("nonce"));
    let id = login(&h.provider, MAYA).await.unwrap();
    assert_eq!(id.subject, MAYA_ID);
    assert_eq!(id.roles, vec![Role::Student]);
    assert!(!id.email_verified);
    assert_eq!(id.upstream_tenant.as_deref(), Some(DEMO_CLEVER_DISTRICT_ID));
    assert!(h.idp.requests("/userinfo") >= 1);
    assert_eq!(h.idp.requests("/v3.0/me"), 0);

    let cases = [
        (
            PortalTamper::WrongDistrict,
            LoginError::TenantMismatch {
                used: CLEVER_OTHER_DISTRICT_ID.into(),
                expected: vec![DEMO_CLEVER_DISTRICT_ID.into()],
            },
        ),
        (PortalTamper::ExpiredCode, exchange_failed()),
        (PortalTamper::ReusedCode, exchange_failed()),
        (PortalTamper::BadSignature, LoginError::SignatureInvalid),
        (
            PortalTamper::UnknownRole,
            LoginError::TokenInvalid {
                reason: "unknown Clever user type \"superhero\"".into(),
            },
        ),
    ];
    for (t, want) in cases {
        h.idp.set_tamper(t.clone());
        assert_eq!(refused(&h.provider, MAYA).await, want, "{t:?}");
    }
    let strict = start(json!({"mode": "oidc", "require_email": true})).await;
    strict.idp.set_tamper(PortalTamper::MissingEmail);
    assert_eq!(
        refused(&strict.provider, MAYA).await,
        LoginError::EmailMissing {
            provider: NAME.into()
        }
    );
}

#[tokio::test]
async fn config_requires_districts_and_refuses_unknown_keys() {
    use homeroom_providers::validate;
    let base = json!({"client_id": "a", "client_secret": "b"});
    let paths =
        |c: Value| -> Vec<String> { validate("clever", &c).into_iter().map(|p| p.path).collect() };
    assert_eq!(paths(base.clone()), vec!["district_ids"]);
    assert_eq!(
        paths(with(base.clone(), json!({"district_ids": []}))),
        vec!["district_ids"]
    );
    assert_eq!(
        paths(with(
            base.clone(),
            json!({"district_ids": ["d"], "district": "x"})
        )),
        vec!["district"]
    );
    assert_eq!(
        paths(with(
            base.clone(),
            json!({"district_ids": ["d"], "api_base": "http://evil.example"})
        )),
        vec!["api_base"]
    );
    assert!(validate("clever", &with(base.clone(), json!({"district_ids": ["d"], "mode": "oidc", "roles": {"staff": "school_admin"}, "claims": {"grade": ["roles.student.grade"]}}))).is_empty());
    assert!(
        !validate(
            "clever",
            &with(
                base,
                json!({"district_ids": ["d"], "claims": {"shoe_size": "x"}})
            )
        )
        .is_empty()
    );
}
