#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The admin API: authentication (client credentials with the admin scope, or a signed-in
//! it_admin), authorisation per tenant, bad input refused with field and reason and nothing
//! changed, every change audited, the troubleshooter, limits, the OpenAPI document.

mod common;
use common::*;
use homeroom_core::{AccountId, ClientId, Role, TenantId};
use homeroom_directory::{Account, AccountStatus};

const BOT: &str = "admin-bot";
const BOT_SECRET: &str = "admin-bot-secret";

async fn bot_token(h: &Harness, client: &str, tenant: &str, scope: &str) -> reqwest::Response {
    let mut app = app_record(client, Some(BOT_SECRET), "ES256");
    app.client_id = ClientId::new(client);
    app.tenant = TenantId::new(tenant);
    app.allowed_scopes.push("homeroom:admin".into());
    h.state.directory.upsert_app(&app).await.unwrap();
    reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth(client, Some(BOT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap()
}

async fn admin_token(h: &Harness) -> String {
    let r = bot_token(h, BOT, "t1", "homeroom:admin").await;
    assert_eq!(r.status(), 200);
    json(r).await["access_token"].as_str().unwrap().to_owned()
}

fn api(h: &Harness, token: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}/admin/api{path}", h.base))
        .bearer_auth(token)
}

#[tokio::test]
async fn authentication_and_tenant_scoping() {
    let h = harness().await;
    // No token, a bad token.
    let r = reqwest::get(format!("{}/admin/api/tenant", h.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        api(&h, "nope", reqwest::Method::GET, "/tenant")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Client credentials: only scopes the app was given.
    let r = bot_token(&h, BOT, "t1", "homeroom:admin openid").await;
    assert_eq!(json(r).await["error"], "invalid_scope");
    let token = admin_token(&h).await;
    let t = json(
        api(&h, &token, reqwest::Method::GET, "/tenant")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(t["id"], "t1");
    // A token without the admin scope is refused.
    let mut plain = app_record("plain-bot", Some(BOT_SECRET), "RS256");
    plain.allowed_scopes = vec!["profile".into()];
    h.state.directory.upsert_app(&plain).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth("plain-bot", Some(BOT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "profile")])
        .send()
        .await
        .unwrap();
    let plain_token = json(r).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        api(&h, &plain_token, reqwest::Method::GET, "/tenant")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // Another tenant's admin sees nothing of t1.
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let t1_tokens = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let sub: serde_json::Value = serde_json::from_slice(&base64_decode(
        t1_tokens["id_token"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap(),
    ))
    .unwrap();
    let maya = sub["sub"].as_str().unwrap().to_owned();
    let r = bot_token(&h, "t2-bot", "t2", "homeroom:admin").await;
    let t2 = json(r).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        api(&h, &t2, reqwest::Method::GET, &format!("/accounts/{maya}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = api(
        &h,
        &t2,
        reqwest::Method::POST,
        &format!("/accounts/{maya}/status"),
    )
    .json(&serde_json::json!({"status": "archived"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        h.state
            .directory
            .get_account(&AccountId::new(maya.clone()))
            .await
            .unwrap()
            .unwrap()
            .status,
        AccountStatus::Active,
        "unchanged"
    );
    assert_eq!(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            &format!("/accounts/{maya}")
        )
        .send()
        .await
        .unwrap()
        .status(),
        200
    );
    // A student's own access token is not an admin token; an it_admin's is.
    let student_at = t1_tokens["access_token"].as_str().unwrap();
    assert_eq!(
        api(&h, student_at, reqwest::Method::GET, "/tenant")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let grace = Account {
        id: AccountId::new("acc_grace"),
        tenant: TenantId::new("t1"),
        status: AccountStatus::Active,
        email: Some("grace.hopper@demo.homeroom.test".into()),
        email_verified: true,
        name: Some("Grace Hopper".into()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![Role::ItAdmin],
        created_at: 0,
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    h.state
        .directory
        .create_account(&grace, None)
        .await
        .unwrap();
    // Her ordinary sign-in token, as any app receives it, is not an admin credential.
    let b = browser();
    let (code, v) = login(&b, &h, APP, "grace.hopper@demo.homeroom.test").await;
    let plain = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api(&h, &plain, reqwest::Method::GET, "/tenant")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // A token issued for the API (the app allowed and asking for homeroom:admin) is.
    let mut app = h
        .state
        .directory
        .get_app(&ClientId::new(APP))
        .await
        .unwrap()
        .unwrap();
    app.allowed_scopes.push("homeroom:admin".into());
    h.state.directory.upsert_app(&app).await.unwrap();
    h.state.caches.forget_apps();
    let (code, v) = login_scoped(
        &b,
        &h,
        APP,
        "grace.hopper@demo.homeroom.test",
        "openid homeroom:admin",
    )
    .await;
    let at = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = json(
        api(&h, &at, reqwest::Method::GET, "/tenant")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        t["id"], "t1",
        "an it_admin who signed in through Homeroom uses the API"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_field_and_reason_and_changes_nothing() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let b = browser();
    login(&b, &h, APP, STUDENT).await;
    let found = json(
        api(&h, &token, reqwest::Method::GET, "/accounts?q=maya")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = found[0]["id"].as_str().unwrap().to_owned();
    for (body, field) in [
        (serde_json::json!({"status": "deleted"}), "status"),
        (
            serde_json::json!({"status": "archived", "extra": 1}),
            "body",
        ),
        (serde_json::json!({"state": "archived"}), "body"),
    ] {
        let r = api(
            &h,
            &token,
            reqwest::Method::POST,
            &format!("/accounts/{id}/status"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e = json(r).await;
        assert_eq!(e["field"], field, "{body}");
        assert!(!e["reason"].as_str().unwrap().is_empty());
    }
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        &format!("/accounts/{id}/status"),
    )
    .header("content-type", "application/json")
    .body("{not json")
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        h.state
            .directory
            .get_account(&AccountId::new(id.clone()))
            .await
            .unwrap()
            .unwrap()
            .status,
        AccountStatus::Active
    );
    let r = api(&h, &token, reqwest::Method::GET, "/accounts?q=ma")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["field"], "q");
    let r = api(
        &h,
        &token,
        reqwest::Method::GET,
        "/accounts?q=maya&role=wizard",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(json(r).await["field"], "role");
    let r = api(&h, &token, reqwest::Method::GET, "/events?limit=5000")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["field"], "limit");
    let r = api(&h, &token, reqwest::Method::PATCH, "/providers/idp")
        .json(&serde_json::json!({"display_name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["field"], "display_name");
    // A good change is applied and audited with who made it.
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        &format!("/accounts/{id}/status"),
    )
    .json(&serde_json::json!({"status": "suspended"}))
    .send()
    .await
    .unwrap();
    assert_eq!(json(r).await["status"], "suspended");
    h.state.audit.flush().await;
    let events = json(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            "/events?kind=admin.account_status",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(events.as_array().unwrap().len(), 1);
    let all = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("admin.account_status".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all[0].detail["by"], format!("client:{BOT}"));
}

#[tokio::test]
async fn providers_apps_connection_test_and_disabling() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let providers = json(
        api(&h, &token, reqwest::Method::GET, "/providers")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(providers[0]["id"], "idp");
    assert_eq!(providers[0]["config"]["client_secret"], "[redacted]");
    let checks = json(
        api(&h, &token, reqwest::Method::POST, "/providers/idp/test")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = checks["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"discovery") && names.contains(&"issuer") && names.contains(&"jwks"),
        "{checks}"
    );
    assert_eq!(checks["status"], "ok", "{checks}");
    let apps = json(
        api(&h, &token, reqwest::Method::GET, "/apps")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        apps.as_array()
            .unwrap()
            .iter()
            .any(|a| a["client_id"] == APP)
    );
    assert!(
        !apps
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["client_id"] == "t2-app"),
        "only the tenant's apps"
    );
    // Disabling the provider takes effect at once.
    let r = api(&h, &token, reqwest::Method::PATCH, "/providers/idp")
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["enabled"], false);
    let b = browser();
    let r = b
        .get(format!("{}/login/start?provider=idp", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "upstream.provider_disabled");
}

#[tokio::test]
async fn the_troubleshooter_answers_for_a_person_and_for_a_reference() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let b = browser();
    login(&b, &h, APP, STUDENT).await;
    // A look-alike account: same person, email differing in dots and case.
    let dup = Account {
        id: AccountId::new("acc_dup"),
        tenant: TenantId::new("t1"),
        status: AccountStatus::Archived,
        email: Some("MayaChen@demo.homeroom.test".into()),
        email_verified: false,
        name: Some("Maya Chen".into()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![Role::Teacher],
        created_at: 0,
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    h.state.directory.create_account(&dup, None).await.unwrap();
    let out = json(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            &format!("/troubleshoot?q={STUDENT}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let report = &out["accounts"][0];
    let checks: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for c in [
        "Account exists",
        "Account is active",
        "Linked providers",
        "Sign-ins",
        "Possible duplicate accounts",
    ] {
        assert!(checks.contains(&c), "{c} in {checks:?}");
    }
    assert_eq!(report["look_alikes"][0]["account_id"], "acc_dup");
    // A refused attempt, looked up by its reference.
    let r = b
        .get(format!("{}/callback/idp?code=x&state=forged", h.base))
        .send()
        .await
        .unwrap();
    let (_, _, reference) = page_code(r).await;
    let out = json(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            &format!("/troubleshoot?q={reference}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let step = &out["trace"][0];
    assert_eq!(step["code"], "upstream.state_invalid");
    assert!(step["it_guidance"].as_str().unwrap().contains("state"));
    assert_eq!(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            &format!("/trace/{reference}")
        )
        .send()
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        api(&h, &token, reqwest::Method::GET, "/trace/HR-NOPE")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() {
    let h = harness().await;
    let doc = json(
        reqwest::get(format!("{}/admin/api/openapi.json", h.base))
            .await
            .unwrap(),
    )
    .await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/admin/api/tenant",
        "/admin/api/providers",
        "/admin/api/providers/{id}",
        "/admin/api/providers/{id}/test",
        "/admin/api/apps",
        "/admin/api/accounts",
        "/admin/api/accounts/{id}",
        "/admin/api/accounts/{id}/status",
        "/admin/api/events",
        "/admin/api/trace/{reference}",
        "/admin/api/troubleshoot",
        "/admin/api/limits",
        "/admin/api/limits/lift",
        "/admin/api/rosters",
        "/admin/api/accounts/{id}/roles",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    // Both operations of /admin/api/accounts are documented (search and create).
    assert!(doc["paths"]["/admin/api/accounts"]["get"].is_object());
    assert!(doc["paths"]["/admin/api/accounts"]["post"].is_object());
    assert!(doc["paths"]["/admin/api/providers/{id}"]["patch"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn local_account_actions_invitation_reset_unlock_and_email_log() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let reviewer = Account {
        id: AccountId::new("acc_reviewer"),
        tenant: TenantId::new("t1"),
        status: AccountStatus::Active,
        email: Some("reviewer@demo.homeroom.test".into()),
        email_verified: true,
        name: Some("Rae Viewer".into()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![Role::Staff],
        created_at: 0,
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    h.state
        .directory
        .create_account(&reviewer, None)
        .await
        .unwrap();
    // No password yet: a reset makes no sense, an invitation does.
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        "/accounts/acc_reviewer/reset",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(json(r).await["error"], "not_local");
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        "/accounts/acc_reviewer/invitation",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let link = json(r).await;
    assert!(
        link["url"].as_str().unwrap().starts_with(&h.base),
        "built from the issuer: {link}"
    );
    assert!(link["expires_at"].is_null(), "invitations never expire");
    let local = json(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            "/accounts/acc_reviewer/local",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(
        !local["emails"].as_array().unwrap().is_empty(),
        "the invitation is in the email log: {local}"
    );
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        "/accounts/acc_reviewer/unlock",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // An SSO-only student never gets a Homeroom password.
    let b = browser();
    login(&b, &h, APP, STUDENT).await;
    let found = json(
        api(&h, &token, reqwest::Method::GET, "/accounts?q=maya")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let maya = found[0]["id"].as_str().unwrap().to_owned();
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        &format!("/accounts/{maya}/invitation"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(json(r).await["error"], "sso_only");
    // Another tenant's admin cannot act on these accounts.
    let t2 = json(bot_token(&h, "t2-bot", "t2", "homeroom:admin").await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api(
            &h,
            &t2,
            reqwest::Method::POST,
            "/accounts/acc_reviewer/invitation"
        )
        .send()
        .await
        .unwrap()
        .status(),
        404
    );
    // Audited with who did it.
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("admin.invitation_issued".into()),
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn apps_are_registered_with_exact_safe_redirect_uris_only() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let create = |body: serde_json::Value| {
        api(&h, &token, reqwest::Method::POST, "/apps")
            .json(&body)
            .send()
    };
    // Dangerous redirect URIs at registration (security.md OP-04): refused, nothing created.
    for bad in [
        "javascript:alert(document.domain)//",
        "data:text/html,x",
        "http://app.example.test/cb",
        "https://*.example.test/cb",
        "https://app.example.test/cb#frag",
        "cb",
    ] {
        let r = create(
            serde_json::json!({"client_id": "new-app", "name": "New", "redirect_uris": [bad]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(json(r).await["field"], "redirect_uris[0]", "{bad}");
    }
    assert!(
        h.state
            .directory
            .get_app(&ClientId::new("new-app"))
            .await
            .unwrap()
            .is_none()
    );
    let r = create(serde_json::json!({"client_id": "new-app", "name": "New", "redirect_uris": ["https://new.example.test/cb"], "scopes": ["openid", "superuser"]})).await.unwrap();
    assert_eq!(json(r).await["field"], "scopes[1]");
    // A good registration: the secret is shown once and works at the token endpoint.
    let r = create(serde_json::json!({"client_id": "new-app", "name": "New", "redirect_uris": ["https://new.example.test/cb"]})).await.unwrap();
    assert_eq!(r.status(), 201);
    let created = json(r).await;
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth("new-app", Some(secret.as_str()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", "https://new.example.test/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(r).await["error"],
        "invalid_grant",
        "authenticated; only the code is unknown"
    );
    assert_eq!(create(serde_json::json!({"client_id": "new-app", "name": "Again", "redirect_uris": ["https://new.example.test/cb"]})).await.unwrap().status(), 409);
    // Editing validates the same way and takes effect at once.
    let r = api(&h, &token, reqwest::Method::PATCH, "/apps/new-app")
        .json(&serde_json::json!({"redirect_uris": ["http://evil.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["field"], "redirect_uris[0]");
    let r = api(&h, &token, reqwest::Method::PATCH, "/apps/new-app")
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["enabled"], false);
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth("new-app", Some(secret.as_str()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", "https://new.example.test/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a disabled app cannot authenticate");
    // Another tenant cannot see or edit it.
    let t2 = json(bot_token(&h, "t2-bot", "t2", "homeroom:admin").await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api(&h, &t2, reqwest::Method::PATCH, "/apps/new-app")
            .json(&serde_json::json!({"enabled": true}))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn providers_are_registered_only_with_valid_settings() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let create = |body: serde_json::Value| {
        api(&h, &token, reqwest::Method::POST, "/providers")
            .json(&body)
            .send()
    };
    let cases = [
        (
            serde_json::json!({"id": "x1", "kind": "gogle", "display_name": "G", "config": {}}),
            "kind",
        ),
        (
            serde_json::json!({"id": "x1", "kind": "oidc", "display_name": "O", "config": {"issuer": "https://idp.example.test", "client_id": "c"}}),
            "config.client_secret",
        ),
        (
            serde_json::json!({"id": "x1", "kind": "microsoft", "display_name": "M", "config": {"client_id": "c", "client_secret": "s", "tenant": "common"}}),
            "config.allowed_tenants",
        ),
        (
            serde_json::json!({"id": "bad id!", "kind": "oidc", "display_name": "O", "config": {}}),
            "id",
        ),
    ];
    for (body, field) in cases {
        let r = create(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(json(r).await["field"], field, "{body}");
    }
    assert!(
        h.state
            .directory
            .get_provider(&homeroom_core::ProviderId::new("x1"))
            .await
            .unwrap()
            .is_none(),
        "nothing written"
    );
    // A valid one is served at once (a login button appears) and its secret is never shown.
    let body = serde_json::json!({"id": "second", "kind": "oidc", "display_name": "Second IdP", "config": {"issuer": h.idp.issuer(), "client_id": "homeroom", "client_secret": "upstream-secret"}});
    let r = create(body.clone()).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(json(r).await["config"]["client_secret"], "[redacted]");
    assert!(
        h.state
            .providers
            .get(&homeroom_core::ProviderId::new("second"))
            .is_some()
    );
    assert_eq!(create(body).await.unwrap().status(), 409);
}

#[tokio::test]
async fn provider_settings_are_edited_validated_and_secrets_kept() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let patch = |id: &str, body: serde_json::Value| {
        api(
            &h,
            &token,
            reqwest::Method::PATCH,
            &format!("/providers/{id}"),
        )
        .json(&body)
        .send()
    };
    let pid = homeroom_core::ProviderId::new("idp");
    let before = h.state.directory.get_provider(&pid).await.unwrap().unwrap();
    // Bad settings: the key path and the reason; nothing written.
    for (body, field) in [
        (
            serde_json::json!({"config": {"issuer": "http://plain.example"}}),
            "config.issuer",
        ),
        (
            serde_json::json!({"config": {"client_secret": null}}),
            "config.client_secret",
        ),
        (
            serde_json::json!({"config": {"bogus_key": 1}}),
            "config.bogus_key",
        ),
        (serde_json::json!({"config": [1]}), "config"),
        (
            serde_json::json!({"config": {"timeout_secs": 2}, "display_name": ""}),
            "display_name",
        ),
    ] {
        let r = patch("idp", body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(json(r).await["field"], field, "{body}");
    }
    assert_eq!(
        h.state
            .directory
            .get_provider(&pid)
            .await
            .unwrap()
            .unwrap()
            .config,
        before.config,
        "nothing written"
    );
    // A good change: merged, the redacted secret sent back keeps the stored one.
    let r = patch(
        "idp",
        serde_json::json!({"config": {"timeout_secs": 5, "client_secret": "[redacted]"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let out = json(r).await;
    assert_eq!(out["config"]["timeout_secs"], 5);
    assert_eq!(out["config"]["client_secret"], "[redacted]");
    let after = h.state.directory.get_provider(&pid).await.unwrap().unwrap();
    assert_eq!(
        after.config["client_secret"],
        before.config["client_secret"]
    );
    assert_eq!(after.config["timeout_secs"], 5);
    assert_eq!(after.config["issuer"], before.config["issuer"]);
    // Another tenant's provider is not found, and stays as it was.
    let mut other = after.clone();
    other.id = homeroom_core::ProviderId::new("t2-idp");
    other.tenant = TenantId::new("t2");
    h.state.directory.upsert_provider(&other).await.unwrap();
    let r = patch("t2-idp", serde_json::json!({"config": {"timeout_secs": 9}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let t2 = h
        .state
        .directory
        .get_provider(&homeroom_core::ProviderId::new("t2-idp"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t2.config["timeout_secs"], 5);
}

fn person(id: &str, tenant: &str, email: &str, roles: Vec<Role>, status: AccountStatus) -> Account {
    Account {
        id: AccountId::new(id),
        tenant: TenantId::new(tenant),
        status,
        email: Some(email.into()),
        email_verified: true,
        name: Some(format!("Person {id}")),
        given_name: None,
        family_name: None,
        username: None,
        roles,
        created_at: 0,
        last_sign_in_at: None,
        sign_in_count: 0,
    }
}

/// `POST /admin/api/accounts`: an email in use anywhere (any status or role, a guardian
/// account, a pending invitation, a roster record, a look-alike address) is a 409 listing
/// where, each with its fix; nothing is created. The "link" and "add role" fixes work.
#[tokio::test]
async fn accounts_created_by_hand_say_where_an_email_lives() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let d = &h.state.directory;
    for a in [
        person(
            "acc_arch",
            "t1",
            "arch.ive@demo.homeroom.test",
            vec![Role::Teacher],
            AccountStatus::Archived,
        ),
        person(
            "acc_guard",
            "t1",
            "pat.parent@demo.homeroom.test",
            vec![Role::Guardian],
            AccountStatus::Active,
        ),
        person(
            "acc_stu",
            "t1",
            "sam.student@demo.homeroom.test",
            vec![Role::Student],
            AccountStatus::Active,
        ),
        person(
            "acc_t2",
            "t2",
            "sam.student@demo.homeroom.test",
            vec![Role::Student],
            AccountStatus::Active,
        ),
    ] {
        d.create_account(&a, None).await.unwrap();
    }
    let t1 = TenantId::new("t1");
    let create = |body: serde_json::Value| {
        api(&h, &token, reqwest::Method::POST, "/accounts")
            .json(&body)
            .send()
    };
    let count = || async { d.count_accounts(Some(&TenantId::new("t1"))).await.unwrap() };
    let before = count().await;
    // Bad input: the field and the reason.
    for (body, field) in [
        (
            serde_json::json!({"role": "wizard", "email": "a.b@demo.homeroom.test", "name": "A"}),
            "role",
        ),
        (
            serde_json::json!({"role": "teacher", "email": "a b@demo", "name": "A"}),
            "email",
        ),
        (
            serde_json::json!({"role": "teacher", "email": "a.b@demo.homeroom.test", "name": " "}),
            "name",
        ),
        (
            serde_json::json!({"role": "teacher", "email": "a.b@demo.homeroom.test", "name": "A", "school": "s9"}),
            "school",
        ),
        (
            serde_json::json!({"role": "teacher", "email": "a.b@demo.homeroom.test", "name": "A", "extra": 1}),
            "body",
        ),
        (
            serde_json::json!({"role": "teacher", "email": "a.b@demo.homeroom.test", "name": "A", "link_roster": "u404"}),
            "link_roster",
        ),
    ] {
        let r = create(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(json(r).await["field"], field, "{body}");
    }
    // Where the email lives, by case, dots, +tag; the fix for each.
    for (email, role, kind, fix, account) in [
        (
            "Arch.Ive@DEMO.homeroom.test",
            "teacher",
            "archived_account",
            "restore",
            "acc_arch",
        ),
        (
            "pat.parent@demo.homeroom.test",
            "teacher",
            "guardian_account",
            "add_role",
            "acc_guard",
        ),
        (
            "sam.student@demo.homeroom.test",
            "teacher",
            "other_role",
            "add_role",
            "acc_stu",
        ),
        (
            "samstudent+x@demo.homeroom.test",
            "student",
            "look_alike",
            "open",
            "acc_stu",
        ),
        (
            "sam.student@demo.homeroom.test",
            "student",
            "same_account",
            "open",
            "acc_stu",
        ),
    ] {
        let r = create(serde_json::json!({"role": role, "email": email, "name": "X"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "{email}");
        let out = json(r).await;
        assert_eq!(out["error"], "email_in_use");
        assert_eq!(out["field"], "email");
        let found = out["found"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{email}: {out}");
        assert_eq!(found[0]["kind"], kind, "{email}: {out}");
        assert_eq!(found[0]["fix"], fix, "{email}");
        assert_eq!(found[0]["account"], account, "{email}");
    }
    assert_eq!(count().await, before, "nothing created");
    // A new address: created (verified: a tenant domain), invitation link returned.
    let r = create(serde_json::json!({"role": "teacher", "email": "New.Teacher@demo.homeroom.test", "name": "New Teacher"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = json(r).await;
    assert_eq!(out["account"]["email"], "new.teacher@demo.homeroom.test");
    assert_eq!(out["account"]["roles"], serde_json::json!(["teacher"]));
    assert!(
        out["invitation"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );
    let new_id = out["account"]["id"].as_str().unwrap().to_owned();
    // Again: the pending invitation, with "resend".
    let r = create(serde_json::json!({"role": "teacher", "email": "new.teacher@demo.homeroom.test", "name": "New Teacher"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let out = json(r).await;
    assert_eq!(out["found"][0]["kind"], "pending_invitation");
    assert_eq!(out["found"][0]["fix"], "resend_invitation");
    assert_eq!(out["found"][0]["account"], new_id.as_str());
    // Roster records: one without an account (link), one removed (fix the roster).
    for (sid, email, status) in [
        ("u7", "rory.roster@demo.homeroom.test", "active"),
        ("u8", "gone.person@demo.homeroom.test", "removed"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO roster_users (tenant_id, sourced_id, account_id, status, enabled, username, email, email_norm, given_name, family_name, roles, org_sourced_ids, grades, user_ids, agent_sourced_ids, extra) VALUES ('t1', '{sid}', NULL, '{status}', 1, '{sid}', '{email}', '{email}', 'Ro', 'Ster', '[\"teacher\"]', '[]', '[]', '[]', '[]', '{{}}')"
        )))
        .execute(d.pool())
        .await
        .unwrap();
    }
    let r = create(serde_json::json!({"role": "teacher", "email": "gone.person@demo.homeroom.test", "name": "Gone"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let out = json(r).await;
    assert_eq!(out["found"][0]["kind"], "roster_inactive");
    assert_eq!(out["found"][0]["fix"], "fix_roster");
    let r = create(serde_json::json!({"role": "teacher", "email": "rory.roster@demo.homeroom.test", "name": "Rory"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let out = json(r).await;
    assert_eq!(out["found"][0]["kind"], "roster_not_imported");
    assert_eq!(out["found"][0]["fix"], "link");
    assert_eq!(out["found"][0]["roster_sourced_id"], "u7");
    // Linking to another record than the one found is refused.
    let r = create(serde_json::json!({"role": "teacher", "email": "rory.roster@demo.homeroom.test", "name": "Rory", "link_roster": "u8"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = create(serde_json::json!({"role": "teacher", "email": "rory.roster@demo.homeroom.test", "name": "Rory", "link_roster": "u7", "send_invitation": false}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = json(r).await;
    assert!(out["invitation"].is_null());
    let rory = out["account"]["id"].as_str().unwrap().to_owned();
    let ru = d.roster_user(&t1, "u7").await.unwrap().unwrap();
    assert_eq!(ru.account.unwrap().as_str(), rory);
    // Another tenant's same address does not block, and is never listed.
    let r = create(
        serde_json::json!({"role": "teacher", "email": "other.person@other.test", "name": "O"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    // The "add role" fix; other tenants' accounts are not found.
    let r = api(&h, &token, reqwest::Method::POST, "/accounts/acc_stu/roles")
        .json(&serde_json::json!({"add": "teacher"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await["roles"],
        serde_json::json!(["student", "teacher"])
    );
    for (id, body, status) in [
        ("acc_t2", serde_json::json!({"add": "teacher"}), 404),
        ("acc_stu", serde_json::json!({"add": "wizard"}), 400),
        ("acc_stu", serde_json::json!({"role": "teacher"}), 400),
    ] {
        let r = api(
            &h,
            &token,
            reqwest::Method::POST,
            &format!("/accounts/{id}/roles"),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), status, "{id} {body}");
    }
    let t2 = d
        .get_account(&AccountId::new("acc_t2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t2.roles, vec![Role::Student]);
    // Every creation and role change is audited, naming the caller.
    h.state.audit.flush().await;
    for kind in ["admin.account_created", "admin.account_role_added"] {
        let events = d
            .list_audit(&homeroom_directory::AuditFilter {
                kind: Some(kind.into()),
                tenant: Some(t1.clone()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!events.is_empty(), "{kind}");
        assert_eq!(events[0].detail["by"], "client:admin-bot");
    }
    // Without a token: 401, nothing created.
    let r = reqwest::Client::new()
        .post(format!("{}/admin/api/accounts", h.base))
        .json(
            &serde_json::json!({"role": "teacher", "email": "x.y@demo.homeroom.test", "name": "X"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_email_is_created_once_however_many_requests_race() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let t1 = TenantId::new("t1");
    let count = || async { h.state.directory.count_accounts(Some(&t1)).await.unwrap() };
    let create = |email: String| {
        api(&h, &token, reqwest::Method::POST, "/accounts")
            .json(&serde_json::json!({"role": "teacher", "email": email, "name": "Dee Double", "send_invitation": false}))
            .send()
    };
    // A claim held by a request in flight (here: put by hand): refused with its own code,
    // nothing created; once released, the same request goes through.
    let email = "dee.double@demo.homeroom.test";
    let claim = format!("acctnew:t1:{}", homeroom_core::crypto::sha256_hex(email));
    h.state
        .sessions
        .put_json(&claim, &"account:someone-else", 30)
        .await
        .unwrap();
    let before = count().await;
    let r = create("Dee.Double@demo.homeroom.test".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let out = json(r).await;
    assert_eq!(out["error"], "create_in_progress", "{out}");
    assert_eq!(out["field"], "email");
    assert_eq!(count().await, before, "nothing created while claimed");
    h.state.sessions.delete(&claim).await.unwrap();
    let r = create(email.into()).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(count().await, before + 1);
    // Eight requests at once for each of several new addresses (a double click, two
    // admins): one account per address; every other request is told why (409).
    for round in 0..5 {
        let email = format!("race.{round}@demo.homeroom.test");
        let before = count().await;
        let answers = futures::future::join_all((0..8).map(|_| create(email.clone()))).await;
        let mut created = 0;
        for r in answers {
            let r = r.unwrap();
            match r.status().as_u16() {
                201 => created += 1,
                409 => {
                    let out = json(r).await;
                    assert!(
                        out["error"] == "create_in_progress" || out["error"] == "email_in_use",
                        "{out}"
                    );
                }
                s => panic!("unexpected {s}"),
            }
        }
        assert_eq!(created, 1, "{email}");
        assert_eq!(count().await, before + 1, "{email}");
        assert_eq!(
            h.state
                .directory
                .find_accounts_by_email(&t1, &email)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
