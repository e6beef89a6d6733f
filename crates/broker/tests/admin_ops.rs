#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Admin API operations against a real sandbox upstream: "test connection" (discovery,
//! issuer, clock, JWKS, redirect URI registration) with a correct and a wrong redirect URI
//! and a skewed clock; the audit-event filters one by one; rate-limit blocks listed and
//! lifted (and only listed keys can be lifted).

mod common;
use common::*;
use homeroom_core::{AccountId, ClientId, ProviderId, RefId, TenantId};
use homeroom_directory::AuditEvent;
use serde_json::Value;

const BOT: &str = "ops-bot";
const BOT_SECRET: &str = "ops-bot-secret";

async fn admin_token(h: &Harness) -> String {
    admin_bot_token(h, BOT, BOT_SECRET).await
}

fn api(h: &Harness, token: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    admin_api(h, token, method, path)
}

async fn test_connection(h: &Harness, token: &str, provider: &str) -> Value {
    let r = api(
        h,
        token,
        reqwest::Method::POST,
        &format!("/providers/{provider}/test"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} finding in {report}"))
}

#[tokio::test]
async fn test_connection_passes_against_the_sandbox_with_our_redirect_uri() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let before = h.idp.requests("/authorize");
    let report = test_connection(&h, &token, "idp").await;
    assert_eq!(report["provider"], "idp");
    for id in ["discovery", "issuer", "clock", "jwks", "redirect_uri"] {
        let f = finding(&report, id);
        assert_eq!(f["status"], "ok", "{id}: {f}");
        assert!(!f["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(report["status"], "ok", "{report}");
    assert!(
        finding(&report, "jwks")["message"]
            .as_str()
            .unwrap()
            .contains("RS256")
    );
    assert_eq!(
        h.idp.requests("/authorize"),
        before + 1,
        "the redirect URI was checked by an authorization request"
    );
    // Audited, naming who ran it.
    h.state.audit.flush().await;
    let events = json(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            "/events?kind=admin.provider_tested",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
}

#[tokio::test]
async fn a_redirect_uri_the_provider_does_not_know_fails_with_what_to_register() {
    let h = harness().await;
    let token = admin_token(&h).await;
    // Same sandbox, same client, but our callback for this id is not registered there.
    let r = api(&h, &token, reqwest::Method::POST, "/providers")
        .json(&serde_json::json!({
            "id": "idp-copy", "kind": "oidc", "display_name": "Copy",
            "config": {"issuer": h.idp.issuer(), "client_id": "homeroom",
                       "client_secret": "upstream-secret", "timeout_secs": 2}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let report = test_connection(&h, &token, "idp-copy").await;
    let f = finding(&report, "redirect_uri");
    assert_eq!(f["status"], "fail", "{f}");
    let callback = format!("{}/callback/idp-copy", h.base);
    assert!(f["message"].as_str().unwrap().contains(&callback), "{f}");
    let action = f["action"].as_str().unwrap();
    assert!(
        action.contains(&callback) && action.contains("homeroom"),
        "{action}"
    );
    assert_eq!(report["status"], "fail");
    // The rest of the connection is fine.
    assert_eq!(finding(&report, "issuer")["status"], "ok");
    assert_eq!(finding(&report, "jwks")["status"], "ok");
}

#[tokio::test]
async fn a_skewed_clock_fails_the_clock_finding() {
    let h = harness().await;
    // Our clock runs ten minutes ahead of the provider's.
    h.clock.advance(600);
    let token = admin_token(&h).await;
    let report = test_connection(&h, &token, "idp").await;
    let f = finding(&report, "clock");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(f["message"].as_str().unwrap().contains("behind"), "{f}");
    assert!(f["action"].as_str().unwrap().contains("NTP"));
    assert_eq!(report["status"], "fail");
    assert_eq!(finding(&report, "redirect_uri")["status"], "ok");
}

#[tokio::test]
async fn a_wrong_issuer_or_an_unreachable_provider_is_a_plain_failure() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let mut rec = h
        .state
        .directory
        .get_provider(&ProviderId::new("idp"))
        .await
        .unwrap()
        .unwrap();
    rec.config["issuer"] = format!("{}/", h.idp.issuer()).into();
    h.state.directory.upsert_provider(&rec).await.unwrap();
    let report = test_connection(&h, &token, "idp").await;
    let f = finding(&report, "issuer");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["action"].as_str().unwrap().contains(h.idp.issuer()),
        "says which issuer to set: {f}"
    );
    rec.config["issuer"] = "http://127.0.0.1:9/nothing-here".into();
    h.state.directory.upsert_provider(&rec).await.unwrap();
    let report = test_connection(&h, &token, "idp").await;
    assert_eq!(finding(&report, "discovery")["status"], "fail");
    // Another tenant's provider is not found, and nothing is probed for it.
    let before = h.idp.requests("/.well-known/openid-configuration");
    let mut other = rec.clone();
    other.id = ProviderId::new("t2-idp");
    other.tenant = TenantId::new("t2");
    h.state.directory.upsert_provider(&other).await.unwrap();
    let r = api(&h, &token, reqwest::Method::POST, "/providers/t2-idp/test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(h.idp.requests("/.well-known/openid-configuration"), before);
}

fn event(
    id: &str,
    at_ms: i64,
    kind: &str,
    code: Option<&str>,
    provider: &str,
    app: &str,
) -> AuditEvent {
    AuditEvent {
        id: id.into(),
        ref_id: Some(RefId::new(format!("HR-{id}"))),
        at_ms,
        tenant: Some(TenantId::new("t1")),
        kind: kind.into(),
        code: code.map(str::to_owned),
        provider: Some(ProviderId::new(provider)),
        client: Some(ClientId::new(app)),
        account: Some(AccountId::new(format!("acc-{id}"))),
        detail: serde_json::json!({}),
    }
}

async fn event_ids(h: &Harness, token: &str, query: &str) -> Vec<String> {
    let r = api(h, token, reqwest::Method::GET, &format!("/events?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    json(r)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .filter(|id| id.starts_with("ev"))
        .collect()
}

#[tokio::test]
async fn audit_events_filter_by_code_kind_provider_app_account_and_time() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let mut other_tenant = event(
        "ev5",
        5_000,
        "login.refused",
        Some("upstream.state_invalid"),
        "idp",
        APP,
    );
    other_tenant.tenant = Some(TenantId::new("t2"));
    h.state
        .directory
        .insert_audit_events(&[
            event(
                "ev1",
                1_000,
                "login.refused",
                Some("upstream.state_invalid"),
                "idp",
                APP,
            ),
            event(
                "ev2",
                2_000,
                "login.refused",
                Some("upstream.domain_mismatch"),
                "idp",
                OTHER,
            ),
            event("ev3", 3_000, "login.success", None, "google", APP),
            event(
                "ev4",
                4_000,
                "login.refused",
                Some("upstream.state_invalid"),
                "google",
                OTHER,
            ),
            other_tenant,
        ])
        .await
        .unwrap();
    let cases: [(&str, &[&str]); 12] = [
        ("code=upstream.state_invalid", &["ev4", "ev1"]),
        ("code=upstream.domain_mismatch", &["ev2"]),
        ("kind=login.success", &["ev3"]),
        ("provider=google", &["ev4", "ev3"]),
        (&format!("app={OTHER}"), &["ev4", "ev2"]),
        ("account=acc-ev2", &["ev2"]),
        ("since=2000", &["ev4", "ev3", "ev2"]),
        ("until=2000", &["ev2", "ev1"]),
        ("since=2000&until=3000", &["ev3", "ev2"]),
        ("code=upstream.state_invalid&provider=idp", &["ev1"]),
        ("provider=idp&since=1500&until=9000", &["ev2"]),
        ("until=9000&limit=2", &["ev4", "ev3"]),
    ];
    for (query, want) in cases {
        assert_eq!(event_ids(&h, &token, query).await, want, "{query}");
    }
    // Bad filters are refused with the field and the reason.
    for (query, field) in [
        ("since=3000&until=1000", "until"),
        ("since=-1", "since"),
        ("limit=0", "limit"),
        ("code=", "code"),
        ("provider=a%00b", "provider"),
        ("since=yesterday", "query"),
    ] {
        let r = api(
            &h,
            &token,
            reqwest::Method::GET,
            &format!("/events?{query}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body = json(r).await;
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(!body["reason"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn blocks_are_listed_lifted_and_leave_the_list() {
    let h = harness_with(Opts {
        tune: Some(|s| {
            s.trust_forwarded_for = true;
            s.limits.ip_hard = homeroom_broker::limits::Rate::new(60, 3);
        }),
        ..Opts::default()
    })
    .await;
    let token = admin_token(&h).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap();
    let url = format!("{}/login", h.base);
    let mut status = 0;
    for _ in 0..8 {
        status = b.get(&url).send().await.unwrap().status().as_u16();
    }
    assert_eq!(status, 429);
    let listed = json(
        api(&h, &token, reqwest::Method::GET, "/limits")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let blocked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["state"] == "blocked" && l["class"] == "ip")
        .unwrap_or_else(|| panic!("no blocked ip key in {listed}"))
        .clone();
    let key = blocked["key"].as_str().unwrap().to_owned();
    assert_eq!(key, "rl:ip:203.0.113.9");
    // A key that is not listed: 404, nothing lifted.
    for (body, status, field) in [
        (serde_json::json!({"key": "rl:ip:198.51.100.1"}), 404, "key"),
        (serde_json::json!({"key": "nope"}), 400, "key"),
        (serde_json::json!({"key": key, "extra": 1}), 400, "body"),
    ] {
        let r = api(&h, &token, reqwest::Method::POST, "/limits/lift")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(json(r).await["field"], field);
    }
    assert_eq!(
        b.get(&url).send().await.unwrap().status(),
        429,
        "still blocked"
    );
    let r = api(&h, &token, reqwest::Method::POST, "/limits/lift")
        .json(&serde_json::json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["lifted"], true);
    let listed = json(
        api(&h, &token, reqwest::Method::GET, "/limits")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !listed.as_array().unwrap().iter().any(|l| l["key"] == key),
        "a lifted key leaves the list: {listed}"
    );
    assert_ne!(b.get(&url).send().await.unwrap().status(), 429, "lifted");
    // Lifting it again: no longer listed.
    let r = api(&h, &token, reqwest::Method::POST, "/limits/lift")
        .json(&serde_json::json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    h.state.audit.flush().await;
    let lifted = json(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            "/events?kind=admin.limit_lifted",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        lifted.as_array().unwrap().len(),
        1,
        "audited once: {lifted}"
    );
}

#[tokio::test]
async fn a_blocked_app_at_the_token_endpoint_is_listed() {
    let h = harness_with(Opts {
        tune: Some(|s| s.limits.client = homeroom_broker::limits::Rate::new(60, 2)),
        ..Opts::default()
    })
    .await;
    let token = admin_token(&h).await;
    let c = reqwest::Client::new();
    let mut last = 0;
    for _ in 0..5 {
        last = c
            .post(format!("{}/oauth2/token", h.base))
            .basic_auth(APP, Some(APP_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", CB),
            ])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
    let listed = json(
        api(&h, &token, reqwest::Method::GET, "/limits")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["state"] == "blocked" && l["class"] == "client"),
        "{listed}"
    );
    // Another tenant's admin neither sees nor lifts this tenant's app key.
    let key = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["class"] == "client")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let t2 = admin_bot_token_of(&h, "t2", "t2-bot", BOT_SECRET).await;
    let seen = json(
        api(&h, &t2, reqwest::Method::GET, "/limits")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !seen
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["key"] == key.as_str()),
        "{seen}"
    );
    let r = api(&h, &t2, reqwest::Method::POST, "/limits/lift")
        .json(&serde_json::json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let still = json(
        api(&h, &token, reqwest::Method::GET, "/limits")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        still
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["key"] == key.as_str()),
        "nothing changed for the app's own tenant: {still}"
    );
}

#[tokio::test]
async fn roster_dry_run_must_be_true_or_false() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let r = api(&h, &token, reqwest::Method::POST, "/rosters?dry_run=yes")
        .body(vec![1u8, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["field"], "dry_run");
}

#[tokio::test]
async fn the_openapi_document_describes_every_operation_honestly() {
    let h = harness().await;
    let doc = json(
        reqwest::get(format!("{}/admin/api/openapi.json", h.base))
            .await
            .unwrap(),
    )
    .await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for status in ["401", "403"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            assert_eq!(
                op["security"][0]["bearer"],
                serde_json::json!([]),
                "{method} {path}"
            );
            for name in path
                .split('{')
                .skip(1)
                .map(|s| s.split('}').next().unwrap())
            {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
        }
    }
    // The connection report's findings are its own schema, not the troubleshooter's.
    let schemas = &doc["components"]["schemas"];
    let finding = &schemas["ConnectionFinding"]["properties"];
    for field in ["id", "status", "message", "action"] {
        assert!(finding.get(field).is_some(), "ConnectionFinding.{field}");
    }
    assert!(schemas["Finding"]["properties"].get("check").is_some());
}
