//! The generic OIDC adapter against the sandbox IdP: success and every refusal (RP-03..07, RP-12).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use homeroom_core::LoginError;
use homeroom_sandbox::{Flavour, Tamper, demo_district_users};
use serde_json::json;
use std::time::{Duration, Instant};

const MAYA: &str = "maya.chen@demo.homeroom.test";

async fn generic(extra: serde_json::Value) -> Harness {
    start(Flavour::Generic, demo_district_users(), "oidc", vec![], move |base| {
        let mut c = json!({"issuer": base, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout_secs": 1});
        if let (Some(obj), Some(more)) = (c.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        c
    })
    .await
}

fn denied_to(h: &Harness) -> String {
    h.provider.display_name().to_owned()
}

#[tokio::test]
async fn success_normalises_the_identity() {
    let h = generic(json!({})).await;
    let (_, _, url) = upstream(&h, MAYA).await;
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["login_hint"], MAYA);
    let id = login(&h, MAYA).await.unwrap();
    assert_eq!(id.subject, "demo-student-1001");
    assert_eq!(id.provider.as_str(), "upstream");
    assert_eq!(id.email.as_deref(), Some(MAYA));
    assert_eq!(id.name.as_deref(), Some("Maya Chen"));
    assert_eq!(id.given_name.as_deref(), Some("Maya"));
    assert!(
        !id.email_verified,
        "generic email is unverified without trust_email"
    );
    assert_eq!(id.claims["sub"], "demo-student-1001");
    assert_eq!(
        h.provider.expected_issuer().as_deref(),
        Some(h.base.as_str())
    );
}

#[tokio::test]
async fn trust_email_and_userinfo() {
    let h = generic(
        json!({"trust_email": true, "use_userinfo": true, "token_auth": "client_secret_post"}),
    )
    .await;
    let id = login(&h, MAYA).await.unwrap();
    assert!(id.email_verified);
    assert_eq!(h.idp.requests("/userinfo"), 1);
    h.idp.set_tamper(Tamper::UserinfoSubMismatch);
    assert_eq!(refused(&h, MAYA).await, LoginError::SubjectInvalid);
}

#[tokio::test]
async fn discovery_and_jwks_are_fetched_once() {
    let h = generic(json!({})).await;
    assert_eq!(
        h.idp.requests("/.well-known/openid-configuration"),
        0,
        "build must not touch the network"
    );
    login(&h, MAYA).await.unwrap();
    login(&h, MAYA).await.unwrap();
    assert_eq!(h.idp.requests("/.well-known/openid-configuration"), 1);
    assert_eq!(h.idp.requests("/jwks"), 1);
}

#[tokio::test]
async fn signature_attacks_are_refused() {
    let h = generic(json!({})).await;
    for t in [
        Tamper::BadSignature,
        Tamper::AlgNone,
        Tamper::Hs256WithClientSecret,
    ] {
        h.idp.set_tamper(t.clone());
        assert_eq!(
            refused(&h, MAYA).await,
            LoginError::SignatureInvalid,
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn issuer_audience_nonce_time_and_subject() {
    let h = generic(json!({})).await;
    let cases = [
        (Tamper::WrongIssuer, LoginError::IssuerInvalid),
        (Tamper::WrongAudience, LoginError::AudienceInvalid),
        (Tamper::ExtraAudienceNoAzp, LoginError::AudienceInvalid),
        (Tamper::NoNonce, LoginError::NonceInvalid),
        (Tamper::WrongNonce, LoginError::NonceInvalid),
        (Tamper::Expired, LoginError::TokenExpired),
        (Tamper::MissingSub, LoginError::SubjectInvalid),
    ];
    for (t, want) in cases {
        h.idp.set_tamper(t.clone());
        assert_eq!(refused(&h, MAYA).await, want, "{t:?}");
    }
}

#[tokio::test]
async fn token_endpoint_error() {
    let h = generic(json!({})).await;
    h.idp.set_tamper(Tamper::TokenEndpointError);
    assert_eq!(
        refused(&h, MAYA).await,
        LoginError::TokenExchangeFailed {
            provider: denied_to(&h)
        }
    );
}

#[tokio::test]
async fn wrong_pkce_verifier_fails_the_exchange() {
    let h = generic(json!({})).await;
    let (cb, mut flow, _) = upstream(&h, MAYA).await;
    flow.pkce_verifier = "x".repeat(43);
    let err = h
        .provider
        .as_redirect()
        .unwrap()
        .finish(&cb, &flow)
        .await
        .unwrap_err();
    assert_eq!(
        err.error,
        LoginError::TokenExchangeFailed {
            provider: denied_to(&h)
        }
    );
}

#[tokio::test]
async fn callback_iss_of_another_issuer_is_a_mix_up() {
    let h = generic(json!({})).await;
    let (mut cb, flow, _) = upstream(&h, MAYA).await;
    assert_eq!(cb.iss.as_deref(), Some(h.base.as_str()));
    cb.iss = Some("http://127.0.0.1:9401".into());
    let err = h
        .provider
        .as_redirect()
        .unwrap()
        .finish(&cb, &flow)
        .await
        .unwrap_err();
    assert_eq!(err.error, LoginError::IssuerMismatch);
    assert_eq!(
        h.idp.requests("/token"),
        0,
        "the code never reaches the token endpoint"
    );
}

#[tokio::test]
async fn callback_error_is_upstream_denied() {
    let h = generic(json!({})).await;
    let cb = homeroom_providers::Callback {
        error: Some("access_denied".into()),
        state: Some("s".into()),
        ..Default::default()
    };
    let flow = homeroom_providers::UpstreamFlow {
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        redirect_uri: CB.into(),
    };
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
            provider: denied_to(&h),
            error: "access_denied".into()
        }
    );
    assert_eq!(h.idp.requests("/token"), 0);
}

#[tokio::test]
async fn unknown_kid_refreshes_the_jwks_once() {
    let h = generic(json!({})).await;
    login(&h, MAYA).await.unwrap();
    assert_eq!(h.idp.requests("/jwks"), 1);
    h.idp.set_tamper(Tamper::UnknownKid);
    let id = login(&h, MAYA).await.unwrap();
    assert_eq!(id.subject, "demo-student-1001");
    assert_eq!(h.idp.requests("/jwks"), 2);
    // The new key is cached now: no further fetch.
    login(&h, MAYA).await.unwrap();
    assert_eq!(h.idp.requests("/jwks"), 2);
}

#[tokio::test]
async fn slow_token_endpoint_times_out() {
    let h = generic(json!({})).await;
    login(&h, MAYA).await.unwrap();
    h.idp.set_tamper(Tamper::SlowToken { secs: 5 });
    let started = Instant::now();
    assert_eq!(
        refused(&h, MAYA).await,
        LoginError::UpstreamTimeout {
            provider: denied_to(&h)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn huge_token_response_is_refused() {
    let h = generic(json!({})).await;
    h.idp.set_tamper(Tamper::HugeTokenResponse);
    assert_eq!(
        refused(&h, MAYA).await,
        LoginError::ResponseTooLarge {
            provider: denied_to(&h)
        }
    );
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable() {
    let settings = homeroom_providers::ProviderSettings {
        id: homeroom_core::ProviderId::new("down"),
        display_name: "Down".into(),
        kind: "oidc".into(),
        config: json!({"issuer": "http://127.0.0.1:1", "client_id": "a", "client_secret": "b", "timeout_secs": 1}),
        tenant_domains: vec![],
    };
    let http = homeroom_providers::http::HttpClient::with_defaults().unwrap();
    let p = homeroom_providers::build(
        &settings,
        &http,
        std::sync::Arc::new(homeroom_core::SystemClock),
    )
    .unwrap();
    let begin = homeroom_providers::BeginLogin {
        state: "s".into(),
        nonce: "n".into(),
        pkce_challenge: "c".into(),
        redirect_uri: CB.into(),
        prompt: None,
        login_hint: None,
    };
    let err = p.as_redirect().unwrap().begin(&begin).await.unwrap_err();
    assert_eq!(
        err.error,
        LoginError::UpstreamUnavailable {
            provider: "Down".into()
        }
    );
}
