#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Classroom sign-in codes: sign-in by class code + username + code (same answer for a
//! wrong code and an unknown learner, lockout), teacher and lead-teacher scopes (a teacher
//! outside the class is refused and nothing changes), the CSV download with formula
//! neutralisation, the printable sheet, codes sealed at rest, and SSO-only tenants.

mod common;
use common::*;
use homeroom_broker::classroom::CodeKey;
use homeroom_core::{AccountId, TenantId};
use homeroom_directory::LocalPolicy;

const GRACE: &str = "grace.hopper@demo.homeroom.test";
const OMAR: &str = "omar.haddad@demo.homeroom.test";

fn enable(s: &mut homeroom_broker::Settings) {
    s.classroom.tenants.insert(TenantId::new("t1"));
    s.classroom.key = Some(CodeKey::new([42; 32]));
}

async fn setup() -> Harness {
    let h = harness_with(Opts {
        tune: Some(enable),
        ..Opts::default()
    })
    .await;
    roster::class_fixture(&h).await;
    h
}

async fn signed_in(h: &Harness, user: &str) -> reqwest::Client {
    let b = browser();
    let _ = login(&b, h, APP, user).await;
    b
}

async fn get(b: &reqwest::Client, h: &Harness, path: &str) -> (u16, String) {
    let r = b.get(format!("{}{path}", h.base)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    body.split(start)
        .nth(1)
        .and_then(|s| s.split(end).next())
        .unwrap_or_else(|| panic!("{start} not in {body}"))
}

fn csrf_of(body: &str) -> String {
    between(body, "name=\"csrf\" value=\"", "\"").to_owned()
}

fn code_of(body: &str) -> String {
    between(body, "data-testid=\"sign-in-code\">", "<").to_owned()
}

async fn post(
    b: &reqwest::Client,
    h: &Harness,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    b.post(format!("{}{path}", h.base))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Resets one learner's code as this teacher and returns (class code, the new code).
async fn reset_learner(b: &reqwest::Client, h: &Harness, user: &str) -> (String, String) {
    let (status, page) = get(b, h, "/classroom/class/c1").await;
    assert_eq!(status, 200, "{page}");
    let class_code = between(&page, "data-testid=\"class-code\">", "<").to_owned();
    let r = post(
        b,
        h,
        "/classroom/class/c1/reset",
        &[
            ("csrf", &csrf_of(&page)),
            ("mode", "learner"),
            ("learner", user),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (status, page) = get(b, h, &location(&r)).await;
    assert_eq!(status, 200, "{page}");
    (class_code, code_of(&page))
}

async fn account_of(h: &Harness, sourced_id: &str) -> AccountId {
    h.state
        .directory
        .roster_user(&TenantId::new("t1"), sourced_id)
        .await
        .unwrap()
        .unwrap()
        .account
        .unwrap()
}

/// Starts an app login and returns the pending request id.
async fn start_app_login(b: &reqwest::Client, h: &Harness) -> String {
    let (_, c) = pkce();
    let r = follow(b, h, &authorize_url(h, APP, Some(&c), &[])).await;
    let url = r.url().to_string();
    query_param(&url, "req").unwrap_or_else(|| panic!("no req in {url}"))
}

async fn code_sign_in(
    b: &reqwest::Client,
    h: &Harness,
    req: &str,
    class_code: &str,
    username: &str,
    code: &str,
) -> reqwest::Response {
    let (status, page) = get(b, h, &format!("/login/classroom?req={req}")).await;
    assert_eq!(status, 200, "{page}");
    post(
        b,
        h,
        "/login/classroom",
        &[
            ("csrf", &csrf_of(&page)),
            ("req", req),
            ("class_code", class_code),
            ("username", username),
            ("code", code),
        ],
    )
    .await
}

#[tokio::test]
async fn code_sign_in_works_and_every_failure_looks_the_same() {
    let h = setup().await;
    let teacher = signed_in(&h, GRACE).await;
    let (class_code, code) = reset_learner(&teacher, &h, "u1").await;
    assert_eq!(code.len(), 6);

    // The login page offers the class code.
    let learner = browser();
    let req = start_app_login(&learner, &h).await;
    let (_, login_page) = get(&learner, &h, &format!("/login?req={req}")).await;
    assert!(login_page.contains("Sign in with a class code"));

    let wrong = code_sign_in(&learner, &h, &req, &class_code, "maya", "zzzzzz").await;
    let wrong = page_code(wrong).await;
    let unknown = code_sign_in(&learner, &h, &req, &class_code, "nobody", &code).await;
    let unknown = page_code(unknown).await;
    let other_class = code_sign_in(&learner, &h, &req, "NOSUCH", "maya", &code).await;
    let other_class = page_code(other_class).await;
    // Ana is in another class: this class code does not admit her.
    let not_in_class = code_sign_in(&learner, &h, &req, &class_code, "ana", &code).await;
    let not_in_class = page_code(not_in_class).await;
    for got in [&wrong, &unknown, &other_class, &not_in_class] {
        assert_eq!((got.0, got.1.as_str()), (401, "classroom.code_invalid"));
    }

    // Case and spaces in the typed code do not matter; success continues to the app.
    let typed = format!(" {} ", code.to_uppercase());
    let r = code_sign_in(
        &learner,
        &h,
        &req,
        &class_code.to_lowercase(),
        "MAYA",
        &typed,
    )
    .await;
    assert_eq!(r.status(), 303);
    let loc = location(&r);
    assert!(loc.starts_with(CB), "{loc}");
    let (code_param, _) = (query_param(&loc, "code").unwrap(), ());
    assert!(!code_param.is_empty());
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("classroom.code_ok".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].account, Some(account_of(&h, "u1").await));
}

#[tokio::test]
async fn code_lockout_refuses_even_the_right_code() {
    let h = setup().await;
    h.state
        .directory
        .set_local_policy(
            &TenantId::new("t1"),
            &LocalPolicy {
                max_failed_attempts: 3,
                lockout_secs: 600,
            },
        )
        .await
        .unwrap();
    let teacher = signed_in(&h, GRACE).await;
    let (class_code, code) = reset_learner(&teacher, &h, "u2").await;
    let learner = browser();
    let req = start_app_login(&learner, &h).await;
    for _ in 0..3 {
        let r = code_sign_in(&learner, &h, &req, &class_code, "leo", "wrong1").await;
        assert_eq!(page_code(r).await.1, "classroom.code_invalid");
    }
    let r = code_sign_in(&learner, &h, &req, &class_code, "leo", &code).await;
    assert_eq!(page_code(r).await.1, "account.locked");
    // A new code from the teacher clears the lock.
    let (_, code) = reset_learner(&teacher, &h, "u2").await;
    let r = code_sign_in(&learner, &h, &req, &class_code, "leo", &code).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(CB));
}

#[tokio::test]
async fn teacher_outside_the_class_is_refused_and_nothing_changes() {
    let h = setup().await;
    let grace = signed_in(&h, GRACE).await;
    let (_, code) = reset_learner(&grace, &h, "u1").await;
    let maya = account_of(&h, "u1").await;
    let before = h
        .state
        .directory
        .sign_in_code(&maya)
        .await
        .unwrap()
        .unwrap();

    let omar = signed_in(&h, OMAR).await;
    // His own class works.
    let (status, own) = get(&omar, &h, "/classroom/class/c2").await;
    assert_eq!(status, 200, "{own}");
    let csrf = csrf_of(&own);
    // Grace's class does not: pages, show, download, print, resets.
    for path in [
        "/classroom/class/c1",
        "/classroom/class/c1/learner/u1",
        "/classroom/class/c1/codes.csv",
        "/classroom/class/c1/print",
        "/classroom/school/s1",
        "/classroom/school/s1/codes.csv",
    ] {
        let r = omar.get(format!("{}{path}", h.base)).send().await.unwrap();
        let (status, code_shown, _) = page_code(r).await;
        assert_eq!(
            (status, code_shown.as_str()),
            (403, "classroom.not_your_class"),
            "{path}"
        );
    }
    for form in [
        vec![
            ("csrf", csrf.as_str()),
            ("mode", "learner"),
            ("learner", "u1"),
        ],
        vec![("csrf", csrf.as_str()), ("mode", "shared")],
        vec![("csrf", csrf.as_str()), ("mode", "each")],
    ] {
        let r = post(&omar, &h, "/classroom/class/c1/reset", &form).await;
        assert_eq!(page_code(r).await.1, "classroom.not_your_class");
    }
    // A learner of his own class cannot be reached through it either.
    let r = post(
        &omar,
        &h,
        "/classroom/class/c2/reset",
        &[("csrf", &csrf), ("mode", "learner"), ("learner", "u1")],
    )
    .await;
    assert_eq!(page_code(r).await.1, "classroom.not_your_class");
    let after = h
        .state
        .directory
        .sign_in_code(&maya)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before, after, "nothing changed");
    // Grace still sees the same code.
    let (_, page) = get(&grace, &h, "/classroom/class/c1/learner/u1").await;
    assert_eq!(code_of(&page), code);
    // Grace is no lead teacher: no school download.
    let r = grace
        .get(format!("{}/classroom/school/s1/codes.csv", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "classroom.not_your_class");

    // As lead teacher (school admin of s1) Omar may act on any learner of the school.
    let omar_id = account_of(&h, "t2").await;
    sqlx::query("UPDATE accounts SET roles = $1 WHERE id = $2")
        .bind("[\"teacher\",\"school_admin\"]")
        .bind(omar_id.as_str())
        .execute(h.state.directory.pool())
        .await
        .unwrap();
    let (status, page) = get(&omar, &h, "/classroom/class/c1/learner/u1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(code_of(&page), code);
    let r = post(
        &omar,
        &h,
        "/classroom/school/s1/reset",
        &[("csrf", &csrf), ("mode", "learner"), ("learner", "u1")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let after = h
        .state
        .directory
        .sign_in_code(&maya)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(before.code_enc, after.code_enc);
    let r = omar
        .get(format!("{}/classroom/school/s1/codes.csv", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    for u in ["maya", "leo", "sam", "ana"] {
        assert!(csv.contains(&format!("\r\n{u},")), "{u} in {csv}");
    }
    h.state.audit.flush().await;
    let resets = h
        .state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some("classroom.codes_reset".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(resets.len(), 2, "grace's and omar's resets only");
}

#[tokio::test]
async fn class_download_has_every_learner_and_neutralises_formulas() {
    let h = setup().await;
    let grace = signed_in(&h, GRACE).await;
    let (_, page) = get(&grace, &h, "/classroom/class/c1").await;
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/reset",
        &[("csrf", &csrf_of(&page)), ("mode", "each")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, maya_page) = get(&grace, &h, "/classroom/class/c1/learner/u1").await;
    let maya_code = code_of(&maya_page);
    let (_, leo_page) = get(&grace, &h, "/classroom/class/c1/learner/u2").await;
    assert_ne!(code_of(&leo_page), maya_code, "a code each");

    let r = grace
        .get(format!("{}/classroom/class/c1/codes.csv", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "username,name,sign_in_code,parent_access_code");
    assert_eq!(lines.len(), 4, "{csv}");
    // Every learner has a parent access code (XXXX-XXXX-XXXX) beside the sign-in code.
    let maya = lines
        .iter()
        .find(|l| l.starts_with(&format!("maya,Maya Chen,{maya_code},")))
        .unwrap_or_else(|| panic!("{csv}"));
    let parent = maya.rsplit(',').next().unwrap();
    assert_eq!(parent.len(), 14, "{maya}");
    assert_eq!(parent.matches('-').count(), 2, "{maya}");
    // The formula name is prefixed with ' (and quoted, since it holds quotes).
    let sam = lines.iter().find(|l| l.starts_with("sam,")).unwrap();
    assert!(sam.starts_with("sam,\"'=HYPERLINK("), "{sam}");
    assert!(!csv.contains(",=") && !csv.contains(",\"="), "{csv}");
    assert!(!csv.contains("ana,"), "ana is in another class");

    // Shared: every learner the same code.
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/reset",
        &[("csrf", &csrf_of(&page)), ("mode", "shared")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, a) = get(&grace, &h, "/classroom/class/c1/learner/u1").await;
    let (_, b) = get(&grace, &h, "/classroom/class/c1/learner/u2").await;
    assert_eq!(code_of(&a), code_of(&b));

    // The printable sheet: one card per learner with name, username and code.
    let (status, sheet) = get(&grace, &h, "/classroom/class/c1/print").await;
    assert_eq!(status, 200);
    assert_eq!(sheet.matches("class=\"code-card\"").count(), 3);
    assert!(sheet.contains("Maya Chen") && sheet.contains(&code_of(&a)));
    assert!(!sheet.contains("<style") && !sheet.contains("<script") && !sheet.contains("style="));

    h.state.audit.flush().await;
    for kind in ["classroom.codes_downloaded", "classroom.sheet_printed"] {
        let n = h
            .state
            .directory
            .list_audit(&homeroom_directory::AuditFilter {
                kind: Some(kind.into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        assert_eq!(n, 1, "{kind}");
    }
}

#[tokio::test]
async fn codes_are_stored_encrypted() {
    let h = setup().await;
    let grace = signed_in(&h, GRACE).await;
    let (_, code) = reset_learner(&grace, &h, "u1").await;
    let raw: Vec<String> = sqlx::query_scalar("SELECT code_enc FROM classroom_codes")
        .fetch_all(h.state.directory.pool())
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert!(raw[0].starts_with("v1:"));
    assert!(!raw[0].contains(&code) && !raw[0].to_uppercase().contains(&code.to_uppercase()));
    let maya = account_of(&h, "u1").await;
    let key = CodeKey::new([42; 32]);
    assert_eq!(
        homeroom_broker::classroom::open(&key, &maya, &raw[0]).unwrap(),
        code
    );
}

#[tokio::test]
async fn sso_tenant_learners_have_no_code_and_the_page_names_the_provider() {
    let h = harness().await;
    roster::class_fixture(&h).await;
    let grace = signed_in(&h, GRACE).await;
    let (status, page) = get(&grace, &h, "/classroom/class/c1").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-testid=\"no-codes\""), "{page}");
    assert!(page.contains("sign in with Demo District"), "{page}");
    assert!(!page.contains("class-code"));
    let (_, learner) = get(&grace, &h, "/classroom/class/c1/learner/u1").await;
    assert!(learner.contains("signs in with Demo District"), "{learner}");
    let (_, form) = get(&grace, &h, "/login/classroom").await;
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/reset",
        &[("csrf", &csrf_of(&form)), ("mode", "each")],
    )
    .await;
    assert_eq!(page_code(r).await.1, "classroom.codes_disabled");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM classroom_codes")
        .fetch_one(h.state.directory.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn code_sign_in_and_scopes_on_postgres() {
    let Some(url) = pg_schema_url().await else {
        return;
    };
    let h = harness_with(Opts {
        directory: url,
        tune: Some(enable),
        ..Opts::default()
    })
    .await;
    roster::class_fixture(&h).await;
    let grace = signed_in(&h, GRACE).await;
    let (class_code, code) = reset_learner(&grace, &h, "u1").await;
    let (status, home) = get(&grace, &h, "/classroom").await;
    assert_eq!(status, 200);
    assert!(
        home.contains("7A Science") && !home.contains("7B Maths"),
        "{home}"
    );
    let omar = signed_in(&h, OMAR).await;
    let r = omar
        .get(format!("{}/classroom/class/c1/codes.csv", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "classroom.not_your_class");
    let learner = browser();
    let req = start_app_login(&learner, &h).await;
    let r = code_sign_in(&learner, &h, &req, &class_code, "maya", "nope00").await;
    assert_eq!(page_code(r).await.1, "classroom.code_invalid");
    let r = code_sign_in(&learner, &h, &req, &class_code, "maya", &code).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with(CB));
}
