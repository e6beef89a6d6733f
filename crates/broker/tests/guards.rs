#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Detectors: redirect loops with an app and with a provider, and the circuit breaker.

mod common;
use common::*;
use homeroom_sandbox::Tamper;

#[tokio::test]
async fn a_scripted_loop_is_broken_at_the_configured_count() {
    let h = harness().await;
    let b = browser();
    // The app keeps sending the same browser back: five sign-ins pass, the sixth is stopped.
    for i in 1..=5 {
        let (code, _) = login(&b, &h, APP, STUDENT).await;
        assert!(!code.is_empty(), "hop {i}");
    }
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT)]))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("location").is_none(),
        "no redirect back into the loop"
    );
    let (status, code, reference) = page_code(r).await;
    assert_eq!((status, code.as_str()), (508, "loop.app"));
    // Another app in the same browser is not affected.
    let (code, _) = login(&b, &h, OTHER, STUDENT).await;
    assert!(!code.is_empty());
    // The break is audited under its reference.
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .audit_for_ref(&homeroom_core::RefId::new(reference))
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.kind == "loop.broken"));
    // A different browser is counted on its own.
    let (code, _) = login(&browser(), &h, APP, STUDENT).await;
    assert!(!code.is_empty());
}

#[tokio::test]
async fn bouncing_to_the_provider_is_broken_too() {
    let h = harness().await;
    let b = browser();
    // The upstream hop never completes (e.g. the callback loses its cookie): start again and again.
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[]))
        .send()
        .await
        .unwrap();
    let req = query_param(&format!("{}{}", h.base, location(&r)), "req").unwrap();
    for _ in 0..5 {
        let r = b
            .get(format!("{}/login/start?req={req}&provider=idp", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
    }
    let r = b
        .get(format!("{}/login/start?req={req}&provider=idp", h.base))
        .send()
        .await
        .unwrap();
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (508, "loop.upstream"));
}

#[tokio::test]
async fn repeated_upstream_timeouts_open_the_circuit() {
    let h = harness_with(Opts {
        tune: Some(|s| s.circuit_threshold = 2),
        ..Opts::default()
    })
    .await;
    h.idp.set_tamper(Tamper::SlowToken { secs: 5 });
    for _ in 0..2 {
        let b = browser();
        let (_, c) = pkce();
        let r = common::follow(
            &b,
            &h,
            &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT)]),
        )
        .await;
        assert_eq!(page_code(r).await.1, "upstream.timeout");
    }
    // Open: students are told at once, without another wait on the provider.
    let before = h.idp.requests("/authorize");
    let b = browser();
    let (_, c) = pkce();
    let r = common::follow(
        &b,
        &h,
        &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT)]),
    )
    .await;
    assert!(r.headers().get("retry-after").is_some());
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (503, "upstream.circuit_open"));
    assert_eq!(
        h.idp.requests("/authorize"),
        before,
        "nobody was sent upstream"
    );
}

#[tokio::test]
async fn metrics_count_logins_refusals_and_loops_without_personal_data() {
    let h = harness().await;
    let b = browser();
    login(&b, &h, APP, STUDENT).await;
    let r = b
        .get(format!("{}/callback/idp?code=x&state=forged", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = reqwest::get(format!("{}/metrics", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("homeroom_logins_total{"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("homeroom_logins_total")
            && l.contains("outcome=\"success\"")
            && l.contains("provider=\"idp\"")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("homeroom_logins_total")
            && l.contains("code=\"upstream.state_invalid\"")),
        "{text}"
    );
    assert!(
        text.contains("homeroom_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/callback/{provider}\""),
        "routes are templates: {text}"
    );
    assert!(
        !text.contains("demo.homeroom.test") && !text.contains("127.0.0.1"),
        "no emails or addresses in labels"
    );
}
