#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `/session/status` from an app on another site: the session cookie (SameSite=Lax) does
//! not travel with a cross-site fetch, the status cookie does; it shows the idle timer and
//! nothing else, only to registered origins, and dies with the session.

mod common;
use common::*;

#[tokio::test]
async fn a_cross_site_app_sees_the_session_through_the_status_cookie_only() {
    let h = harness().await;
    let mut app = app_record(APP, Some(APP_SECRET), "RS256");
    app.allowed_origins = vec!["https://app.example.test".into()];
    h.state.directory.upsert_app(&app).await.unwrap();
    // Sign in, keeping the callback's cookies.
    let b = browser();
    let (_, c) = pkce();
    let mut url = authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT)]);
    let mut status_cookie = None;
    for _ in 0..8 {
        let r = b.get(&url).send().await.unwrap();
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(rest) = v.strip_prefix("hr_status=") {
                status_cookie = Some(rest.split(';').next().unwrap().to_owned());
            }
        }
        let loc = location(&r);
        if loc.starts_with(CB) {
            break;
        }
        url = if loc.starts_with('/') {
            format!("{}{}", h.base, loc)
        } else {
            loc
        };
    }
    let token = status_cookie.expect("a status cookie is set at sign-in");
    // The app's page fetches the status cross-site: only the status cookie arrives.
    let app_fetch = |cookie: Option<String>| {
        let mut r = reqwest::Client::new()
            .get(format!("{}/session/status", h.base))
            .header("origin", "https://app.example.test");
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    let r = app_fetch(Some(format!("hr_status={token}"))).await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.test"
    );
    let s = json(r).await;
    assert_eq!(s["active"], true, "{s}");
    assert!(s["seconds_left"].as_i64().unwrap() > 1700);
    assert_eq!(json(app_fetch(None).await.unwrap()).await["active"], false);
    assert_eq!(
        json(app_fetch(Some("hr_status=forged".into())).await.unwrap()).await["active"],
        false
    );
    // An unregistered origin gets no CORS grant.
    let r = reqwest::Client::new()
        .get(format!("{}/session/status", h.base))
        .header("origin", "https://app.example.test.evil.example")
        .header("cookie", format!("hr_status={token}"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The status cookie is no session: it cannot authorize anything.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .header("cookie", format!("hr_status={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    // It dies with the session (idle timeout).
    h.clock.advance(1801);
    assert_eq!(
        json(app_fetch(Some(format!("hr_status={token}"))).await.unwrap()).await["active"],
        false
    );
}
