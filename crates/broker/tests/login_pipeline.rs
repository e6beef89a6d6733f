#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The login pipeline toward upstream providers and its failures (security.md §2 and §5):
//! state handling, browser binding, the login page, home-realm discovery, sessions,
//! account linking, and upstream refusals surfacing as catalogue pages.

mod common;
use common::*;
use homeroom_core::{AccountId, ProviderId, RefId, TenantId};
use homeroom_directory::{Account, AccountStatus};
use homeroom_sandbox::Tamper;

/// Starts a login and stops at the sandbox's redirect back to Homeroom's callback.
async fn until_callback(b: &reqwest::Client, h: &Harness, user: &str) -> String {
    let (_, c) = pkce();
    let mut url = authorize_url(h, APP, Some(&c), &[("login_hint", user)]);
    for _ in 0..8 {
        let r = b.get(&url).send().await.unwrap();
        let loc = location(&r);
        assert!(r.status().is_redirection(), "{} at {url}", r.status());
        if loc.contains("/callback/idp") {
            return loc;
        }
        url = if loc.starts_with('/') {
            format!("{}{}", h.base, loc)
        } else {
            loc
        };
    }
    panic!("never reached the callback");
}

#[tokio::test]
async fn login_page_lists_providers_and_the_sandbox_picker_signs_in() {
    let h = harness().await;
    let b = browser();
    let (v, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[]))
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    assert!(loc.starts_with("/login?req="), "{loc}");
    let page = b.get(format!("{}{loc}", h.base)).send().await.unwrap();
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in with Demo District"));
    assert!(html.contains("Demo District"));
    let href = html
        .split("href=\"/login/start")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let r = b
        .get(format!("{}/login/start{href}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // The sandbox's page: pick Maya by posting its form (what a student's click does).
    let upstream = location(&r);
    let picker = b.get(&upstream).send().await.unwrap().text().await.unwrap();
    assert!(picker.contains("Maya"));
    let action = format!("{}/authorize", h.idp.issuer());
    let fields: Vec<(String, String)> = picker
        .split("<form")
        .find(|f| f.contains("demo-student-1001"))
        .unwrap()
        .split("<input")
        .skip(1)
        .filter_map(|i| {
            let name = i.split("name=\"").nth(1)?.split('"').next()?.to_owned();
            let value = i
                .split("value=\"")
                .nth(1)
                .map(|v| {
                    v.split('"')
                        .next()
                        .unwrap_or("")
                        .replace("&amp;", "&")
                        .replace("&#x2F;", "/")
                        .replace("&quot;", "\"")
                })
                .unwrap_or_default();
            Some((name, value))
        })
        .chain(
            picker
                .split("<form")
                .find(|f| f.contains("demo-student-1001"))
                .unwrap()
                .split("<button")
                .skip(1)
                .filter_map(|bt| {
                    let name = bt.split("name=\"").nth(1)?.split('"').next()?.to_owned();
                    let value = bt.split("value=\"").nth(1)?.split('"').next()?.to_owned();
                    Some((name, value))
                }),
        )
        .collect();
    let r = b.post(&action).form(&fields).send().await.unwrap();
    assert_eq!(r.status(), 302, "sandbox answered {}", r.status());
    let cb = location(&r);
    let r = b.get(&cb).send().await.unwrap();
    let loc = location(&r);
    assert!(loc.starts_with(CB), "{loc}");
    let code = query_param(&loc, "code").unwrap();
    assert_eq!(
        redeem(&h, APP, Some(APP_SECRET), &code, &v).await.status(),
        200
    );
}

#[tokio::test]
async fn forged_missing_and_replayed_state_never_reach_the_token_endpoint() {
    let h = harness().await;
    let b = browser();
    let before = h.idp.requests("/token");
    for q in ["code=X&state=forged", "code=X"] {
        let r = b
            .get(format!("{}/callback/idp?{q}", h.base))
            .send()
            .await
            .unwrap();
        let (status, code, _) = page_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "upstream.state_invalid"),
            "{q}"
        );
    }
    assert_eq!(h.idp.requests("/token"), before);
    // A real callback, used twice.
    let cb = until_callback(&b, &h, STUDENT).await;
    let r = b.get(&cb).send().await.unwrap();
    assert!(location(&r).starts_with(CB));
    let tokens_after_first = h.idp.requests("/token");
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "upstream.state_used");
    assert_eq!(h.idp.requests("/token"), tokens_after_first);
}

#[tokio::test]
async fn callback_in_another_browser_is_refused() {
    let h = harness().await;
    let attacker = browser();
    let cb = until_callback(&attacker, &h, STUDENT2).await;
    // A victim with no cookies at all: our cookie never came back.
    let victim = browser();
    let r = victim.get(&cb).send().await.unwrap();
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no session for the victim"
    );
    assert_eq!(page_code(r).await.1, "session.cookies_blocked");
    // A victim mid-way through its own login: its flow cookie does not match.
    let cb2 = until_callback(&attacker, &h, STUDENT2).await;
    let victim = browser();
    let _ = until_callback(&victim, &h, STUDENT).await;
    let r = victim.get(&cb2).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "upstream.flow_not_this_browser");
}

#[tokio::test]
async fn upstream_refusals_render_their_catalogue_page() {
    let h = harness().await;
    for (tamper, code) in [
        (Tamper::WrongAudience, "upstream.audience_invalid"),
        (Tamper::BadSignature, "upstream.signature_invalid"),
        (Tamper::WrongIssuer, "upstream.issuer_invalid"),
        (Tamper::WrongNonce, "upstream.nonce_invalid"),
    ] {
        h.idp.set_tamper(tamper.clone());
        let b = browser();
        let cb = until_callback(&b, &h, STUDENT).await;
        let r = b.get(&cb).send().await.unwrap();
        assert!(r.headers().get("location").is_none());
        let (status, got, reference) = page_code(r).await;
        assert_eq!(got, code, "{tamper:?}");
        assert_eq!(status, 401);
        h.state.audit.flush().await;
        let events = h
            .state
            .directory
            .audit_for_ref(&RefId::new(reference))
            .await
            .unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"login.start")
                && kinds.contains(&"upstream.redirect")
                && kinds.contains(&"login.refused"),
            "{kinds:?}"
        );
    }
    h.idp.set_tamper(Tamper::None);
    assert_eq!(
        h.state.directory.count_accounts(None).await.unwrap(),
        0,
        "nothing created"
    );
}

#[tokio::test]
async fn login_rotates_the_session_id_and_ignores_planted_or_ambiguous_cookies() {
    let h = harness().await;
    let b = browser();
    let (_, c) = pkce();
    // Planted cookie (SES-01): the login must not adopt it.
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .header("cookie", "hr_session=attacker-chosen")
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    let cb = until_callback(&b, &h, STUDENT).await;
    let r = b.get(&cb).send().await.unwrap();
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("hr_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Lax")
            && session.contains("Path=/")
    );
    let value = session
        .trim_start_matches("hr_session=")
        .split(';')
        .next()
        .unwrap();
    assert_ne!(value, "attacker-chosen");
    assert!(value.len() >= 43, "256-bit id");
    // Ambiguous session cookies mean no session (SES-03).
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .header("cookie", format!("hr_session={value}; hr_session=other"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    let r = plain
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .header("cookie", format!("hr_session={value}"))
        .send()
        .await
        .unwrap();
    assert!(
        query_param(&location(&r), "code").is_some(),
        "the real cookie alone works"
    );
}

#[tokio::test]
async fn email_discovery_routes_by_domain_and_explains_unknown_domains() {
    let h = harness().await;
    let b = browser();
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[]))
        .send()
        .await
        .unwrap();
    let req = query_param(&format!("{}{}", h.base, location(&r)), "req").unwrap();
    let r = b
        .get(format!(
            "{}/login/discover?req={req}&email=Maya.Chen%40Demo.Homeroom.Test",
            h.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(h.idp.issuer()));
    let r = b
        .get(format!(
            "{}/login/discover?req={req}&email=kid%40gmail.com",
            h.base
        ))
        .send()
        .await
        .unwrap();
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (404, "account.unknown_domain"));
}

#[tokio::test]
async fn an_unverified_email_never_links_to_an_existing_account() {
    let h = harness().await;
    // An account already owns Leo's address, linked to nothing from this provider.
    let existing = Account {
        id: AccountId::new("acc_existing"),
        tenant: TenantId::new("t1"),
        status: AccountStatus::Active,
        email: Some(STUDENT2.into()),
        email_verified: true,
        name: Some("Leo Okafor".into()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![],
        created_at: 0,
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    h.state
        .directory
        .create_account(&existing, None)
        .await
        .unwrap();
    // The provider does not vouch for emails (trust_email = false): refuse, link nothing.
    let mut rec = h
        .state
        .directory
        .get_provider(&ProviderId::new("idp"))
        .await
        .unwrap()
        .unwrap();
    rec.config["trust_email"] = serde_json::json!(false);
    h.state.directory.upsert_provider(&rec).await.unwrap();
    let http = homeroom_providers::http::HttpClient::with_defaults().unwrap();
    h.state
        .providers
        .reload(
            &h.state.directory,
            &http,
            std::sync::Arc::new(h.clock.clone()),
        )
        .await
        .unwrap();
    let b = browser();
    let cb = until_callback(&b, &h, STUDENT2).await;
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "account.link_requires_verified_email");
    assert!(
        h.state
            .directory
            .links_for_account(&existing.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.state.directory.count_accounts(None).await.unwrap(), 1);
    // Trusted again: the verified email of a tenant domain links to that one account.
    rec.config["trust_email"] = serde_json::json!(true);
    h.state.directory.upsert_provider(&rec).await.unwrap();
    h.state
        .providers
        .reload(
            &h.state.directory,
            &http,
            std::sync::Arc::new(h.clock.clone()),
        )
        .await
        .unwrap();
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT2).await;
    let t = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let claims: serde_json::Value = serde_json::from_slice(&base64_decode(
        t["id_token"].as_str().unwrap().split('.').nth(1).unwrap(),
    ))
    .unwrap();
    assert_eq!(claims["sub"], "acc_existing");
    assert_eq!(
        h.state
            .directory
            .links_for_account(&existing.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn archived_accounts_are_refused_with_their_own_code() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let t = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let claims: serde_json::Value = serde_json::from_slice(&base64_decode(
        t["id_token"].as_str().unwrap().split('.').nth(1).unwrap(),
    ))
    .unwrap();
    let id = AccountId::new(claims["sub"].as_str().unwrap());
    h.state
        .directory
        .set_account_status(&id, AccountStatus::Archived)
        .await
        .unwrap();
    let b = browser();
    let cb = until_callback(&b, &h, STUDENT).await;
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "account.archived");
    let acc = h.state.directory.get_account(&id).await.unwrap().unwrap();
    assert_eq!(
        acc.sign_in_count, 1,
        "the refused attempt is not counted as a sign-in"
    );
}

#[tokio::test]
async fn callbacks_carry_no_referrer_and_leave_the_code_url_at_once() {
    let h = harness().await;
    let b = browser();
    let cb = until_callback(&b, &h, STUDENT).await;
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn prompt_login_and_max_age_reach_the_upstream_and_max_age_zero_is_never_fresh() {
    let h = harness().await;
    let b = browser();
    login(&b, &h, APP, STUDENT).await;
    // max_age=0 right after a sign-in: not answered from the session.
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("max_age", "0")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/login?req="), "{}", location(&r));
    // prompt=login through the login page: the provider is asked to re-authenticate.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let r = b
            .get(authorize_url(&h, APP, Some(&c), &[extra]))
            .send()
            .await
            .unwrap();
        let req = query_param(&format!("{}{}", h.base, location(&r)), "req").unwrap();
        let r = b
            .get(format!("{}/login/start?req={req}&provider=idp", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            query_param(&location(&r), "prompt").as_deref(),
            Some("login"),
            "{extra:?}"
        );
    }
    // A plain request still reuses the session silently.
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&r), "code").is_some());
}
