//! The GG4L adapter against the GG4L Passport emulator: success and every refusal
//! (providers.md §5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod portal;

use homeroom_core::{LoginError, Role};
use homeroom_providers::{DynProvider, ProviderKind};
use homeroom_sandbox::{
    DEMO_GG4L_DISTRICT_ID, DEMO_GG4L_ORG_ID, GG4L_OTHER_DISTRICT_ID, GG4L_OTHER_ORG_ID, Gg4lIdp,
    Gg4lIdpConfig, PortalTamper, ServerGuard, demo_gg4l_district,
};
use portal::*;
use serde_json::{Value, json};

const MAYA: &str = "mayachen";
const MAYA_GUID: &str = "7b2e9d40-1c5a-4f83-b6e2-9a0c4d7f1000";

struct H {
    idp: Gg4lIdp,
    provider: DynProvider,
    _guard: ServerGuard,
}

async fn start(extra: Value) -> H {
    let config = Gg4lIdpConfig::new(vec![client()], demo_gg4l_district(), keys());
    let (idp, _, guard) = Gg4lIdp::bind_and_serve(config).await.unwrap();
    let provider = provider(
        "gg4l",
        with(
            json!({
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "base_url": idp.base_url(), "jwks_url": idp.jwks_url(),
                "district_ids": [DEMO_GG4L_DISTRICT_ID], "org_ids": [DEMO_GG4L_ORG_ID],
                "timeout_secs": 2,
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
async fn success_keys_on_guid() {
    let h = start(json!({"org_guid": DEMO_GG4L_DISTRICT_ID, "invalidate_session": true})).await;
    assert_eq!(h.provider.kind(), ProviderKind::Gg4l);
    let (_, _, url) = upstream(&h.provider, MAYA).await;
    assert!(
        url.as_str()
            .starts_with(&format!("{}/oauth/auth?", h.idp.base_url()))
    );
    let q = query(&url);
    assert_eq!(q["orgGuid"], DEMO_GG4L_DISTRICT_ID);
    assert_eq!(q["invalidate"], "true");
    assert!(!q.contains_key("nonce") && !q.contains_key("code_challenge"));

    let id = login(&h.provider, MAYA).await.unwrap();
    assert_eq!(id.subject, MAYA_GUID);
    assert_eq!(id.roles, vec![Role::Student]);
    assert!(!id.email_verified);
    assert_eq!(id.email.as_deref(), Some("maya.chen@demo.homeroom.test"));
    assert_eq!(id.preferred_username.as_deref(), Some("mayachen"));
    assert_eq!(id.upstream_tenant.as_deref(), Some(DEMO_GG4L_DISTRICT_ID));
    assert_eq!(id.claims["org_id"], DEMO_GG4L_ORG_ID);
    assert!(id.claims["sub"].is_string(), "sub is kept in the claims");
    let admin = login(&h.provider, "dwhitfield").await.unwrap();
    assert_eq!(admin.roles, vec![Role::SchoolAdmin]);
    assert_eq!(h.idp.requests("/oauth/jwks"), 1, "JWKS cached");
}

#[tokio::test]
async fn refusals() {
    let h = start(json!({})).await;
    login(&h.provider, MAYA).await.unwrap();
    let cases = [
        (
            PortalTamper::WrongDistrict,
            LoginError::TenantMismatch {
                used: GG4L_OTHER_DISTRICT_ID.into(),
                expected: vec![DEMO_GG4L_DISTRICT_ID.into()],
            },
        ),
        (PortalTamper::ExpiredCode, exchange_failed()),
        (PortalTamper::ReusedCode, exchange_failed()),
        (PortalTamper::BadSignature, LoginError::SignatureInvalid),
        (
            PortalTamper::UnknownRole,
            LoginError::TokenInvalid {
                reason: "unknown GG4L user type \"superhero\"".into(),
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
async fn org_id_alone_is_checked_too() {
    let h = start(json!({"district_ids": []})).await;
    login(&h.provider, MAYA).await.unwrap();
    h.idp.set_tamper(PortalTamper::WrongDistrict);
    assert_eq!(
        refused(&h.provider, MAYA).await,
        LoginError::TenantMismatch {
            used: GG4L_OTHER_ORG_ID.to_string(),
            expected: vec![DEMO_GG4L_ORG_ID.to_string()],
        }
    );
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
async fn a_token_from_another_host_is_an_issuer_error() {
    // The tenant's host is configured: a token naming another issuer is refused.
    let h = start(json!({"issuer": "https://sso.gg4l.com/account"})).await;
    assert_eq!(refused(&h.provider, MAYA).await, LoginError::IssuerInvalid);
}

#[tokio::test]
async fn config_requires_keys_and_an_allow_list() {
    use homeroom_providers::validate;
    let base = json!({"client_id": "a", "client_secret": "b"});
    let paths = |c: Value| -> Vec<String> {
        let mut p: Vec<String> = validate("gg4l", &c).into_iter().map(|p| p.path).collect();
        p.sort();
        p
    };
    assert_eq!(paths(base.clone()), vec!["jwks_url"]);
    let with_jwks = with(base, json!({"jwks_url": "https://keys.example/jwks"}));
    assert_eq!(paths(with_jwks.clone()), vec!["district_ids"]);
    assert!(paths(with(with_jwks.clone(), json!({"org_ids": [512044]}))).is_empty());
    assert_eq!(
        paths(with(
            with_jwks,
            json!({"org_ids": [1], "base_url": "http://passport.school.example"})
        )),
        vec!["base_url"]
    );
}
