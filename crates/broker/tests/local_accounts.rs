//! Local accounts end to end: password sign-in through the pipeline, same answer for a
//! wrong password and an unknown login, lockout counted exactly across two instances,
//! unlock, invitations, resets with expiry, reset links from the issuer, CSRF, the busy
//! page, mail to a real SMTP server (aiosmtpd), and `/session/status` CORS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::smtp::{Sink, smtp_sink};
use common::*;
use homeroom_broker::keys::KeySet;
use homeroom_broker::{AppState, Settings, local, mail};
use homeroom_core::{AccountId, Role, TenantId};
use homeroom_directory::MailStatus;
use std::sync::OnceLock;

const PW: &str = "correct horse battery";

fn fast(s: &mut Settings) {
    s.local.argon2_m_kib = 256;
    s.local.argon2_t = 1;
}

fn fast_opts() -> Opts {
    Opts {
        tune: Some(fast),
        ..Default::default()
    }
}

/// A local account `guardian1` with password [`PW`].
async fn guardian(h: &Harness) -> AccountId {
    let (a, _) = local::create_local_account(
        &h.state,
        &TenantId::new("t1"),
        Some("gina.guardian@example.com"),
        Some("guardian1"),
        Some("Gina Guardian"),
        vec![Role::Guardian],
        "it@test",
    )
    .await
    .unwrap();
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

fn field(body: &str, name: &str) -> String {
    body.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
        .to_owned()
}

/// Starts an authorization request and returns its `req` id.
async fn start(b: &reqwest::Client, h: &Harness, challenge: &str) -> String {
    let r = b
        .get(authorize_url(h, APP, Some(challenge), &[]))
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    assert!(loc.starts_with("/login?req="), "{loc}");
    loc.trim_start_matches("/login?req=").to_owned()
}

/// Opens the password form; returns its CSRF token.
async fn form(b: &reqwest::Client, base: &str, query: &str) -> String {
    let r = b
        .get(format!("{base}/login/password?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    field(&body, "csrf")
}

async fn submit(
    b: &reqwest::Client,
    base: &str,
    csrf: &str,
    req: &str,
    login: &str,
    password: &str,
) -> reqwest::Response {
    b.post(format!("{base}/login/password"))
        .form(&[
            ("csrf", csrf),
            ("req", req),
            ("tenant", "t1"),
            ("login", login),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_page_links_to_password_sign_in_and_success_continues_the_pipeline() {
    let h = harness_with(fast_opts()).await;
    let id = guardian(&h).await;
    let b = browser();
    let (verifier, challenge) = pkce();
    let req = start(&b, &h, &challenge).await;
    let page = b
        .get(format!("{}/login?req={req}", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Sign in with your Homeroom password"),
        "{page}"
    );
    let csrf = form(&b, &h.base, &format!("req={req}")).await;
    let r = submit(&b, &h.base, &csrf, &req, "GUARDIAN1", PW).await;
    assert_eq!(r.status(), 303, "never 302/307 after the password POST");
    let loc = location(&r);
    assert!(loc.starts_with(CB), "{loc}");
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("hr_session="))
    );
    let code = query_param(&loc, "code").unwrap();
    let tok = json(redeem(&h, APP, Some(APP_SECRET), &code, &verifier).await).await;
    let idt = tok["id_token"].as_str().unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            idt.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], id.as_str());
    // The email works as the login too, and the session is reused for the next app.
    let (_, c2) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c2), &[]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with(CB), "SSO session reused");
    let a = h.state.directory.get_account(&id).await.unwrap().unwrap();
    assert_eq!(a.sign_in_count, 1);
}

/// A sign-in with no app waiting ends on the "signed in" page with a session cookie.
async fn assert_signed_in(r: reqwest::Response) {
    let status = r.status();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("hr_session="));
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(cookie && body.contains("You are signed in"), "{body}");
}

fn normalise(body: &str) -> String {
    // Everything but the reference id and the time must be identical.
    let mut out = String::new();
    for line in body.lines() {
        if line.contains("data-testid=\"ref-id\"") || line.starts_with("<dt>Time</dt>") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn wrong_password_and_unknown_login_answer_the_same() {
    let h = harness_with(fast_opts()).await;
    guardian(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let wrong = submit(&b, &h.base, &csrf, "", "guardian1", "not it at all").await;
    let unknown = submit(&b, &h.base, &csrf, "", "nobody-here", "not it at all").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.status(), unknown.status());
    let headers = |r: &reqwest::Response| {
        let mut v: Vec<String> = r
            .headers()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "x-homeroom-ref" | "date" | "content-length"))
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(headers(&wrong), headers(&unknown));
    let (wb, ub) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert!(wb.contains("account.password_invalid"));
    assert_eq!(normalise(&wb), normalise(&ub));
}

/// A second broker instance sharing the first one's directory and session store.
async fn second_instance(h: &Harness) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut settings = Settings::new(&h.base);
    fast(&mut settings);
    let keys = KeySet::load_or_generate(&h.state.directory, 0)
        .await
        .unwrap();
    let state = AppState::new(
        settings,
        h.state.directory.clone(),
        h.state.sessions.clone(),
        h.state.audit.clone(),
        h.state.providers.clone(),
        keys,
        h.state.clock.clone(),
    );
    let router = homeroom_broker::app(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    (base, task)
}

async fn lockout_is_exact_across_two_instances(opts: Opts) {
    let h = harness_with(opts).await;
    let id = guardian(&h).await;
    let (base2, _task) = second_instance(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let b = b.clone();
        let base = if i % 2 == 0 {
            h.base.clone()
        } else {
            base2.clone()
        };
        let csrf = csrf.clone();
        tasks.push(tokio::spawn(async move {
            let r = submit(&b, &base, &csrf, "", "guardian1", "wrong password!").await;
            page_code(r).await.1
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let invalid = codes
        .iter()
        .filter(|c| *c == "account.password_invalid")
        .count();
    let locked = codes.iter().filter(|c| *c == "account.locked").count();
    assert_eq!((invalid, locked), (10, 10), "{codes:?}");
    let cred = h
        .state
        .directory
        .local_credential(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cred.failed_attempts, 10);
    // The right password is refused while locked; IT sees the lock.
    let r = submit(&b, &h.base, &csrf, "", "guardian1", PW).await;
    assert_eq!(page_code(r).await.1, "account.locked");
    let st = local::status(&h.state, &id).await.unwrap().unwrap();
    assert!(st.locked_until.is_some());
    assert_eq!(st.last_failed_ip.as_deref(), Some("127.0.0.1"));
    // After an hour it works again.
    h.clock.advance(3600);
    let r = submit(&b, &h.base, &csrf, "", "guardian1", PW).await;
    assert_signed_in(r).await;
    assert_eq!(
        h.state
            .directory
            .local_credential(&id)
            .await
            .unwrap()
            .unwrap()
            .failed_attempts,
        0
    );
}

#[tokio::test]
async fn lockout_counts_exactly_under_concurrency_sqlite_memory() {
    lockout_is_exact_across_two_instances(fast_opts()).await;
}

#[tokio::test]
async fn lockout_counts_exactly_under_concurrency_postgres_redis() {
    let (Some(pg), Some(redis)) = (pg_schema_url().await, redis_url().await) else {
        return;
    };
    lockout_is_exact_across_two_instances(Opts {
        directory: pg,
        sessions: redis,
        tune: Some(fast),
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn it_unlocks_and_the_unlock_is_audited() {
    let h = harness_with(fast_opts()).await;
    let id = guardian(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    for _ in 0..10 {
        submit(&b, &h.base, &csrf, "", "guardian1", "nope nope").await;
    }
    let r = submit(&b, &h.base, &csrf, "", "guardian1", PW).await;
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (403, "account.locked"));
    assert!(
        local::unlock(&h.state, &id, "it-admin@district")
            .await
            .unwrap()
    );
    let r = submit(&b, &h.base, &csrf, "", "guardian1", PW).await;
    assert_signed_in(r).await;
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("local.unlocked".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["by"], "it-admin@district");
    assert_eq!(events[0].detail["failed_attempts_before"], 10);
}

#[tokio::test]
async fn csrf_is_required_on_every_form() {
    let h = harness_with(fast_opts()).await;
    guardian(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    // No token, a wrong token, and the right token from another origin.
    let r = submit(&b, &h.base, "", "", "guardian1", PW).await;
    assert_eq!(page_code(r).await.1, "session.csrf");
    let r = submit(&b, &h.base, &"x".repeat(43), "", "guardian1", PW).await;
    assert_eq!(page_code(r).await.1, "session.csrf");
    let r = b
        .post(format!("{}/login/password", h.base))
        .header("origin", "http://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("tenant", "t1"),
            ("login", "guardian1"),
            ("password", PW),
        ])
        .send()
        .await
        .unwrap();
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (403, "session.csrf"));
    // Another browser has no cookie: the token alone is not enough.
    let other = browser();
    let r = submit(&other, &h.base, &csrf, "", "guardian1", PW).await;
    assert_eq!(page_code(r).await.1, "session.csrf");
    for path in ["/login/trouble", "/login/reset", "/login/invite"] {
        let r = other
            .post(format!("{}{path}", h.base))
            .form(&[
                ("csrf", csrf.as_str()),
                ("login", "guardian1"),
                ("token", "x"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(page_code(r).await.1, "session.csrf", "{path}");
    }
    // Nothing was counted.
    let a = h
        .state
        .directory
        .find_local_accounts(&TenantId::new("t1"), "guardian1")
        .await
        .unwrap();
    assert_eq!(a[0].1.failed_attempts, 0);
}

#[tokio::test]
async fn a_huge_password_is_refused_before_hashing() {
    let h = harness_with(fast_opts()).await;
    guardian(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let t = std::time::Instant::now();
    let r = submit(&b, &h.base, &csrf, "", "guardian1", &"a".repeat(10_000)).await;
    assert_eq!(r.status(), 400);
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
    let r = submit(&b, &h.base, &csrf, "", "guardian1", &"a".repeat(1_000_000)).await;
    assert_eq!(r.status(), 400);
}

fn slow_and_narrow(s: &mut Settings) {
    s.local.argon2_m_kib = 64 * 1024;
    s.local.argon2_t = 3;
    s.local.hash_workers = 1;
    s.local.hash_queue = 1;
}

#[tokio::test]
async fn a_full_hashing_pool_answers_busy_at_once() {
    let h = harness_with(Opts {
        tune: Some(slow_and_narrow),
        ..Default::default()
    })
    .await;
    guardian(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (b, base, csrf) = (b.clone(), h.base.clone(), csrf.clone());
        tasks.push(tokio::spawn(async move {
            let t = std::time::Instant::now();
            let r = submit(&b, &base, &csrf, "", "guardian1", "wrong password!").await;
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, code, _) = page_code(r).await;
            (status, code, retry, t.elapsed())
        }));
    }
    let mut busy = 0;
    for t in tasks {
        let (status, code, retry, took) = t.await.unwrap();
        if code == "account.busy" {
            busy += 1;
            assert_eq!(status, 503);
            assert_eq!(retry.as_deref(), Some("5"));
            assert!(
                took < std::time::Duration::from_secs(5),
                "busy must be immediate: {took:?}"
            );
        } else {
            assert_eq!(code, "account.password_invalid");
        }
    }
    assert!(busy >= 1, "1 worker + 1 queued: the others must be refused");
    // Busy attempts were not counted.
    let a = h
        .state
        .directory
        .find_local_accounts(&TenantId::new("t1"), "guardian1")
        .await
        .unwrap();
    assert_eq!(a[0].1.failed_attempts, 8 - busy);
}

async fn set_password(
    b: &reqwest::Client,
    base: &str,
    page_url: &str,
    action: &str,
    pw: &str,
) -> reqwest::Response {
    let r = b.get(page_url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{page_url}");
    let body = r.text().await.unwrap();
    let (csrf, token) = (field(&body, "csrf"), field(&body, "token"));
    b.post(format!("{base}{action}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", token.as_str()),
            ("password", pw),
            ("confirm", pw),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn invitation_first_use_sets_the_password_later_uses_go_to_sign_in() {
    let h = harness_with(fast_opts()).await;
    let (a, link) = local::create_local_account(
        &h.state,
        &TenantId::new("t1"),
        Some("reviewer@example.com"),
        None,
        None,
        vec![Role::Staff],
        "it@test",
    )
    .await
    .unwrap();
    assert!(link.url.starts_with(&format!("{}/login/invite/", h.base)));
    assert!(link.expires_at.is_none());
    let token = link.url.rsplit('/').next().unwrap();
    assert!(token.len() >= 43, "256-bit token");
    // Stored only as a hash; pending for IT; the mail is the record (no SMTP here).
    let inv = h
        .state
        .directory
        .invitations_for_account(&a.id)
        .await
        .unwrap();
    assert_eq!(inv[0].token_hash, homeroom_core::crypto::sha256_hex(token));
    assert_eq!(
        local::pending_invitations(&h.state, &a.tenant)
            .await
            .unwrap()
            .len(),
        1
    );
    let log = local::email_log(&h.state, &a.id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, MailStatus::Unsent);
    assert!(log[0].link.is_none() && !log[0].body.contains(token));
    // A fresh link for IT to copy; the first still works too (links never expire).
    h.clock.advance(365 * 24 * 3600);
    let fresh = local::invite(&h.state, &a.id, "it@test").await.unwrap();
    assert_ne!(fresh.url, link.url);
    let b = browser();
    let r = set_password(&b, &h.base, &link.url, "/login/invite", "a brand new pw").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/login/password?tenant=t1&done=invited"));
    for url in [&link.url, &fresh.url] {
        let r = b.get(url.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 303, "later uses go to sign-in");
        assert!(location(&r).starts_with("/login/password?tenant=t1"));
    }
    assert!(
        local::pending_invitations(&h.state, &a.tenant)
            .await
            .unwrap()
            .is_empty()
    );
    // The password works.
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let r = submit(
        &b,
        &h.base,
        &csrf,
        "",
        "reviewer@example.com",
        "a brand new pw",
    )
    .await;
    assert_signed_in(r).await;
    // IT cannot invite again (reset instead); SSO accounts are never invited.
    assert!(matches!(
        local::invite(&h.state, &a.id, "it").await,
        Err(local::LocalError::PasswordAlreadySet)
    ));
}

#[tokio::test]
async fn an_invitation_raced_sets_exactly_one_password() {
    let h = harness_with(fast_opts()).await;
    let (a, link) = local::create_local_account(
        &h.state,
        &TenantId::new("t1"),
        Some("race@example.com"),
        None,
        None,
        vec![],
        "it",
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (base, url) = (h.base.clone(), link.url.clone());
        tasks.push(tokio::spawn(async move {
            let b = browser();
            let pw = format!("password number {i}");
            let r = set_password(&b, &base, &url, "/login/invite", &pw).await;
            (r.status().as_u16(), location(&r), pw)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, loc, pw) = t.await.unwrap();
        if status == 303 && loc.contains("done=invited") {
            winners.push(pw);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let r = submit(&b, &h.base, &csrf, "", "race@example.com", &winners[0]).await;
    assert_signed_in(r).await;
    let _ = a;
}

async fn request_reset(b: &reqwest::Client, base: &str, host: Option<&str>, login: &str) -> String {
    let page = b
        .get(format!("{base}/login/trouble?tenant=t1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = field(&page, "csrf");
    let mut req = b.post(format!("{base}/login/trouble"));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let r = req
        .form(&[("csrf", csrf.as_str()), ("tenant", "t1"), ("login", login)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn smtp_on(s: &mut Settings) {
    fast(s);
    s.smtp_url = Some(
        SMTP_URL
            .get()
            .cloned()
            .unwrap_or_else(|| "smtp://127.0.0.1:1".into()),
    );
    s.local.mail_poll_ms = 100;
}

static SMTP_URL: OnceLock<String> = OnceLock::new();

#[tokio::test]
async fn reset_lifecycle_with_expiry_links_from_the_issuer_and_no_enumeration() {
    let h = harness_with(Opts {
        tune: Some(smtp_on),
        ..Default::default()
    })
    .await;
    let id = guardian(&h).await;
    let b = browser();
    // The request page never says whether the account exists.
    let known = request_reset(&b, &h.base, Some("evil.example:18480"), "guardian1").await;
    let unknown = request_reset(&b, &h.base, None, "nobody-at-all").await;
    assert_eq!(
        normalise(&known).replace("guardian1", "X"),
        normalise(&unknown).replace("nobody-at-all", "X")
    );
    assert!(
        known.contains("Demo District"),
        "names the school's provider: {known}"
    );
    // The mail's link starts with the issuer even though Host was forged.
    let log = local::email_log(&h.state, &id).await.unwrap();
    assert_eq!(log.len(), 2, "invitation + reset");
    let m = &log[0];
    assert_eq!(m.kind, "reset");
    let link = m.link.clone().unwrap();
    assert!(
        link.starts_with(&format!("{}/login/reset/", h.base)),
        "{link}"
    );
    assert!(!m.body.contains(&link));
    let token = link.rsplit('/').next().unwrap().to_owned();
    let pending = local::pending_resets(&h.state, &TenantId::new("t1"))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].expires_at - pending[0].sent_at, 6 * 3600);
    let stored = h.state.directory.resets_for_account(&id).await.unwrap();
    assert_eq!(
        stored[0].token_hash,
        homeroom_core::crypto::sha256_hex(&token)
    );
    // Used once: works; again: "Reset password token is invalid."
    let r = set_password(&b, &h.base, &link, "/login/reset", "new password 1").await;
    assert_eq!(r.status(), 303);
    let r = b.get(&link).send().await.unwrap();
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (400, "reset.token_invalid"));
    let r = b.get(&link).send().await.unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains("Reset password token is invalid."));
    assert!(
        body.contains("href=\"/login/trouble?tenant=t1\""),
        "a way to ask again"
    );
    // A fresh link from IT expires after 6 hours.
    let fresh = local::issue_reset(&h.state, &id, "it@test").await.unwrap();
    h.clock.advance(6 * 3600 + 1);
    let r = b.get(&fresh.url).send().await.unwrap();
    assert_eq!(page_code(r).await.1, "reset.token_invalid");
    assert!(
        local::pending_resets(&h.state, &TenantId::new("t1"))
            .await
            .unwrap()
            .is_empty()
    );
    // A guessed token.
    let r = b
        .get(format!("{}/login/reset/{}", h.base, "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "reset.token_invalid");
    // The new password works.
    let csrf = form(&b, &h.base, "tenant=t1").await;
    let r = submit(&b, &h.base, &csrf, "", "guardian1", "new password 1").await;
    assert_signed_in(r).await;
}

#[tokio::test]
async fn sso_only_students_get_no_reset_link_and_are_told_their_provider() {
    let h = harness_with(fast_opts()).await;
    let b = browser();
    // Maya signs in through the district's provider once.
    login(&b, &h, APP, STUDENT).await;
    let page = request_reset(&browser(), &h.base, None, STUDENT).await;
    assert!(page.contains("Demo District"), "{page}");
    let accounts = h
        .state
        .directory
        .find_accounts_by_email(&TenantId::new("t1"), STUDENT)
        .await
        .unwrap();
    let log = local::email_log(&h.state, &accounts[0].id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, "reset_sso_only");
    assert!(log[0].link.is_none() && log[0].body.contains("Demo District"));
    assert!(
        h.state
            .directory
            .resets_for_account(&accounts[0].id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        local::invite(&h.state, &accounts[0].id, "it").await,
        Err(local::LocalError::SsoOnly(_))
    ));
}

#[tokio::test]
async fn mail_is_delivered_to_a_real_smtp_server_and_the_link_is_then_erased() {
    let Some((sink, port)) = smtp_sink().await else {
        return;
    };
    let _ = SMTP_URL.set(format!("smtp://127.0.0.1:{port}"));
    let h = harness_with(Opts {
        tune: Some(smtp_on),
        ..Default::default()
    })
    .await;
    if h.state.settings.smtp_url.as_deref() != Some(&format!("smtp://127.0.0.1:{port}")) {
        // Another test set the URL first in this process; deliver with our own transport.
        let t = mail::transport(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let id = guardian(&h).await;
        mail::deliver_due(&h.state, &t).await;
        check_delivered(&h, &sink, &id).await;
        return;
    }
    let delivery = mail::spawn_delivery(h.state.clone()).expect("SMTP configured");
    let id = guardian(&h).await;
    let link = local::issue_reset(&h.state, &id, "it@test").await.unwrap();
    for _ in 0..100 {
        let log = local::email_log(&h.state, &id).await.unwrap();
        if log.iter().all(|m| m.status == MailStatus::Sent) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    check_delivered(&h, &sink, &id).await;
    let all = sink.messages().join("\n");
    assert!(
        all.contains(&link.url),
        "the reset link reached the mailbox"
    );
    delivery.stop().await;
}

async fn check_delivered(h: &Harness, sink: &Sink, id: &AccountId) {
    let log = local::email_log(&h.state, id).await.unwrap();
    assert!(!log.is_empty());
    for m in &log {
        assert_eq!(m.status, MailStatus::Sent, "{m:?}");
        assert!(m.sent_at.is_some());
        assert!(m.link.is_none(), "links are erased once sent");
        assert_eq!(m.attempts, 1);
    }
    let all = sink.messages().join("\n");
    assert!(all.contains("To: gina.guardian@example.com"), "{all}");
    assert!(all.contains("/login/invite/"), "{all}");
}

#[tokio::test]
async fn session_status_cors_only_for_exactly_registered_origins() {
    let h = harness_with(fast_opts()).await;
    let mut app = app_record(APP, Some(APP_SECRET), "RS256");
    app.allowed_origins = vec!["https://app.example.test".into()];
    h.state.directory.upsert_app(&app).await.unwrap();
    guardian(&h).await;
    let b = browser();
    let csrf = form(&b, &h.base, "tenant=t1").await;
    assert_eq!(
        submit(&b, &h.base, &csrf, "", "guardian1", PW)
            .await
            .status(),
        200
    );
    h.clock.advance(100);
    let status = |origin: &'static str| {
        let b = b.clone();
        let url = format!("{}/session/status", h.base);
        async move { b.get(url).header("origin", origin).send().await.unwrap() }
    };
    let r = status("https://app.example.test").await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.test"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["vary"], "Origin");
    let s = json(r).await;
    assert_eq!(s["active"], true);
    assert_eq!(s["seconds_left"], 1800 - 100);
    assert_eq!(s["warn_at_seconds_left"], 300);
    // Peeking does not extend the session.
    h.clock.advance(100);
    let s = json(status("https://app.example.test").await).await;
    assert_eq!(s["seconds_left"], 1800 - 200);
    for bad in [
        "http://evil.example",
        "null",
        "https://app.example.test.evil.example",
        "https://app.example.tes",
        "http://app.example.test",
    ] {
        let r = status(bad).await;
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{bad}"
        );
        assert_eq!(r.headers()["vary"], "Origin");
    }
    // The script apps embed.
    let js = b
        .get(format!("{}/static/session-warning.js", h.base))
        .send()
        .await
        .unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.text().await.unwrap().contains("/session/status"));
    // No session: inactive.
    let s = json(
        browser()
            .get(format!("{}/session/status", h.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s["active"], false);
}
