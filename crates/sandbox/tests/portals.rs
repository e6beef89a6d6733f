//! The portal emulators' own quirks over HTTP: client authentication at each token
//! endpoint, single-use and expiring codes, portal tiles that launch without `state`,
//! nesting under a path prefix, the tamper endpoint and request counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use homeroom_sandbox::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

const CB: &str = "http://127.0.0.1:1/callback";
const CB2: &str = "http://127.0.0.1:1/other-callback";

fn keys() -> SandboxKeys {
    static KEYS: OnceLock<SandboxKeys> = OnceLock::new();
    KEYS.get_or_init(|| SandboxKeys::generate().unwrap())
        .clone()
}

fn clients() -> Vec<SandboxClient> {
    vec![SandboxClient {
        client_id: "app".into(),
        client_secret: "s3cret".into(),
        redirect_uris: vec![CB.into(), CB2.into()],
    }]
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Follows an authorize URL as `hint`; returns the redirect's query.
async fn authorize(url: String) -> HashMap<String, String> {
    let resp = http().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let loc = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    loc.query_pairs().into_owned().collect()
}

async fn clever_code(base: &str, redirect: &str) -> String {
    let q = authorize(format!(
        "{base}/oauth/authorize?response_type=code&client_id=app&redirect_uri={}&state=st&login_hint=mayachen",
        enc(redirect)
    ))
    .await;
    assert_eq!(q["state"], "st");
    q["code"].clone()
}

#[tokio::test]
async fn clever_token_endpoint_requires_basic_and_refuses_body_credentials() {
    let config = CleverIdpConfig::new(clients(), demo_clever_district(), keys());
    let (idp, _, _g) = CleverIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let token = format!("{base}/oauth/tokens");

    // Credentials in the form body (django-allauth style): refused, code not burnt.
    let code = clever_code(&base, CB).await;
    let body = http()
        .post(&token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 401);
    assert_eq!(
        body.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    // Basic plus a secret in the body: still refused.
    let both = http()
        .post(&token)
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
            ("client_secret", "s3cret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 401);
    // Basic with a JSON body works; the code is single use (400 on reuse).
    let ok = http()
        .post(&token)
        .basic_auth("app", Some("s3cret"))
        .json(&json!({"grant_type": "authorization_code", "code": code, "redirect_uri": CB}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let tokens: Value = ok.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["id_token"].as_str().unwrap().split('.').count(), 3);
    let again = http()
        .post(&token)
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    // Wrong redirect_uri.
    let code = clever_code(&base, CB).await;
    let wrong = http()
        .post(&token)
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB2),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);

    // The API with the access token: /me, /users/{id} (own only), /userinfo.
    let access = tokens["access_token"].as_str().unwrap();
    let me: Value = http()
        .get(format!("{base}/v3.0/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["type"], "user");
    assert_eq!(me["data"]["district"], DEMO_CLEVER_DISTRICT_ID);
    assert_eq!(me["data"]["authorized_by"], "district");
    let id = me["data"]["id"].as_str().unwrap();
    let user: Value = http()
        .get(format!("{base}/v3.0/users/{id}"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        user["data"]["roles"]["student"]["sis_id"],
        "demo-student-1001"
    );
    assert_eq!(user["data"]["roles"]["student"]["grade"], "7");
    let other = http()
        .get(format!("{base}/v3.0/users/6502e8a1c3b7a90012f4d001"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let info: Value = http()
        .get(format!("{base}/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email_verified"], false);
    assert_eq!(info["district_id"], DEMO_CLEVER_DISTRICT_ID);
    assert_eq!(idp.requests("/oauth/tokens"), 5);
}

#[tokio::test]
async fn clever_codes_expire_after_their_lifetime() {
    let mut config = CleverIdpConfig::new(clients(), demo_clever_district(), keys());
    config.code_ttl_secs = 1;
    config.oidc_mode = false;
    let (idp, _, _g) = CleverIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let code = clever_code(&base, CB).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let late = http()
        .post(format!("{base}/oauth/tokens"))
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400);
    // OIDC mode off: no id_token.
    let code = clever_code(&base, CB).await;
    let ok: Value = http()
        .post(format!("{base}/oauth/tokens"))
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ok.get("id_token").is_none());
}

#[tokio::test]
async fn classlink_token_endpoint_wants_body_credentials_and_refuses_basic() {
    let config = ClassLinkIdpConfig::new(clients(), demo_classlink_tenant(), keys());
    let (idp, _, _g) = ClassLinkIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let disc: Value = http()
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disc["token_endpoint"], format!("{base}/oauth2/v2/token"));
    let code = || async {
        authorize(format!(
            "{base}/oauth2/v2/auth?response_type=code&client_id=app&redirect_uri={}&scope=openid&state=s&nonce=n&login_hint=mayachen",
            enc(CB)
        ))
        .await["code"]
            .clone()
    };
    let token = format!("{base}/oauth2/v2/token");
    let c = code().await;
    let basic = http()
        .post(&token)
        .basic_auth("app", Some("s3cret"))
        .form(&[("code", c.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        basic.status(),
        401,
        "ClassLink wants credentials in the body"
    );
    // ClassLink's own library: only code, client_id, client_secret.
    let ok = http()
        .post(&token)
        .form(&[
            ("code", c.as_str()),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let t: Value = ok.json().await.unwrap();
    assert_eq!(t["response_type"], "code");
    assert!(t.get("expires_in").is_none());
    // The ID token: no nbf, email_verified true (even for synthetic emails), nonce echoed.
    let payload = t["id_token"].as_str().unwrap().split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(claims.get("nbf").is_none());
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["nonce"], "n");
    assert_eq!(claims["sub"], "40718233");
    // /v2/my/info: numeric ids.
    let info: Value = http()
        .get(format!("{base}/v2/my/info"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["TenantId"], 2291);
    assert_eq!(info["UserId"], 40718233);
    assert_eq!(info["Role"], "Student");
    assert_eq!(info["SourcedId"], "demo-student-1001");
    // A redirect_uri that is sent must match; reuse is refused.
    let c = code().await;
    let wrong = http()
        .post(&token)
        .form(&[
            ("code", c.as_str()),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            ("redirect_uri", CB2),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let reused = http()
        .post(&token)
        .form(&[
            ("code", c.as_str()),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 400);
}

#[tokio::test]
async fn gg4l_token_endpoint_requires_basic_and_takes_query_parameters() {
    let config = Gg4lIdpConfig::new(clients(), demo_gg4l_district(), keys());
    let (idp, _, _g) = Gg4lIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let code = authorize(format!(
        "{base}/oauth/auth?response_type=code&client_id=app&redirect_uri={}&state=s&login_hint=mayachen",
        enc(CB)
    ))
    .await["code"]
        .clone();
    let no_basic = http()
        .post(format!(
            "{base}/oauth/token?grant_type=authorization_code&code={code}"
        ))
        .form(&[("client_id", "app"), ("client_secret", "s3cret")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_basic.status(), 401);
    let ok = http()
        .post(format!(
            "{base}/oauth/token?grant_type=authorization_code&code={code}"
        ))
        .basic_auth("app", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let t: Value = ok.json().await.unwrap();
    assert_eq!(t["expires_in"], 43200);
    let payload = t["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["type"], "student");
    assert_eq!(claims["roles"], json!(["STUDENT"]));
    assert_eq!(claims["district"], DEMO_GG4L_DISTRICT_ID);
    assert_eq!(claims["org_id"], DEMO_GG4L_ORG_ID);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1800
    );
}

/// Tiles launch like the real portals: the app's first redirect URI, a fresh code, no state.
#[tokio::test]
async fn portal_pages_launch_without_state_even_when_nested() {
    let clever = CleverIdp::new(CleverIdpConfig {
        base_url: "http://unused.example/sandbox/clever".into(),
        ..CleverIdpConfig::new(clients(), demo_clever_district(), keys())
    });
    let classlink = ClassLinkIdp::new(ClassLinkIdpConfig::new(
        clients(),
        demo_classlink_tenant(),
        keys(),
    ));
    let gg4l = Gg4lIdp::new(Gg4lIdpConfig::new(clients(), demo_gg4l_district(), keys()));
    let app = axum::Router::new()
        .nest("/sandbox/clever", clever.router())
        .nest("/sandbox/classlink", classlink.router())
        .nest("/sandbox/gg4l", gg4l.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for (prefix, page) in [
        ("clever", "portal"),
        ("classlink", "launchpad"),
        ("gg4l", "passport"),
    ] {
        let page_url = url::Url::parse(&format!("http://{addr}/sandbox/{prefix}/{page}")).unwrap();
        let html = http()
            .get(page_url.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("Maya Chen"), "{prefix}");
        // The first tile's link, resolved against the page like a browser would.
        let href = html
            .split("class=\"tile\" href=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .replace("&amp;", "&");
        let launch = page_url.join(&href).unwrap();
        assert!(
            launch
                .path()
                .starts_with(&format!("/sandbox/{prefix}/{page}/launch"))
        );
        let resp = http().get(launch).send().await.unwrap();
        assert_eq!(resp.status(), 302, "{prefix}");
        let loc = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        assert!(loc.as_str().starts_with(CB), "first redirect URI");
        let q: HashMap<_, _> = loc.query_pairs().into_owned().collect();
        assert!(q.contains_key("code"));
        assert!(!q.contains_key("state"), "portal launches carry no state");
    }
    assert_eq!(clever.requests("/portal/launch"), 1);
    // The launch code is a real code for the primary redirect URI.
    let resp = http()
        .get(format!(
            "http://{addr}/sandbox/clever/portal/launch?user=mayachen&client_id=app"
        ))
        .send()
        .await
        .unwrap();
    let loc = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let code = loc
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let ok = http()
        .post(format!("http://{addr}/sandbox/clever/oauth/tokens"))
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Unknown app or user: a plain 400 page.
    let bad = http()
        .get(format!(
            "http://{addr}/sandbox/gg4l/passport/launch?user=nobody&client_id=app"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn tamper_over_http_and_authorize_validation() {
    let config = ClassLinkIdpConfig::new(clients(), demo_classlink_tenant(), keys());
    let (idp, _, _g) = ClassLinkIdp::bind_and_serve(config).await.unwrap();
    let base = idp.base_url().to_owned();
    let r = http()
        .post(format!("{base}/_sandbox/tamper"))
        .json(&json!({"tamper": "reused_code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let url = format!(
        "{base}/oauth2/v2/auth?response_type=code&client_id=app&redirect_uri={}&login_hint=mayachen",
        enc(CB)
    );
    idp.set_tamper(PortalTamper::None);
    let first = authorize(url.clone()).await["code"].clone();
    idp.set_tamper(PortalTamper::ReusedCode);
    assert_eq!(authorize(url.clone()).await["code"], first);
    idp.set_tamper(PortalTamper::None);
    assert_ne!(authorize(url).await["code"], first);
    // Unregistered redirect URI and unknown client: error page, no redirect.
    for bad in [
        format!(
            "{base}/oauth2/v2/auth?response_type=code&client_id=app&redirect_uri=http%3A%2F%2Fevil.example%2Fcb"
        ),
        format!(
            "{base}/oauth2/v2/auth?response_type=code&client_id=nope&redirect_uri={}",
            enc(CB)
        ),
    ] {
        assert_eq!(http().get(bad).send().await.unwrap().status(), 400);
    }
    // Without a hint: the picker, HTML-escaped.
    let page = http()
        .get(format!(
            "{base}/oauth2/v2/auth?response_type=code&client_id=app&redirect_uri={}&state=%3Cx%3E",
            enc(CB)
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Grace Hopper") && page.contains("&lt;x&gt;") && !page.contains("<x>"));
    assert_eq!(idp.requests("/oauth2/v2/auth"), 6);
}
