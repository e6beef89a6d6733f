#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `homeroom demo` end to end on a real listener: the newcomer's two clicks, the stable
//! demo clients, and the CLI's config checks and troubleshooter.

use std::process::Command;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn demo_signs_a_student_in_with_two_clicks() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = homeroom::config::Config::default();
    cfg.server.data_dir = Some(data.path().display().to_string());
    let running = homeroom::start(homeroom::ServeOptions {
        config: cfg,
        listen: Some("127.0.0.1:0".into()),
        public_url: None,
        demo: true,
        clock: None,
    })
    .await
    .unwrap();
    let base = running.issuer.clone();
    let b = browser();
    // Opening the app lands on Homeroom's login page.
    let r = b.get(format!("{base}/demo/app")).send().await.unwrap();
    assert!(r.url().path().starts_with("/login"), "{}", r.url());
    let page = r.text().await.unwrap();
    // Click 1: the Demo District button.
    let href = page
        .split("href=\"/login/start")
        .skip(1)
        .find(|s| s.contains("provider=demo-idp"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let r = b
        .get(format!("{base}/login/start{href}"))
        .send()
        .await
        .unwrap();
    assert!(r.url().path().starts_with("/sandbox/demo/authorize"));
    let action = r.url().as_str().split('?').next().unwrap().to_owned();
    let picker = r.text().await.unwrap();
    // Click 2: the first person on the sandbox page (each is a form of hidden fields).
    let form = picker.split("<form").nth(1).unwrap();
    let mut fields: Vec<(String, String)> = form
        .split("name=\"")
        .skip(1)
        .map(|s| {
            let name = s.split('"').next().unwrap().to_owned();
            let value = s
                .split("value=\"")
                .nth(1)
                .map(|v| {
                    v.split('"')
                        .next()
                        .unwrap()
                        .replace("&#38;", "&")
                        .replace("&amp;", "&")
                        .replace("&#x2F;", "/")
                        .replace("&#47;", "/")
                })
                .unwrap_or_default();
            (name, value)
        })
        .collect();
    fields.dedup_by(|a, b| a.0 == b.0);
    let r = b.post(&action).form(&fields).send().await.unwrap();
    assert_eq!(r.url().path(), "/demo/app");
    let html = r.text().await.unwrap();
    assert!(html.contains("data-testid=\"who\">Maya Chen<"), "{html}");
    assert!(html.contains("maya.chen@demo.homeroom.test"));
    // The key persists across runs of the demo.
    assert!(data.path().join("sandbox-demo-idp.pem").exists());
    running.shutdown().await;
}

#[tokio::test]
async fn demo_registers_the_documented_clients() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = homeroom::config::Config::default();
    cfg.server.data_dir = Some(data.path().display().to_string());
    let running = homeroom::start(homeroom::ServeOptions {
        config: cfg,
        listen: Some("127.0.0.1:0".into()),
        public_url: None,
        demo: true,
        clock: None,
    })
    .await
    .unwrap();
    let base = running.issuer.clone();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let ch = homeroom_core::crypto::pkce_s256(&"v".repeat(43));
    for client in ["demo-app", "demo-public"] {
        let r = c
            .get(format!("{base}/oauth2/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", client),
                ("redirect_uri", "http://127.0.0.1:8081/cb"),
                ("scope", "openid"),
                ("state", "s"),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{client}");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login?req="),
            "{client} goes to the login page"
        );
    }
    // demo-app authenticates with demo-secret (unknown code, but the client is accepted).
    let r = c
        .post(format!("{base}/oauth2/token"))
        .basic_auth("demo-app", Some("demo-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", "http://127.0.0.1:8081/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(format!("{base}/oauth2/token"))
        .basic_auth("demo-app", Some("wrong"))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    running.shutdown().await;
}

#[test]
fn check_config_reports_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[tenants.d]
name = "D"
domains = ["d.org"]
[providers.g]
tenant = "d"
kind = "gogle"
client_id = "x"
[providers.ms]
tenant = "d"
kind = "microsoft"
client_id = "x"
client_secret = "y"
entra_tenant = "common"
[providers.o]
tenant = "nowhere"
kind = "oidc"
issuer = "http://idp.example.org"
client_id = "x"
client_secret = "y"
[apps.a]
tenant = "d"
client_secret = "long-enough-secret"
redirect_uris = ["javascript:alert(document.domain)//", "http://app.example.test/cb", "https://*.example.test/cb", "https://ok.example.test/cb"]
[apps.p]
tenant = "d"
token_endpoint_auth_method = "client_secret_basic"
redirect_uris = ["https://ok.example.test/cb"]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "providers.g.kind",
        "providers.ms.allowed_tenants",
        "providers.o.tenant: unknown tenant",
        "providers.o.issuer",
        "apps.a.redirect_uris[0]",
        "apps.a.redirect_uris[1]",
        "apps.a.redirect_uris[2]",
        "apps.p.client_secret: missing",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("redirect_uris[3]"),
        "a good URI is not reported"
    );
    // The shipped example is valid apart from secrets that come from the environment.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/homeroom.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .arg("check-config")
        .arg(example)
        .env("LINCOLN_GOOGLE_SECRET", "s")
        .env("LINCOLN_ENTRA_SECRET", "s")
        .env("LINCOLN_SSO_SECRET", "s")
        .env("GRADEBOOK_SECRET", "gradebook-secret")
        .env("SCIENCE_LAB_SECRET", "science-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Unknown keys and type errors name their path too.
    std::fs::write(&path, "[server]\nlisten = 5\nbogus = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server"), "{text}");
}

#[tokio::test]
async fn troubleshoot_prints_the_trace_of_a_refused_attempt() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = homeroom::config::Config::default();
    cfg.server.data_dir = Some(data.path().display().to_string());
    let running = homeroom::start(homeroom::ServeOptions {
        config: cfg,
        listen: Some("127.0.0.1:0".into()),
        public_url: None,
        demo: true,
        clock: None,
    })
    .await
    .unwrap();
    let base = running.issuer.clone();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.get(format!("{base}/oauth2/authorize?response_type=code&client_id=demo-app&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&scope=openid")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let reference = r.headers()["x-homeroom-ref"].to_str().unwrap().to_owned();
    running.shutdown().await;
    let db = format!("sqlite://{}/homeroom.db", data.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .args(["troubleshoot", &reference, "--directory", &db])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("oauth.redirect_uri_mismatch"), "{text}");
    assert!(text.contains("what to check"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .args(["troubleshoot", "HR-NOPE", "--directory", &db])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn each_demo_portal_tile_signs_a_student_in_to_the_demo_app() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = homeroom::config::Config::default();
    cfg.server.data_dir = Some(data.path().display().to_string());
    let running = homeroom::start(homeroom::ServeOptions {
        config: cfg,
        listen: Some("127.0.0.1:0".into()),
        public_url: None,
        demo: true,
        clock: None,
    })
    .await
    .unwrap();
    let base = running.issuer.clone();
    // A different student per portal: one person's unverified portal email may not link to
    // the account another portal created (that refusal has its own test in the broker).
    for (i, (provider, _, page)) in homeroom::demo::PORTALS.into_iter().enumerate() {
        let b = browser();
        let portal_url = url::Url::parse(&format!("{base}{page}")).unwrap();
        let html = b
            .get(portal_url.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The first tile of someone with an email (the demo app greets by name or email).
        let href = html
            .split("class=\"tile\" href=\"")
            .nth(1 + 2 * i)
            .unwrap_or_else(|| panic!("{provider}: no tiles in {html}"))
            .split('"')
            .next()
            .unwrap()
            .replace("&#38;", "&")
            .replace("&amp;", "&");
        let r = b.get(portal_url.join(&href).unwrap()).send().await.unwrap();
        if r.url().path() != "/demo/app" {
            let url = r.url().clone();
            let body = r.text().await.unwrap();
            let code = body
                .split("data-testid=\"error-code\">")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .unwrap_or("?");
            let guidance = body
                .split("<summary>For IT</summary><p>")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .unwrap_or("?");
            panic!("{provider}: ended at {url} with {code}: {guidance}");
        }
        let body = r.text().await.unwrap();
        assert!(
            body.contains("data-testid=\"who\""),
            "{provider}: not signed in: {body}"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn troubleshoot_answers_for_a_person() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = homeroom::config::Config::default();
    cfg.server.data_dir = Some(data.path().display().to_string());
    let running = homeroom::start(homeroom::ServeOptions {
        config: cfg,
        listen: Some("127.0.0.1:0".into()),
        public_url: None,
        demo: true,
        clock: None,
    })
    .await
    .unwrap();
    let base = running.issuer.clone();
    // Maya signs in once through the Demo District (login_hint: silent upstream sign-in).
    let b = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let ch = homeroom_core::crypto::pkce_s256(&"v".repeat(43));
    let r = b
        .get(format!("{base}/oauth2/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "demo-public"),
            ("redirect_uri", "http://127.0.0.1:8081/cb"),
            ("scope", "openid"),
            ("code_challenge", &ch),
            ("code_challenge_method", "S256"),
            ("login_hint", "maya.chen@demo.homeroom.test"),
            ("idp", "demo-idp"),
        ])
        .send()
        .await;
    // The final hop to 127.0.0.1:8081 fails (nothing listens): the sign-in itself happened.
    drop(r);
    running.shutdown().await;
    let db = format!("sqlite://{}/homeroom.db", data.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .args([
            "troubleshoot",
            "maya.chen@demo.homeroom.test",
            "--directory",
            &db,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[ok] Account is active"), "{text}");
    assert!(text.contains("Linked providers: demo-idp"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_homeroom"))
        .args([
            "troubleshoot",
            "nobody@demo.homeroom.test",
            "--directory",
            &db,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
