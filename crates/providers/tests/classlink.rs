//! The ClassLink adapter against the ClassLink emulator: success and every refusal
//! (providers.md §4).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod portal;

use homeroom_core::{LoginError, Role};
use homeroom_providers::{DynProvider, ProviderKind};
use homeroom_sandbox::{
    CLASSLINK_OTHER_TENANT_ID, ClassLinkIdp, ClassLinkIdpConfig, DEMO_CLASSLINK_TENANT_ID,
    PortalTamper, PortalUser, ServerGuard, demo_classlink_tenant,
};
use portal::*;
use serde_json::{Value, json};

const MAYA: &str = "mayachen";

struct H {
    idp: ClassLinkIdp,
    provider: DynProvider,
    _guard: ServerGuard,
}

async fn start_with(users: Vec<PortalUser>, extra: Value) -> H {
    let config = ClassLinkIdpConfig::new(vec![client()], users, keys());
    let (idp, _, guard) = ClassLinkIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let provider = provider(
        "classlink",
        with(
            json!({
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                // Tenant ids may be written as numbers, as ClassLink sends them.
                "tenant_ids": [DEMO_CLASSLINK_TENANT_ID.parse::<u64>().unwrap()],
                "launchpad_base": base, "api_base": base, "timeout_secs": 2,
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

async fn start(extra: Value) -> H {
    start_with(demo_classlink_tenant(), extra).await
}

#[tokio::test]
async fn success_keys_on_tenant_and_user_id_and_carries_sourced_id() {
    let h = start(json!({})).await;
    assert_eq!(h.provider.kind(), ProviderKind::ClassLink);
    let (_, _, url) = upstream(&h.provider, MAYA).await;
    assert!(
        url.as_str()
            .starts_with(&format!("{}/oauth2/v2/auth?", h.idp.base_url()))
    );
    let q = query(&url);
    assert_eq!(q["scope"], "openid profile email");
    assert!(q.contains_key("nonce") && q.contains_key("state"));

    let id = login(&h.provider, MAYA).await.unwrap();
    assert_eq!(id.subject, format!("{DEMO_CLASSLINK_TENANT_ID}:40718233"));
    assert_eq!(id.roles, vec![Role::Student]);
    assert_eq!(id.sourced_id.as_deref(), Some("demo-student-1001"));
    assert_eq!(
        id.email.as_deref(),
        Some("demo-student-1001@students.demo.local")
    );
    assert!(
        !id.email_verified,
        "synthetic ClassLink email is never verified, whatever the ID token says"
    );
    assert_eq!(id.claims["email_verified"], true);
    assert_eq!(id.preferred_username.as_deref(), Some("mayachen"));
    assert_eq!(id.name.as_deref(), Some("Maya Chen"));
    assert_eq!(
        id.upstream_tenant.as_deref(),
        Some(DEMO_CLASSLINK_TENANT_ID)
    );
    assert_eq!(h.idp.requests("/v2/my/info"), 1);
    assert_eq!(h.idp.requests("/oauth2/v2/jwks"), 1);

    let admin = login(&h.provider, "dwhitfield").await.unwrap();
    assert_eq!(admin.roles, vec![Role::DistrictAdmin]);
    assert_eq!(admin.sourced_id, None, "empty SourcedId is no sourcedId");
    let teacher = login(&h.provider, "gracehopper").await.unwrap();
    assert_eq!(teacher.roles, vec![Role::Teacher]);
}

#[tokio::test]
async fn refusals() {
    let h = start(json!({})).await;
    login(&h.provider, MAYA).await.unwrap();
    let cases = [
        (
            PortalTamper::WrongDistrict,
            LoginError::TenantMismatch {
                used: CLASSLINK_OTHER_TENANT_ID.into(),
                expected: vec![DEMO_CLASSLINK_TENANT_ID.into()],
            },
        ),
        (PortalTamper::ExpiredCode, exchange_failed()),
        (PortalTamper::ReusedCode, exchange_failed()),
        (PortalTamper::BadSignature, LoginError::SignatureInvalid),
        (
            PortalTamper::UnknownRole,
            LoginError::TokenInvalid {
                reason: "unknown ClassLink role \"superhero\"".into(),
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
    login(&h.provider, MAYA).await.unwrap();
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
async fn undocumented_roles_need_the_roles_table() {
    let mut users = demo_classlink_tenant();
    let mut parent = PortalUser::new(
        "40718400",
        DEMO_CLASSLINK_TENANT_ID,
        "Pat",
        "Parent",
        None,
        "Parent",
    );
    parent.username = Some("pparent".into());
    users.push(parent);
    let h = start_with(users.clone(), json!({})).await;
    assert_eq!(
        refused(&h.provider, "pparent").await,
        LoginError::TokenInvalid {
            reason: "unknown ClassLink role \"Parent\"".into()
        }
    );
    let mapped = start_with(
        users,
        json!({"roles": {"Parent": "guardian"}, "claims": {"school": "Building"}}),
    )
    .await;
    let id = login(&mapped.provider, "pparent").await.unwrap();
    assert_eq!(id.roles, vec![Role::Guardian]);
    let attrs = homeroom_providers::portal::mapped_attributes(&id).unwrap();
    assert_eq!(attrs.school.as_deref(), Some("Demo Middle School"));
}

#[tokio::test]
async fn wrong_nonce_is_refused_by_the_shared_verifier() {
    let h = start(json!({})).await;
    let (cb, mut flow, _) = upstream(&h.provider, MAYA).await;
    flow.nonce = "another-nonce".into();
    let err = h
        .provider
        .as_redirect()
        .unwrap()
        .finish(&cb, &flow)
        .await
        .unwrap_err();
    assert_eq!(err.error, LoginError::NonceInvalid);
}

#[tokio::test]
async fn config_requires_tenants_and_openid() {
    use homeroom_providers::validate;
    let base = json!({"client_id": "a", "client_secret": "b"});
    let paths = |c: Value| -> Vec<String> {
        validate("classlink", &c)
            .into_iter()
            .map(|p| p.path)
            .collect()
    };
    assert_eq!(paths(base.clone()), vec!["tenant_ids"]);
    assert_eq!(
        paths(with(base.clone(), json!({"tenant_ids": []}))),
        vec!["tenant_ids"]
    );
    assert!(paths(with(base.clone(), json!({"tenant_ids": [2291, "2292"]}))).is_empty());
    assert_eq!(
        paths(with(
            base.clone(),
            json!({"tenant_ids": [2291], "scopes": ["profile"]})
        )),
        vec!["scopes"]
    );
    assert_eq!(
        paths(with(base, json!({"tenant_ids": ["*"]}))),
        vec!["tenant_ids[0]"]
    );
}
