#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Two Homeroom instances sharing PostgreSQL and Redis behave as one: a login that starts
//! on one finishes on the other; codes, sessions, keys and loop counters are shared.

use homeroom::config::{AppConfig, Config, ProviderConfig, TenantConfig};
use homeroom_sandbox::{Flavour, OidcIdp, OidcIdpConfig, SandboxClient, SandboxKeys};
use std::collections::BTreeMap;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

async fn pg_schema_url() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("HOMEROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) if in_ci() => panic!("postgres not reachable in CI: {e}"),
        Err(e) => {
            eprintln!("skipped: postgres not reachable ({e})");
            return None;
        }
    };
    let name = format!("i_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    Some(format!("{base}?options=-c%20search_path%3D{name}"))
}

async fn redis_url() -> Option<String> {
    let url = std::env::var("HOMEROOM_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match homeroom_session::open(&url).await {
        Ok(_) => Some(url),
        Err(e) if in_ci() => panic!("redis not reachable in CI: {e}"),
        Err(e) => {
            eprintln!("skipped: redis not reachable ({e})");
            None
        }
    }
}

fn config(directory: &str, sessions: &str, idp_issuer: &str, data: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.data_dir = Some(data.display().to_string());
    cfg.store.directory = Some(directory.into());
    cfg.store.sessions = Some(sessions.into());
    cfg.tenants.insert(
        "d".into(),
        TenantConfig {
            name: "District".into(),
            domains: vec![homeroom_sandbox::DEMO_DOMAIN.into()],
            session_idle_minutes: 30,
            session_warning_minutes: 25,
            session_absolute_hours: 12,
            trusted_networks: vec![],
            admins: vec![],
            roster_required: false,
            classroom_codes: false,
            family_policies: vec![],
            parent_code_days: None,
            classroom_badges_anywhere: false,
        },
    );
    let mut settings = BTreeMap::new();
    settings.insert("issuer".to_owned(), serde_json::json!(idp_issuer));
    settings.insert("client_id".to_owned(), serde_json::json!("homeroom"));
    settings.insert(
        "client_secret".to_owned(),
        serde_json::json!("upstream-secret"),
    );
    settings.insert("trust_email".to_owned(), serde_json::json!(true));
    cfg.providers.insert(
        "idp".into(),
        ProviderConfig {
            tenant: "d".into(),
            kind: "oidc".into(),
            display_name: Some("District".into()),
            enabled: true,
            client_secret_env: None,
            settings,
        },
    );
    cfg.apps.insert(
        "app".into(),
        AppConfig {
            tenant: "d".into(),
            name: Some("App".into()),
            client_secret: Some("app-secret-123".into()),
            client_secret_env: None,
            token_endpoint_auth_method: None,
            redirect_uris: vec!["http://127.0.0.1:8081/cb".into()],
            post_logout_redirect_uris: vec![],
            scopes: None,
            id_token_alg: None,
            enabled: true,
            native: false,
            initiate_login_uri: None,
            start_url: None,
            allowed_origins: vec![],
            assign_roles: vec![],
            assign_schools: vec![],
            assign_grades: vec![],
        },
    );
    cfg
}

fn loc(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_login_started_on_one_instance_finishes_on_the_other() {
    let (Some(directory), Some(sessions)) = (pg_schema_url().await, redis_url().await) else {
        return;
    };
    // The public address (instance A's); instance B serves the same issuer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = listener.local_addr().unwrap();
    drop(listener);
    let issuer = format!("http://{a_addr}");
    let idp_cfg = OidcIdpConfig::new(
        Flavour::Generic,
        vec![SandboxClient {
            client_id: "homeroom".into(),
            client_secret: "upstream-secret".into(),
            redirect_uris: vec![format!("{issuer}/callback/idp")],
        }],
        homeroom_sandbox::demo_district_users(),
        SandboxKeys::generate().unwrap(),
    );
    let (idp, _, _guard) = OidcIdp::bind_and_serve(idp_cfg).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let a = homeroom::start(homeroom::ServeOptions {
        config: config(&directory, &sessions, idp.issuer(), data.path()),
        listen: Some(a_addr.to_string()),
        public_url: Some(issuer.clone()),
        demo: false,
        clock: None,
    })
    .await
    .unwrap();
    let b = homeroom::start(homeroom::ServeOptions {
        config: config(&directory, &sessions, idp.issuer(), data.path()),
        listen: Some("127.0.0.1:0".into()),
        public_url: Some(issuer.clone()),
        demo: false,
        clock: None,
    })
    .await
    .unwrap();
    let on_b = |url: &str| url.replace(&a_addr.to_string(), &b.addr.to_string());
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "v".repeat(50);
    let challenge = homeroom_core::crypto::pkce_s256(&verifier);
    let authorize = format!(
        "{issuer}/oauth2/authorize?response_type=code&client_id=app&redirect_uri=http%3A%2F%2F127.0.0.1%3A8081%2Fcb&scope=openid+email&state=s1&nonce=n1&code_challenge={challenge}&code_challenge_method=S256"
    );
    // Authorize on A; the login page and the provider choice on B.
    let r = browser.get(&authorize).send().await.unwrap();
    let login_page = format!("{issuer}{}", loc(&r));
    let req = url::Url::parse(&login_page)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "req")
        .unwrap()
        .1
        .into_owned();
    let r = browser
        .get(on_b(&format!(
            "{issuer}/login/start?req={req}&provider=idp&login_hint=x"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // Upstream (silent by hint) and back to the callback, served by B.
    let upstream = format!("{}&login_hint=maya.chen%40demo.homeroom.test", loc(&r));
    let r = browser.get(&upstream).send().await.unwrap();
    let callback = loc(&r);
    assert!(callback.starts_with(&format!("{issuer}/callback/idp")));
    let r = browser.get(on_b(&callback)).send().await.unwrap();
    let app_redirect = loc(&r);
    assert!(
        app_redirect.starts_with("http://127.0.0.1:8081/cb"),
        "{} {app_redirect}",
        r.status()
    );
    let code = url::Url::parse(&app_redirect)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    // The code minted on B is redeemed on A, exactly once across both.
    let c = reqwest::Client::new();
    let redeem = |base: String| {
        let c = c.clone();
        let code = code.clone();
        let verifier = verifier.clone();
        async move {
            c.post(format!("{base}/oauth2/token"))
                .basic_auth("app", Some("app-secret-123"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", "http://127.0.0.1:8081/cb"),
                    ("code_verifier", verifier.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let results = futures::future::join_all((0..10).map(|i| {
        redeem(if i % 2 == 0 {
            issuer.clone()
        } else {
            on_b(&issuer)
        })
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r.status() == 200).count(), 1);
    // Tokens from either instance verify against either's JWKS (keys shared).
    let jwks_a: serde_json::Value = c
        .get(format!("{issuer}/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_b: serde_json::Value = c
        .get(on_b(&format!("{issuer}/oauth2/jwks")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_a, jwks_b);
    // The SSO session made on B is honoured by A.
    let r = browser
        .get(format!("{authorize}&prompt=none"))
        .send()
        .await
        .unwrap();
    assert!(loc(&r).contains("code="), "{}", loc(&r));
    // (The replays above revoked the first code's family, as a replay must.) This code is
    // redeemed once, on B.
    let second_code = url::Url::parse(&loc(&r))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let r = c
        .post(on_b(&format!("{issuer}/oauth2/token")))
        .basic_auth("app", Some("app-secret-123"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", second_code.as_str()),
            ("redirect_uri", "http://127.0.0.1:8081/cb"),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tokens = r.json::<serde_json::Value>().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    // A revocation on A is honoured by B at once, although B has the token's family in its
    // local cache (read twice before): introspection and userinfo on B, right after the
    // revoke returns, with no wait.
    let introspect_on_b = || async {
        c.post(on_b(&format!("{issuer}/oauth2/introspect")))
            .basic_auth("app", Some("app-secret-123"))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["active"]
            .clone()
    };
    let userinfo_on_b = || async {
        c.get(on_b(&format!("{issuer}/oauth2/userinfo")))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(introspect_on_b().await, serde_json::json!(true));
    assert_eq!(userinfo_on_b().await, 200);
    assert_eq!(introspect_on_b().await, serde_json::json!(true));
    let r = c
        .post(format!("{issuer}/oauth2/revoke"))
        .basic_auth("app", Some("app-secret-123"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(introspect_on_b().await, serde_json::json!(false));
    assert_eq!(userinfo_on_b().await, 401);
    // Loop counters are shared: hops alternate between instances and still add up.
    let mut last = reqwest::StatusCode::OK;
    for i in 0..6 {
        let url = if i % 2 == 0 {
            authorize.clone()
        } else {
            on_b(&authorize)
        };
        let r = browser.get(url).send().await.unwrap();
        last = r.status();
    }
    assert_eq!(
        last.as_u16(),
        508,
        "the sixth hop across both instances breaks the loop"
    );
    a.shutdown().await;
    b.shutdown().await;
}
