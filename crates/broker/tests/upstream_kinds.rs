#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The pipeline with each upstream kind (Google `hd`, Entra `tid`), on PostgreSQL + Redis,
//! and with an expired flow.

mod common;
use common::*;
use homeroom_sandbox::Flavour;

async fn until_callback(b: &reqwest::Client, h: &Harness, user: &str) -> String {
    let (_, c) = pkce();
    let mut url = authorize_url(h, APP, Some(&c), &[("login_hint", user), ("idp", "idp")]);
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
async fn google_district_account_signs_in_and_a_personal_one_is_told_to_switch() {
    let h = harness_with(Opts {
        flavour: Flavour::Google,
        ..Opts::default()
    })
    .await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    assert_eq!(
        redeem(&h, APP, Some(APP_SECRET), &code, &v).await.status(),
        200
    );
    // A personal Gmail (no hd).
    let b = browser();
    let cb = until_callback(&b, &h, PERSONAL).await;
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let html = r.text().await.unwrap();
    assert!(html.contains("upstream.domain_mismatch"));
    assert!(html.contains(PERSONAL), "the page names the account used");
    assert!(html.contains("demo.homeroom.test"), "and the one expected");
    assert!(html.contains("Use a different account"));
    let href = html
        .split("href=\"/login/start")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(href.contains("prompt=select_account"));
    let r = b
        .get(format!("{}/login/start{href}", h.base))
        .send()
        .await
        .unwrap();
    let upstream = location(&r);
    assert!(upstream.contains("prompt=select_account"), "{upstream}");
    // Nothing was created for the personal account.
    let accounts = h
        .state
        .directory
        .find_accounts_by_email(&homeroom_core::TenantId::new("t1"), PERSONAL)
        .await
        .unwrap();
    assert!(accounts.is_empty());
}

#[tokio::test]
async fn entra_tenant_is_checked_and_accounts_key_on_tid_and_oid() {
    let h = harness_with(Opts {
        flavour: Flavour::Microsoft {
            tenant_id: homeroom_sandbox::DEMO_TENANT_ID.into(),
        },
        ..Opts::default()
    })
    .await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    assert_eq!(
        redeem(&h, APP, Some(APP_SECRET), &code, &v).await.status(),
        200
    );
    let link_subject = format!(
        "{}:0b6f2a4e-1c3d-4e5f-8a9b-000000001001",
        homeroom_sandbox::DEMO_TENANT_ID
    );
    let acc = h
        .state
        .directory
        .find_account_by_link(&homeroom_core::ProviderId::new("idp"), &link_subject)
        .await
        .unwrap();
    assert!(acc.is_some(), "linked by tid:oid");
    let b = browser();
    let cb = until_callback(&b, &h, PERSONAL).await;
    let r = b.get(&cb).send().await.unwrap();
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (403, "upstream.tenant_mismatch"));
}

#[tokio::test]
async fn a_flow_left_too_long_expires() {
    let h = harness().await;
    let b = browser();
    let cb = until_callback(&b, &h, STUDENT).await;
    h.clock.advance(601);
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "upstream.flow_expired");
}

#[tokio::test]
async fn the_whole_flow_runs_on_postgresql_and_redis() {
    let (Some(directory), Some(sessions)) = (pg_schema_url().await, redis_url().await) else {
        return;
    };
    let h = harness_with(Opts {
        directory,
        sessions,
        flavour: Flavour::Generic,
        tune: None,
    })
    .await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let t = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    assert!(t["id_token"].is_string());
    // Single use holds in Redis too.
    let again = redeem(&h, APP, Some(APP_SECRET), &code, &v).await;
    assert_eq!(json(again).await["error"], "invalid_grant");
    // SSO session in Redis serves a second app.
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, OTHER, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&r), "code").is_some());
    // Parallel redemption across the Redis backend: one winner.
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let results =
        futures::future::join_all((0..10).map(|_| redeem(&h, APP, Some(APP_SECRET), &code, &v)))
            .await;
    assert_eq!(results.iter().filter(|r| r.status() == 200).count(), 1);
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("login.success".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!events.is_empty(), "audit events reach PostgreSQL");
}
