//! Families end to end: the invitation lifecycle and its mails (outbox), single use,
//! view-only access in the claims, the 18+ gate, the policy gate, the primary change
//! revoking everything with mails, staff unable to grant, the family switcher putting the
//! chosen family in the token (authorize -> token), parent access codes (single use,
//! expiry, rate limit), on SQLite and (the lifecycle) PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use homeroom_broker::{Settings, family, mail};
use homeroom_core::{AccountId, Role, TenantId};
use homeroom_directory::{Account, AccountStatus};

const PW: &str = "correct horse battery";

fn fast(s: &mut Settings) {
    s.local.argon2_m_kib = 256;
    s.local.argon2_t = 1;
    // Links stay in the outbox until delivery (no delivery task runs in these tests).
    s.smtp_url = Some("smtp://127.0.0.1:1".into());
}

fn with_policies(s: &mut Settings) {
    fast(s);
    s.family.policies.insert(
        TenantId::new("t1"),
        vec![family::RequiredPolicy {
            name: "Family terms".into(),
            version: "2026-1".into(),
            url: "https://school.example/terms".into(),
        }],
    );
}

fn opts(tune: fn(&mut Settings)) -> Opts {
    Opts {
        tune: Some(tune),
        ..Default::default()
    }
}

async fn setup_app(h: &Harness) {
    let mut app = app_record(APP, Some(APP_SECRET), "RS256");
    app.allowed_scopes.push("family".into());
    h.state.directory.upsert_app(&app).await.unwrap();
}

/// A local account with password [`PW`].
async fn person(h: &Harness, email: &str, name: &str) -> AccountId {
    let a = Account {
        id: AccountId::generate(),
        tenant: TenantId::new("t1"),
        status: AccountStatus::Active,
        email: Some(email.into()),
        email_verified: true,
        name: Some(name.into()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![Role::Guardian],
        created_at: h.state.now(),
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    h.state.directory.create_account(&a, None).await.unwrap();
    let hash = h
        .state
        .hasher
        .admit()
        .await
        .unwrap()
        .hash(PW.into())
        .await
        .unwrap();
    h.state
        .directory
        .set_local_password(&a.id, &a.tenant, &hash, h.state.now())
        .await
        .unwrap();
    a.id
}

async fn learner(h: &Harness, name: &str) -> AccountId {
    let mut a = Account {
        id: AccountId::generate(),
        tenant: TenantId::new("t1"),
        status: AccountStatus::Active,
        email: None,
        email_verified: false,
        name: Some(name.into()),
        given_name: None,
        family_name: None,
        username: Some(name.to_lowercase()),
        roles: vec![Role::Student],
        created_at: h.state.now(),
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    a.username = Some(format!("{}-{}", name.to_lowercase(), &a.id.as_str()[4..10]));
    h.state.directory.create_account(&a, None).await.unwrap();
    a.id
}

fn field(body: &str, name: &str) -> String {
    body.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
        .to_owned()
}

async fn csrf_of(b: &reqwest::Client, url: &str) -> String {
    let r = b.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    field(&r.text().await.unwrap(), "csrf")
}

/// Signs `b` in with a Homeroom password (no app asked).
async fn sign_in(b: &reqwest::Client, h: &Harness, login: &str) {
    let csrf = csrf_of(b, &format!("{}/login/password?tenant=t1", h.base)).await;
    let r = b
        .post(format!("{}/login/password", h.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("tenant", "t1"),
            ("login", login),
            ("password", PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed-in page");
}

async fn post(
    b: &reqwest::Client,
    h: &Harness,
    page: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let csrf = csrf_of(b, &format!("{}{page}", h.base)).await;
    let mut f: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    f.extend_from_slice(form);
    b.post(format!("{}{path}", h.base))
        .form(&f)
        .send()
        .await
        .unwrap()
}

fn family_authorize(h: &Harness, challenge: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", APP)
        .append_pair("redirect_uri", CB)
        .append_pair("scope", "openid profile family")
        .append_pair("state", "st-123")
        .append_pair("nonce", "n-456")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    format!("{}/oauth2/authorize?{}", h.base, q.finish())
}

/// Starts an authorization with the `family` scope for a signed-in browser; the Location.
async fn authorize(b: &reqwest::Client, h: &Harness) -> (String, String) {
    let (v, c) = pkce();
    let r = b.get(family_authorize(h, &c)).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    (location(&r), v)
}

fn abs(h: &Harness, loc: &str) -> String {
    if loc.starts_with('/') {
        format!("{}{loc}", h.base)
    } else {
        loc.to_owned()
    }
}

/// Redeems the code in an app redirect; the ID token's claims and the access token.
async fn tokens(h: &Harness, loc: &str, verifier: &str) -> (serde_json::Value, String) {
    assert!(loc.starts_with(CB), "expected the app, got {loc}");
    let code = query_param(loc, "code").unwrap();
    let r = redeem(h, APP, Some(APP_SECRET), &code, verifier).await;
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    let idt = body["id_token"].as_str().unwrap();
    let claims = h.state.keyset().verify(idt).unwrap();
    (claims, body["access_token"].as_str().unwrap().to_owned())
}

async fn pending_link_to(h: &Harness, to: &str) -> String {
    let due = h
        .state
        .directory
        .due_mail(h.state.now() + 10, 100)
        .await
        .unwrap();
    let m = due
        .iter()
        .rev()
        .find(|m| m.to == to && m.kind == "family_invitation")
        .unwrap_or_else(|| panic!("no invitation mail to {to}"));
    assert!(
        !m.body.contains("/family/invite/"),
        "link kept out of the body"
    );
    m.link.clone().unwrap()
}

async fn kinds_to(h: &Harness, to: &str) -> Vec<String> {
    h.state
        .directory
        .due_mail(h.state.now() + 10, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.to == to)
        .map(|m| m.kind)
        .collect()
}

async fn lifecycle(h: Harness) {
    setup_app(&h).await;
    let p = person(&h, "pat@example.com", "Pat Primary").await;
    let kid = learner(&h, "Maya").await;
    let fam = h
        .state
        .directory
        .create_family(
            &TenantId::new("t1"),
            "Chen family",
            &p,
            "test",
            h.state.now(),
        )
        .await
        .unwrap();
    h.state
        .directory
        .link_family_student(&fam.id, &kid, "sourced_id", h.state.now())
        .await
        .unwrap();
    // The primary invites Sam from the family page.
    let bp = browser();
    sign_in(&bp, &h, "pat@example.com").await;
    let r = bp.get(format!("{}/family", h.base)).send().await.unwrap();
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Chen family") && page.contains("Maya"),
        "{page}"
    );
    // Without the CSRF token: refused, nothing written.
    let r = bp
        .post(format!("{}/family/invite", h.base))
        .form(&[("family", fam.id.as_str()), ("email", "sam@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, homeroom_core::LoginError::Csrf.code());
    assert!(
        h.state
            .directory
            .family_invitations(&fam.id)
            .await
            .unwrap()
            .is_empty()
    );
    // A bad address: refused with a reason.
    let r = post(
        &bp,
        &h,
        "/family",
        "/family/invite",
        &[("family", &fam.id), ("email", "not-an-address")],
    )
    .await;
    assert_eq!(page_code(r).await.1, "family.invite_refused");
    let r = post(
        &bp,
        &h,
        "/family",
        "/family/invite",
        &[("family", &fam.id), ("email", "Sam@Example.com")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/family?done=invited");
    let link = pending_link_to(&h, "sam@example.com").await;
    assert!(
        link.starts_with(&format!("{}/family/invite/", h.base)),
        "{link}"
    );
    // Sam has no account: the link asks for a password and makes a view-only secondary.
    let bs = browser();
    let r = bs.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("sam@example.com"));
    let token = field(&body, "token");
    let csrf = field(&body, "csrf");
    let r = bs
        .post(format!("{}/family/join", h.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", token.as_str()),
            ("password", PW),
            ("confirm", PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("done=invited"), "{}", location(&r));
    // Single use: the link no longer works, for anyone.
    let r = browser().get(&link).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "family.invite_invalid");
    let r = bs
        .post(format!("{}/family/join", h.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", token.as_str()),
            ("password", PW),
            ("confirm", PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "family.invite_invalid");
    let sam = h
        .state
        .directory
        .find_accounts_by_email(&TenantId::new("t1"), "sam@example.com")
        .await
        .unwrap();
    assert_eq!(sam.len(), 1, "exactly one account made");
    let sam = sam[0].id.clone();
    // First sign-in: the 18+ gate.
    sign_in(&bs, &h, "sam@example.com").await;
    let (loc, verifier) = authorize(&bs, &h).await;
    assert!(loc.starts_with("/family/attest?req="), "{loc}");
    let req = loc.trim_start_matches("/family/attest?req=").to_owned();
    let r = post(&bs, &h, &loc, "/family/attest", &[("req", &req)]).await;
    assert_eq!(page_code(r).await.1, "family.attestation_required");
    assert!(
        h.state
            .directory
            .adult_attested_at(&sam)
            .await
            .unwrap()
            .is_none()
    );
    let r = post(
        &bs,
        &h,
        &loc,
        "/family/attest",
        &[("req", &req), ("adult", "yes")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let attested = h.state.directory.adult_attested_at(&sam).await.unwrap();
    assert_eq!(attested, Some(h.state.now()), "recorded with the time");
    let r = bs.get(abs(&h, &location(&r))).send().await.unwrap();
    let (claims, at) = tokens(&h, &location(&r), &verifier).await;
    // View-only in the claims, with the family selected and its learner.
    let fams = claims["families"].as_array().unwrap();
    assert_eq!(fams.len(), 1);
    assert_eq!(fams[0]["id"], fam.id.as_str());
    assert_eq!(fams[0]["role"], "secondary");
    assert_eq!(fams[0]["access"], "view");
    assert_eq!(fams[0]["selected"], true);
    assert_eq!(fams[0]["students"], serde_json::json!([kid.as_str()]));
    assert_eq!(claims["family_id"], fam.id.as_str());
    let ui = json(
        reqwest::Client::new()
            .get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ui["families"][0]["access"], "view");
    // The primary's token says full access.
    let (loc, verifier) = authorize(&bp, &h).await;
    let (claims, _) = tokens(&h, &loc, &verifier).await;
    assert_eq!(claims["families"][0]["role"], "primary");
    assert_eq!(claims["families"][0]["access"], "full");
    // The primary removes Sam: both are emailed, and Sam's next token has no family.
    let r = post(
        &bp,
        &h,
        "/family",
        "/family/revoke",
        &[("family", &fam.id), ("account", sam.as_str())],
    )
    .await;
    assert_eq!(location(&r), "/family?done=revoked");
    assert!(
        kinds_to(&h, "sam@example.com")
            .await
            .contains(&"family_revoked".to_owned())
    );
    assert!(
        kinds_to(&h, "pat@example.com")
            .await
            .contains(&"family_revoked_notice".to_owned())
    );
    let (loc, verifier) = authorize(&bs, &h).await;
    let (claims, _) = tokens(&h, &loc, &verifier).await;
    assert_eq!(claims["families"], serde_json::json!([]));
    assert!(claims.get("family_id").is_none());
}

#[tokio::test]
async fn invitation_lifecycle_single_use_attestation_and_view_only_claims() {
    lifecycle(harness_with(opts(fast)).await).await;
}

#[tokio::test]
async fn invitation_lifecycle_on_postgres_and_redis() {
    let (Some(pg), Some(redis)) = (pg_schema_url().await, redis_url().await) else {
        return;
    };
    lifecycle(
        harness_with(Opts {
            directory: pg,
            sessions: redis,
            tune: Some(fast),
            ..Default::default()
        })
        .await,
    )
    .await;
}

/// A family with `p` primary and `s` a secondary (through an invitation) who attested.
async fn family_with_secondary(h: &Harness, name: &str, p: &AccountId, s: &AccountId) -> String {
    let d = &h.state.directory;
    let f = d
        .create_family(&TenantId::new("t1"), name, p, "test", h.state.now())
        .await
        .unwrap();
    let hash = format!("hash-{}", f.id);
    d.create_family_invitation(
        &homeroom_directory::FamilyInvitation {
            token_hash: hash.clone(),
            family: f.id.clone(),
            tenant: TenantId::new("t1"),
            email: "x@example.com".into(),
            invited_by: p.clone(),
            created_at: h.state.now(),
            used_at: None,
            used_by: None,
            revoked_at: None,
        },
        None,
    )
    .await
    .unwrap();
    d.use_family_invitation(&hash, s, None, h.state.now())
        .await
        .unwrap();
    d.attest_adult(s, h.state.now(), None).await.unwrap();
    f.id
}

#[tokio::test]
async fn policy_gate_stops_secondaries_until_the_primary_accepts() {
    let h = harness_with(opts(with_policies)).await;
    setup_app(&h).await;
    let p = person(&h, "pat@example.com", "Pat Primary").await;
    let s = person(&h, "sam@example.com", "Sam Second").await;
    let fam = family_with_secondary(&h, "Chen family", &p, &s).await;
    // The secondary is stopped with a page naming who must act.
    let bs = browser();
    sign_in(&bs, &h, "sam@example.com").await;
    let (v, c) = pkce();
    let r = bs.get(family_authorize(&h, &c)).send().await.unwrap();
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (403, "family.policies_pending"));
    let r = bs.get(family_authorize(&h, &c)).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Pat Primary"));
    // The primary is asked at sign-in, accepts, and continues to the app.
    let bp = browser();
    sign_in(&bp, &h, "pat@example.com").await;
    let (loc, verifier) = authorize(&bp, &h).await;
    assert!(loc.starts_with("/family?req="), "{loc}");
    let page = bp
        .get(abs(&h, &loc))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Family terms") && page.contains("2026-1"),
        "{page}"
    );
    let req = field(&page, "req");
    let r = post(
        &bp,
        &h,
        &loc,
        "/family/policies",
        &[("family", &fam), ("req", &req)],
    )
    .await;
    assert_eq!(
        page_code(r).await.1,
        "family.policies_pending",
        "box not ticked"
    );
    let r = post(
        &bp,
        &h,
        &loc,
        "/family/policies",
        &[("family", &fam), ("req", &req), ("accept", "yes")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = bp.get(abs(&h, &location(&r))).send().await.unwrap();
    let (claims, _) = tokens(&h, &location(&r), &verifier).await;
    assert_eq!(claims["family_id"], fam.as_str());
    // A secondary cannot accept for the family.
    let r = post(
        &bs,
        &h,
        "/family/link",
        "/family/policies",
        &[("family", &fam), ("accept", "yes")],
    )
    .await;
    assert_eq!(page_code(r).await.1, "family.not_primary");
    // Now the secondary gets through.
    let r = bs.get(family_authorize(&h, &c)).send().await.unwrap();
    let (claims, _) = tokens(&h, &location(&r), &v).await;
    assert_eq!(claims["families"][0]["access"], "view");
}

#[tokio::test]
async fn family_switcher_puts_the_chosen_family_in_the_token() {
    let h = harness_with(opts(fast)).await;
    setup_app(&h).await;
    let g = person(&h, "gina@example.com", "Gina").await;
    let other = person(&h, "olga@example.com", "Olga").await;
    let f1 = h
        .state
        .directory
        .create_family(
            &TenantId::new("t1"),
            "Gina's family",
            &g,
            "test",
            h.state.now(),
        )
        .await
        .unwrap()
        .id;
    let f2 = family_with_secondary(&h, "Olga's family", &other, &g).await;
    let b = browser();
    sign_in(&b, &h, "gina@example.com").await;
    let (loc, verifier) = authorize(&b, &h).await;
    assert!(loc.starts_with("/family/switch?req="), "{loc}");
    let page = b
        .get(abs(&h, &loc))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let req = field(&page, "req");
    // A family Gina is not in: refused.
    let r = post(
        &b,
        &h,
        &loc,
        "/family/switch",
        &[("family", "fam_forged"), ("req", &req)],
    )
    .await;
    assert_eq!(page_code(r).await.1, "family.not_member");
    let r = post(
        &b,
        &h,
        &loc,
        "/family/switch",
        &[("family", &f2), ("req", &req)],
    )
    .await;
    let cont = location(&r);
    let r = b.get(abs(&h, &cont)).send().await.unwrap();
    if !r.status().is_redirection() {
        let (st, code, reference) = page_code(r).await;
        h.state.audit.flush().await;
        let trace = h
            .state
            .directory
            .audit_for_ref(&homeroom_core::RefId::new(reference))
            .await
            .unwrap_or_default();
        panic!(
            "{cont}: {st} {code} {:?}",
            trace
                .iter()
                .map(|e| e.detail.to_string())
                .collect::<Vec<_>>()
        );
    }
    let (claims, _) = tokens(&h, &location(&r), &verifier).await;
    assert_eq!(claims["family_id"], f2.as_str());
    let chosen: Vec<_> = claims["families"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["selected"] == true)
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(chosen, vec![f2.to_string()]);
    // Switch later without signing in again: the next code carries the other family.
    let r = post(
        &b,
        &h,
        "/family/switch",
        "/family/switch",
        &[("family", &f1)],
    )
    .await;
    assert_eq!(location(&r), "/family?done=switched");
    let (loc, verifier) = authorize(&b, &h).await;
    let (claims, _) = tokens(&h, &loc, &verifier).await;
    assert_eq!(claims["family_id"], f1.as_str());
    let mine = claims["families"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == f1.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (mine["role"].as_str(), mine["selected"].as_bool()),
        (Some("primary"), Some(true))
    );
}

async fn admin_token(h: &Harness) -> String {
    admin_bot_token(h, "fam-bot", "fam-bot-secret").await
}

#[tokio::test]
async fn primary_change_revokes_everyone_emails_them_and_staff_cannot_grant() {
    let h = harness_with(opts(fast)).await;
    setup_app(&h).await;
    let p = person(&h, "pat@example.com", "Pat").await;
    let s = person(&h, "sam@example.com", "Sam").await;
    let n = person(&h, "nia@example.com", "Nia").await;
    let fam = family_with_secondary(&h, "Chen family", &p, &s).await;
    let token = admin_token(&h).await;
    let api = |m: reqwest::Method, path: &str| {
        reqwest::Client::new()
            .request(m, format!("{}/admin/api{path}", h.base))
            .bearer_auth(&token)
    };
    let list = json(api(reqwest::Method::GET, "/families").send().await.unwrap()).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Staff can never grant: no endpoint adds a guardian, and the document lists none.
    for path in [
        format!("/families/{fam}/guardians"),
        format!("/families/{fam}/guardians/{n}"),
        format!("/families/{fam}/invitations"),
        format!("/families/{fam}/guardians/{n}/grant"),
    ] {
        let r = api(reqwest::Method::POST, &path)
            .json(&serde_json::json!({"account": n.as_str()}))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 404 | 405),
            "{path}: {}",
            r.status()
        );
    }
    let doc = json(
        api(reqwest::Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let fam_paths: Vec<&String> = paths.iter().filter(|p| p.contains("famil")).collect();
    assert_eq!(fam_paths.len(), 7, "{fam_paths:?}");
    assert!(
        fam_paths
            .iter()
            .all(|p| !p.contains("grant") && !p.ends_with("/guardians"))
    );
    assert!(
        h.state
            .directory
            .memberships_of(&n)
            .await
            .unwrap()
            .is_empty(),
        "nothing granted"
    );
    // Bad input: 400 with the field; nothing changes.
    let r = api(reqwest::Method::POST, &format!("/families/{fam}/primary"))
        .json(&serde_json::json!({"account": "acc_nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["field"], "account");
    let r = api(
        reqwest::Method::POST,
        &format!("/families/{fam}/guardians/{p}/revoke"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 409, "the primary is not revoked as a secondary");
    assert_eq!(
        h.state
            .directory
            .family_guardians(&fam, false)
            .await
            .unwrap()
            .len(),
        2
    );
    // Reset per guardian email address.
    let r = api(
        reqwest::Method::POST,
        &format!("/families/{fam}/guardians/{s}/reset"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        json(r).await["url"]
            .as_str()
            .unwrap()
            .contains("/login/reset/")
    );
    assert!(
        kinds_to(&h, "sam@example.com")
            .await
            .contains(&"reset".to_owned())
    );
    // The primary changes: everyone's access is revoked and everyone affected is emailed.
    let r = api(reqwest::Method::POST, &format!("/families/{fam}/primary"))
        .json(&serde_json::json!({"account": n.as_str()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json(r).await;
    let mut revoked: Vec<String> = body["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    revoked.sort();
    let mut expected = vec![p.to_string(), s.to_string()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(body["family"]["primary"], n.as_str());
    for who in ["pat@example.com", "sam@example.com", "nia@example.com"] {
        assert!(
            kinds_to(&h, who)
                .await
                .contains(&"family_primary_changed".to_owned()),
            "{who} emailed"
        );
    }
    assert!(
        h.state
            .directory
            .memberships_of(&s)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.state
            .directory
            .memberships_of(&p)
            .await
            .unwrap()
            .is_empty()
    );
    // Every change is an audit event.
    h.state.audit.flush().await;
    let evs = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(evs.iter().any(|e| e.kind == "family.primary_changed"));
    assert!(evs.iter().any(|e| e.kind == "admin.family_primary_changed"));
}

#[tokio::test]
async fn parent_access_code_single_use_expiry_and_rate_limit() {
    let h = harness_with(opts(fast)).await;
    let kid = learner(&h, "Maya").await;
    let g1 = person(&h, "gina@example.com", "Gina").await;
    person(&h, "olga@example.com", "Olga").await;
    let code = family::issue_parent_code(&h.state, &kid, "teacher")
        .await
        .unwrap();
    let b1 = browser();
    sign_in(&b1, &h, "gina@example.com").await;
    // Typed in lower case with spaces: still the code.
    let typed = code.to_lowercase().replace('-', " ");
    let r = post(&b1, &h, "/family/link", "/family/link", &[("code", &typed)]).await;
    assert_eq!(location(&r), "/family?done=linked");
    let ms = h.state.directory.memberships_of(&g1).await.unwrap();
    assert_eq!(ms.len(), 1, "a family was made for Gina");
    assert_eq!(
        ms[0].guardian.role,
        homeroom_directory::GuardianRole::Primary
    );
    let students = h
        .state
        .directory
        .family_students(&ms[0].family.id)
        .await
        .unwrap();
    assert_eq!(students[0].account, kid);
    assert_eq!(students[0].linked_by, "parent_code");
    // Single use.
    let b2 = browser();
    sign_in(&b2, &h, "olga@example.com").await;
    let r = post(&b2, &h, "/family/link", "/family/link", &[("code", &code)]).await;
    assert_eq!(page_code(r).await.1, "family.parent_code_invalid");
    // Expiry (30 days by default).
    let code2 = family::issue_parent_code(&h.state, &kid, "teacher")
        .await
        .unwrap();
    h.clock.advance(30 * 86_400 + 1);
    let b3 = browser();
    sign_in(&b3, &h, "olga@example.com").await;
    let r = post(&b3, &h, "/family/link", "/family/link", &[("code", &code2)]).await;
    assert_eq!(page_code(r).await.1, "family.parent_code_invalid");
    // Rate limit: a burst of guesses is cut off with 429.
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = post(
            &b3,
            &h,
            "/family/link",
            "/family/link",
            &[("code", "AAAA-BBBB-CCCC")],
        )
        .await;
        let (status, code, _) = page_code(r).await;
        codes.push((status, code));
    }
    assert!(
        codes
            .iter()
            .any(|(s, c)| *s == 429 && c == "limit.too_many_attempts"),
        "{codes:?}"
    );
    assert!(
        h.state
            .directory
            .memberships_of(&AccountId::new("none"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn classroom_csv_code_is_stable_until_used() {
    fn keyed(s: &mut Settings) {
        fast(s);
        s.classroom.key = Some(homeroom_broker::classroom::CodeKey::new([9; 32]));
    }
    let h = harness_with(opts(keyed)).await;
    let kid = learner(&h, "Leo").await;
    let c1 = family::parent_code_for_csv(&h.state, &kid, "teacher").await;
    assert_eq!(c1.len(), 14, "{c1}");
    let c2 = family::parent_code_for_csv(&h.state, &kid, "teacher").await;
    assert_eq!(c1, c2, "shown again, not replaced");
    let stored = h
        .state
        .directory
        .usable_parent_code(&kid, h.state.now())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.code_enc.as_deref().is_some_and(|s| !s.contains(&c1)));
    // Used: the next download shows a new code.
    let g = person(&h, "gina@example.com", "Gina").await;
    let ga = h.state.directory.get_account(&g).await.unwrap().unwrap();
    let hash = homeroom_core::crypto::sha256_hex(&format!("parent-code:{}", c1.replace('-', "")));
    assert!(matches!(
        h.state
            .directory
            .redeem_parent_code(&hash, &ga, None, "G", h.state.now())
            .await
            .unwrap(),
        homeroom_directory::CodeUse::Linked { .. }
    ));
    let c3 = family::parent_code_for_csv(&h.state, &kid, "teacher").await;
    assert_ne!(c3, c1);
}

/// The invitation and the revocation mails leave through a real SMTP server (aiosmtpd):
/// the invitation carries the link, the stored copy forgets it once sent, and a staff
/// revocation tells both guardians.
#[tokio::test]
async fn family_mails_reach_a_real_smtp_server() {
    let Some((sink, port)) = common::smtp::smtp_sink().await else {
        return;
    };
    let h = harness_with(opts(fast)).await;
    setup_app(&h).await;
    let p = person(&h, "pat@example.com", "Pat Primary").await;
    let fam = h
        .state
        .directory
        .create_family(
            &TenantId::new("t1"),
            "Chen family",
            &p,
            "test",
            h.state.now(),
        )
        .await
        .unwrap();
    let bp = browser();
    sign_in(&bp, &h, "pat@example.com").await;
    let r = post(
        &bp,
        &h,
        "/family",
        "/family/invite",
        &[("family", &fam.id), ("email", "sam@example.com")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let link = pending_link_to(&h, "sam@example.com").await;
    let t = mail::transport(&format!("smtp://127.0.0.1:{port}")).unwrap();
    mail::deliver_due(&h.state, &t).await;
    let all = sink.messages().join("\n");
    assert!(all.contains("To: sam@example.com"), "{all}");
    assert!(
        all.contains(&link),
        "the invitation link reached the mailbox: {all}"
    );
    assert!(
        h.state
            .directory
            .due_mail(h.state.now() + 10, 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to send"
    );
    // Sam joins (new local account), then staff revoke Sam: both guardians are told.
    let bs = browser();
    let r = bs.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let csrf = field(&page, "csrf");
    let token = field(&page, "token");
    let r = bs
        .post(format!("{}/family/join", h.base))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", token.as_str()),
            ("password", PW),
            ("confirm", PW),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let sam = h
        .state
        .directory
        .family_guardians(&fam.id, false)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.account != p)
        .expect("Sam joined")
        .account;
    let token = admin_token(&h).await;
    let r = reqwest::Client::new()
        .post(format!(
            "{}/admin/api/families/{}/guardians/{}/revoke",
            h.base, fam.id, sam
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    mail::deliver_due(&h.state, &t).await;
    let all = sink.messages().join("\n");
    assert!(
        all.matches("To: sam@example.com").count() >= 2,
        "invitation and revocation to Sam: {all}"
    );
    assert!(
        all.contains("To: pat@example.com"),
        "the primary is told: {all}"
    );
}

/// Staff link a rostered learner to a family by sourcedId; bad input names the field and
/// links nothing; another tenant's admin cannot touch the family.
#[tokio::test]
async fn staff_link_a_rostered_learner_by_sourced_id() {
    let h = harness_with(opts(fast)).await;
    setup_app(&h).await;
    roster::import(
        &h,
        &["u1,,,true,s1,student,maya,,Maya,Chen,,1001,maya.chen@demo.homeroom.test,,,,07,"],
        None,
        None,
    )
    .await;
    let p = person(&h, "pat@example.com", "Pat Primary").await;
    let fam = h
        .state
        .directory
        .create_family(
            &TenantId::new("t1"),
            "Chen family",
            &p,
            "test",
            h.state.now(),
        )
        .await
        .unwrap();
    let token = admin_token(&h).await;
    let url = format!("{}/admin/api/families/{}/students", h.base, fam.id);
    let c = reqwest::Client::new();
    for (body, status, field) in [
        (
            serde_json::json!({"sourced_id": ""}),
            400,
            Some("sourced_id"),
        ),
        (
            serde_json::json!({"sourced_id": "a\u{0}b"}),
            400,
            Some("sourced_id"),
        ),
        (
            serde_json::json!({"learner": "u1"}),
            400,
            Some("sourced_id"),
        ),
        (serde_json::json!({"sourced_id": "u9"}), 404, None),
    ] {
        let r = c
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let e = json(r).await;
        if let Some(f) = field {
            assert_eq!(e["field"], f, "{e}");
        }
    }
    assert!(
        h.state
            .directory
            .family_students(&fam.id)
            .await
            .unwrap()
            .is_empty(),
        "nothing linked by bad input"
    );
    let r = c
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"sourced_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = json(r).await;
    let maya = h
        .state
        .directory
        .roster_user(&TenantId::new("t1"), "u1")
        .await
        .unwrap()
        .unwrap()
        .account
        .unwrap();
    assert_eq!(out["students"][0]["account"], maya.as_str(), "{out}");
    assert_eq!(out["students"][0]["linked_by"], "sourced_id", "{out}");
    // The guardians are unchanged: linking a learner never adds a guardian.
    assert_eq!(out["guardians"].as_array().unwrap().len(), 1, "{out}");
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("admin.family_student_linked".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "the link is an audit event");
}

/// A merge is a primary change for the absorbed family: its guardians (primary too) and the
/// remaining family's secondaries lose access, learners move, everyone is emailed; bad
/// merges change nothing, and a merged family cannot be revived by a primary change.
#[tokio::test]
async fn merging_families_revokes_access_moves_learners_and_emails_everyone() {
    let h = harness_with(opts(fast)).await;
    setup_app(&h).await;
    let pat = person(&h, "pat@example.com", "Pat Primary").await;
    let sam = person(&h, "sam@example.com", "Sam Second").await;
    let quinn = person(&h, "quinn@example.com", "Quinn Other").await;
    let ria = person(&h, "ria@example.com", "Ria Other").await;
    let kid = learner(&h, "Maya").await;
    let a = family_with_secondary(&h, "Chen family", &pat, &sam).await;
    let b = family_with_secondary(&h, "Chen-Okafor family", &quinn, &ria).await;
    h.state
        .directory
        .link_family_student(&b, &kid, "sourced_id", h.state.now())
        .await
        .unwrap();
    let token = admin_token(&h).await;
    let c = reqwest::Client::new();
    let merge = |into: String, body: serde_json::Value| {
        let c = c.clone();
        let token = token.clone();
        let base = h.base.clone();
        async move {
            c.post(format!("{base}/admin/api/families/{into}/merge"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // Bad merges: refused, nothing changed.
    let r = merge(a.clone(), serde_json::json!({"from": a})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["field"], "from");
    let r = merge(a.clone(), serde_json::json!({"from": "fam_nope"})).await;
    assert_eq!(r.status(), 404);
    let r = merge(a.clone(), serde_json::json!({"family": b})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        h.state
            .directory
            .family_guardians(&b, false)
            .await
            .unwrap()
            .len(),
        2
    );
    // B into A.
    let r = merge(a.clone(), serde_json::json!({"from": b})).await;
    assert_eq!(r.status(), 200);
    let out = json(r).await;
    let mut revoked: Vec<String> = out["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    revoked.sort();
    let mut expected = vec![sam.to_string(), quinn.to_string(), ria.to_string()];
    expected.sort();
    assert_eq!(revoked, expected, "{out}");
    assert_eq!(
        out["family"]["students"][0]["account"],
        kid.as_str(),
        "{out}"
    );
    let live_a = h.state.directory.family_guardians(&a, false).await.unwrap();
    assert_eq!(live_a.len(), 1);
    assert_eq!(live_a[0].account, pat, "the remaining primary stays");
    assert!(
        h.state
            .directory
            .family_guardians(&b, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.state
            .directory
            .family_students(&b)
            .await
            .unwrap()
            .is_empty()
    );
    let gone = h.state.directory.get_family(&b).await.unwrap().unwrap();
    assert_eq!(gone.merged_into.as_deref(), Some(a.as_str()));
    for who in [
        "pat@example.com",
        "sam@example.com",
        "quinn@example.com",
        "ria@example.com",
    ] {
        assert!(
            kinds_to(&h, who).await.iter().any(|k| k == "family_merged"),
            "{who} is told"
        );
    }
    // Merged once: neither merged again nor revived by a primary change.
    let r = merge(a.clone(), serde_json::json!({"from": b})).await;
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!("{}/admin/api/families/{b}/primary", h.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"account": quinn.as_str()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        h.state
            .directory
            .family_guardians(&b, false)
            .await
            .unwrap()
            .is_empty()
    );
}
