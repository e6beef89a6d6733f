#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Portal launches (Clever tiles through the sandbox portal): a code without our state is
//! never redeemed, the login restarts with our state and continues to the app's
//! third-party-initiated login URI; launches never redirect off the allowlist; a launch
//! replaces the session already on a shared Chromebook.

mod common;
use common::*;
use homeroom_core::{ProviderId, TenantId};
use homeroom_directory::ProviderRecord;
use homeroom_sandbox::clever::{CleverIdp, CleverIdpConfig};
use homeroom_sandbox::{SandboxClient, SandboxKeys, ServerGuard};

async fn with_clever(h: &Harness) -> (CleverIdp, ServerGuard) {
    let cfg = CleverIdpConfig::new(
        vec![SandboxClient {
            client_id: "homeroom".into(),
            client_secret: "clever-secret".into(),
            redirect_uris: vec![
                format!("{}/callback/clever?app={APP}", h.base),
                format!("{}/callback/clever", h.base),
            ],
        }],
        homeroom_sandbox::demo_clever_district(),
        SandboxKeys::generate().unwrap(),
    );
    let (idp, _, guard) = CleverIdp::bind_and_serve(cfg).await.unwrap();
    h.state
        .directory
        .upsert_provider(&ProviderRecord {
            id: ProviderId::new("clever"),
            tenant: TenantId::new("t1"),
            kind: "clever".into(),
            display_name: "Clever".into(),
            enabled: true,
            config: serde_json::json!({
                "client_id": "homeroom", "client_secret": "clever-secret",
                "district_ids": [homeroom_sandbox::DEMO_CLEVER_DISTRICT_ID],
                "oauth_base": idp.base_url(), "api_base": idp.base_url(), "timeout_secs": 2
            }),
        })
        .await
        .unwrap();
    let mut app = app_record(APP, Some(APP_SECRET), "RS256");
    app.initiate_login_uri = Some("https://app.example.test/initiate".into());
    app.start_url = Some("https://app.example.test/home".into());
    app.allowed_origins = vec!["https://app.example.test".into()];
    h.state.directory.upsert_app(&app).await.unwrap();
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
    (idp, guard)
}

/// Clicks a tile at the sandbox portal and follows everything until the browser leaves
/// for the app (returns that Location).
async fn tile(b: &reqwest::Client, h: &Harness, idp: &CleverIdp, user: &str) -> String {
    let mut url = format!(
        "{}/portal/launch?user={user}&client_id=homeroom",
        idp.base_url()
    );
    for _ in 0..10 {
        let r = b.get(&url).send().await.unwrap();
        assert!(
            r.status().is_redirection(),
            "{} at {url}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        let loc = location(&r);
        if loc.starts_with("https://app.example.test") {
            return loc;
        }
        url = if loc.starts_with('/') {
            format!("{}{}", h.base, loc)
        } else {
            loc
        };
    }
    panic!("never reached the app");
}

#[tokio::test]
async fn a_portal_tile_is_restarted_with_our_state_and_continues_to_the_app() {
    let h = harness().await;
    let (idp, _g) = with_clever(&h).await;
    let b = browser();
    let student = homeroom_sandbox::demo_clever_district()
        .into_iter()
        .find(|u| u.given_name == "Maya")
        .unwrap();
    // The tile delivers a code without state: never redeemed, restarted.
    let r = b
        .get(format!(
            "{}/portal/launch?user={}&client_id=homeroom",
            idp.base_url(),
            student.id
        ))
        .send()
        .await
        .unwrap();
    let portal_callback = location(&r);
    assert!(portal_callback.contains("code=") && !portal_callback.contains("state="));
    let tokens_before = idp.requests("/oauth/tokens");
    let r = b.get(&portal_callback).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("/launch/clever?app={APP}"));
    assert_eq!(
        idp.requests("/oauth/tokens"),
        tokens_before,
        "the portal's code was not redeemed"
    );
    // The whole launch, silently (the student is signed in at the portal).
    let to_app = tile(&b, &h, &idp, &student.id).await;
    assert!(
        to_app.starts_with("https://app.example.test/initiate?"),
        "{to_app}"
    );
    assert_eq!(
        query_param(&to_app, "iss").as_deref(),
        Some(h.base.as_str())
    );
    assert_eq!(
        query_param(&to_app, "login_hint").as_deref(),
        student.email.as_deref()
    );
    assert_eq!(
        query_param(&to_app, "target_link_uri").as_deref(),
        Some("https://app.example.test/home")
    );
    // The app then signs the student in without another prompt (SSO session).
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&r), "code").is_some());
    h.state.audit.flush().await;
    let restarted = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("launch.restarted".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!restarted.is_empty(), "the restart is audited");
}

#[tokio::test]
async fn launches_never_redirect_off_the_allowlist() {
    let h = harness().await;
    let (_idp, _g) = with_clever(&h).await;
    let b = browser();
    for q in [
        format!("app={APP}&target_link_uri=https%3A%2F%2Fevil.example%2F"),
        "app=https%3A%2F%2Fevil.example%2F".to_owned(),
        "app=t2-app".to_owned(),
        format!("app={APP}&target_link_uri=https%3A%2F%2Fapp.example.test%40evil.example%2F"),
    ] {
        let r = b
            .get(format!("{}/launch/clever?{q}", h.base))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("location").is_none(), "{q}");
        assert_eq!(page_code(r).await.1, "oauth.target_not_allowed", "{q}");
    }
    // An allowlisted deep link is fine.
    let r = b
        .get(format!(
            "{}/launch/clever?app={APP}&target_link_uri=https%3A%2F%2Fapp.example.test%2Fclass%2F7",
            h.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn a_launch_replaces_the_session_on_a_shared_chromebook() {
    let h = harness().await;
    let (idp, _g) = with_clever(&h).await;
    let b = browser();
    let people = homeroom_sandbox::demo_clever_district();
    let maya = people.iter().find(|u| u.given_name == "Maya").unwrap();
    let leo = people.iter().find(|u| u.given_name == "Leo").unwrap();
    let first = tile(&b, &h, &idp, &maya.id).await;
    assert_eq!(
        query_param(&first, "login_hint").as_deref(),
        maya.email.as_deref()
    );
    // Leo sits down at the same Chromebook and clicks his tile.
    let second = tile(&b, &h, &idp, &leo.id).await;
    assert_eq!(
        query_param(&second, "login_hint").as_deref(),
        leo.email.as_deref()
    );
    // The app now gets Leo, not Maya.
    let (code, v) = {
        let (v, c) = pkce();
        let r = b
            .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
            .send()
            .await
            .unwrap();
        (query_param(&location(&r), "code").unwrap(), v)
    };
    let t = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let ui = json(
        reqwest::Client::new()
            .get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(t["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ui["email"].as_str(), leo.email.as_deref());
}
