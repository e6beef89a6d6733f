#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The IT web console: only a signed-in active it_admin gets in, everything is scoped to
//! the admin's tenant, each page renders with the strict security headers, the search and
//! the troubleshooter answer, and every POST needs the CSRF token (without it nothing
//! changes; with it the change happens and is audited).

mod common;
use common::*;
use homeroom_core::{AccountId, Role, TenantId};
use homeroom_directory::{Account, AccountStatus, AuditFilter};

const ADMIN: &str = "grace.hopper@demo.homeroom.test";

fn account(id: &str, tenant: &str, email: &str, name: &str, roles: Vec<Role>) -> Account {
    Account {
        id: AccountId::new(id),
        tenant: TenantId::new(tenant),
        status: AccountStatus::Active,
        email: Some(email.into()),
        email_verified: true,
        name: Some(name.into()),
        given_name: None,
        family_name: None,
        username: None,
        roles,
        created_at: 0,
        last_sign_in_at: None,
        sign_in_count: 0,
    }
}

/// A harness with an it_admin (Grace), a teacher and a student in t1, and a student in t2.
async fn setup() -> Harness {
    let h = harness().await;
    let d = &h.state.directory;
    for a in [
        account(
            "acc_grace",
            "t1",
            ADMIN,
            "Grace Hopper",
            vec![Role::ItAdmin],
        ),
        account(
            "acc_ada",
            "t1",
            "ada.lovelace@demo.homeroom.test",
            "Ada Lovelace",
            vec![Role::Teacher],
        ),
        account(
            "acc_zed",
            "t1",
            "zed.student@demo.homeroom.test",
            "Zed Quillfeather",
            vec![Role::Student],
        ),
        account(
            "acc_other",
            "t2",
            "zed.other@other.test",
            "Zed Quillfeather",
            vec![Role::Student],
        ),
    ] {
        d.create_account(&a, None).await.unwrap();
    }
    h
}

/// A browser signed in through the sandbox as `user` (its SSO cookie in the jar).
async fn signed_in(h: &Harness, user: &str) -> reqwest::Client {
    let b = browser();
    let _ = login(&b, h, APP, user).await;
    b
}

async fn page(b: &reqwest::Client, h: &Harness, path: &str) -> (u16, String) {
    let r = b.get(format!("{}{path}", h.base)).send().await.unwrap();
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{path}: CSP {csp}"
    );
    assert_eq!(
        r.headers().get("referrer-policy").unwrap(),
        "no-referrer",
        "{path}"
    );
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The CSRF token of the first form on a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn status_of(h: &Harness, id: &str) -> AccountStatus {
    h.state
        .directory
        .get_account(&AccountId::new(id))
        .await
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test]
async fn only_a_signed_in_it_admin_gets_in() {
    let h = setup().await;
    // No session: straight to Homeroom's sign-in, remembering the page (never the console).
    let r = browser()
        .get(format!("{}/console?tenant=t1", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?tenant=t1");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("hr_console_return="))
        .expect("the return cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    for path in [
        "/console/users?q=zed",
        "/console/events",
        "/console/rosters",
        "/console/accounts/new",
        "/console/providers/new",
    ] {
        let (status, body) = page(&browser(), &h, path).await;
        assert_eq!(status, 303, "{path}");
        assert!(!body.contains("Quillfeather"));
    }
    // A student's session: 403.
    let student = signed_in(&h, STUDENT).await;
    for path in ["/console", "/console/users?q=zed", "/console/users/acc_zed"] {
        let (status, body) = page(&student, &h, path).await;
        assert_eq!(status, 403, "{path}");
        assert!(!body.contains("Quillfeather"));
    }
    // A student cannot POST either, token or not.
    let r = student
        .post(format!("{}/console/users/acc_zed/status", h.base))
        .form(&[("status", "archived"), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Active);
    // An archived admin is refused too.
    let admin = signed_in(&h, ADMIN).await;
    assert_eq!(page(&admin, &h, "/console").await.0, 200);
    h.state
        .directory
        .set_account_status(&AccountId::new("acc_grace"), AccountStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(page(&admin, &h, "/console").await.0, 403);
}

#[tokio::test]
async fn admin_sees_every_page_with_strict_headers() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    for (path, expect) in [
        ("/console", "Sign-ins, last 24 hours"),
        ("/console/users", "Users"),
        ("/console/users?role=teacher", "Teachers"),
        ("/console/users/acc_zed", "Zed Quillfeather"),
        ("/console/troubleshoot", "Troubleshooter"),
        ("/console/events", "Events"),
        ("/console/providers", "Demo District"),
        ("/console/apps", "App app"),
        ("/console/rosters", "Roster imports"),
    ] {
        let (status, body) = page(&admin, &h, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains(expect), "{path} lacks {expect}");
        assert!(!body.contains("<script"), "{path} has a script");
        assert!(!body.contains("style="), "{path} has inline style");
        assert!(body.contains("Grace Hopper"), "{path} names the admin");
        // Other tenant's apps never show.
        assert!(!body.contains("t2-app"), "{path}");
    }
    // The dashboard counts the admin's own sign-in and shows it per provider.
    let (_, body) = page(&admin, &h, "/console").await;
    assert!(body.contains("<meter"), "{body}");
    assert!(body.contains(">idp<"), "{body}");
    // No secrets on the providers page.
    let (_, body) = page(&admin, &h, "/console/providers").await;
    assert!(!body.contains("upstream-secret"));
}

#[tokio::test]
async fn search_tabs_and_troubleshooter_answer() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    let (_, body) = page(&admin, &h, "/console/users?q=quill").await;
    assert!(body.contains("/console/users/acc_zed"), "{body}");
    assert!(
        !body.contains("acc_other"),
        "the other tenant's namesake stays hidden"
    );
    let (_, body) = page(&admin, &h, "/console/users?q=demo.homeroom&role=teacher").await;
    assert!(body.contains("Ada Lovelace"));
    assert!(!body.contains("Zed Quillfeather"));
    let (_, body) = page(&admin, &h, "/console/users?q=zz").await;
    assert!(body.contains("at least 3 letters"));
    // Escaping: a hostile query is shown as text.
    let (_, body) = page(&admin, &h, "/console/users?q=%3Cscript%3Ealert(1)").await;
    assert!(!body.contains("<script>alert"));
    assert!(body.contains("&lt;script&gt;") || body.contains("&#60;script&#62;"));
    // The troubleshooter for a person.
    let (_, body) = page(&admin, &h, "/console/troubleshoot?q=zed.student").await;
    assert!(body.contains("Account is active"), "{body}");
    assert!(body.contains("Never signed in"), "{body}");
    // ... and for a refused attempt's reference id.
    let b = browser();
    let r = b
        .get(format!("{}/callback/idp?code=x&state=forged", h.base))
        .send()
        .await
        .unwrap();
    let (_, _, reference) = page_code(r).await;
    assert!(reference.starts_with("HR-"));
    let (status, body) = page(&admin, &h, &format!("/console/troubleshoot?q={reference}")).await;
    assert_eq!(status, 200);
    assert!(body.contains("upstream.state_invalid"), "{body}");
    assert!(body.contains("For IT:"), "{body}");
    // A refusal inside the tenant (a suspended student signs in): the
    // events page filters by its code and links the trace; the dashboard lists it among
    // the top failure reasons.
    let mut leo = account("acc_leo", "t1", STUDENT2, "Leo Okafor", vec![Role::Student]);
    leo.status = AccountStatus::Suspended;
    h.state.directory.create_account(&leo, None).await.unwrap();
    let (_, c) = pkce();
    let r = follow(
        &b,
        &h,
        &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT2)]),
    )
    .await;
    let (_, code, reference) = page_code(r).await;
    assert!(!code.is_empty() && reference.starts_with("HR-"));
    let (_, body) = page(&admin, &h, &format!("/console/events?code={code}")).await;
    assert!(
        body.contains(&format!("/console/trace/{reference}")),
        "{body}"
    );
    let (status, body) = page(&admin, &h, &format!("/console/trace/{reference}")).await;
    assert_eq!(status, 200);
    assert!(body.contains(&code));
    assert_eq!(page(&admin, &h, "/console/trace/HR-NOPE").await.0, 404);
    let (_, body) = page(&admin, &h, "/console").await;
    assert!(
        body.contains(&format!("/console/events?code={code}")),
        "{body}"
    );
    // The hourly chart (server-rendered SVG) shows the refusal and the success.
    assert!(body.contains("<svg class=\"chart\""), "{body}");
    assert!(body.contains("class=\"svg-bad\""), "{body}");
    assert!(body.contains("class=\"svg-ok\""), "{body}");
}

#[tokio::test]
async fn posts_need_the_csrf_token_and_are_audited() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    let url = format!("{}/console/users/acc_zed/status", h.base);
    // Without a token: refused, nothing changed.
    let r = admin
        .post(&url)
        .form(&[("status", "archived")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Active);
    // With a wrong token: refused.
    let (_, body) = page(&admin, &h, "/console/users/acc_zed").await;
    let csrf = csrf_of(&body);
    assert!(csrf.len() >= 32);
    let r = admin
        .post(&url)
        .form(&[
            ("status", "archived"),
            ("csrf", "wrong-token-wrong-token-wrong-token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // With the token but from another origin: refused.
    let r = admin
        .post(&url)
        .header("origin", "https://evil.example")
        .form(&[("status", "archived"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Active);
    // `Origin: null` (what browsers send from a no-referrer page) passes only with
    // `Sec-Fetch-Site: same-origin`.
    for site in ["cross-site", "same-site"] {
        let r = admin
            .post(&url)
            .header("origin", "null")
            .header("sec-fetch-site", site)
            .form(&[("status", "archived"), ("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{site}");
    }
    let r = admin
        .post(&url)
        .header("origin", "null")
        .form(&[("status", "archived"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "null origin without fetch metadata");
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Active);
    // With the token from our origin: archived, audited, back to the profile.
    let r = admin
        .post(&url)
        .header("origin", h.base.as_str())
        .form(&[("status", "archived"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/users/acc_zed?done=status");
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Archived);
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&AuditFilter {
            kind: Some("admin.account_status".into()),
            tenant: Some(TenantId::new("t1")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["account"], "acc_zed");
    assert_eq!(events[0].detail["to"], "archived");
    assert_eq!(events[0].detail["by"], "account:acc_grace");
    let (_, body) = page(&admin, &h, "/console/users/acc_zed?done=status").await;
    assert!(body.contains("status was changed"));
    assert!(
        body.contains(">Activate<"),
        "an archived account offers Activate"
    );
    // Activate it again; copy an invitation link (a local account without password).
    let r = admin
        .post(&url)
        .form(&[("status", "active"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Active);
    let r = admin
        .post(format!("{}/console/users/acc_zed/invitation", h.base))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("Invitation link"), "{body}");
    assert!(
        body.contains("class=\"copy\" readonly value=\"http"),
        "{body}"
    );
    // The same from a browser: `Origin: null` with `Sec-Fetch-Site: same-origin`.
    let r = admin
        .post(format!("{}/console/users/acc_zed/unlock", h.base))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/console/users/acc_zed?done="));
    // Provider disable and test connection, with the token.
    let r = admin
        .post(format!("{}/console/providers/idp/test", h.base))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("discovery"), "{body}");
    let r = admin
        .post(format!("{}/console/providers/idp/enabled", h.base))
        .form(&[("enabled", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no token, no change");
    let r = admin
        .post(format!("{}/console/providers/idp/enabled", h.base))
        .form(&[("enabled", "false"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let p = h
        .state
        .directory
        .get_provider(&homeroom_core::ProviderId::new("idp"))
        .await
        .unwrap()
        .unwrap();
    assert!(!p.enabled);
}

#[tokio::test]
async fn other_tenants_accounts_are_not_reachable() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    let (status, body) = page(&admin, &h, "/console/users/acc_other").await;
    assert_eq!(status, 404);
    assert!(!body.contains("zed.other@other.test"));
    let (_, body) = page(&admin, &h, "/console/users/acc_zed").await;
    let csrf = csrf_of(&body);
    for action in ["status", "unlock", "invitation", "reset"] {
        let r = admin
            .post(format!("{}/console/users/acc_other/{action}", h.base))
            .form(&[("status", "archived"), ("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{action}");
    }
    assert_eq!(status_of(&h, "acc_other").await, AccountStatus::Active);
    let (_, body) = page(&admin, &h, "/console/troubleshoot?q=zed.other@other.test").await;
    assert!(!body.contains("acc_other"));
    // A provider of another tenant is not found either.
    let r = admin
        .post(format!("{}/console/providers/nope/enabled", h.base))
        .form(&[("enabled", "false"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The console end to end in headless Debian chromium, driven by `playwright-core`
/// (tests/console-e2e): keyboard search, the troubleshooter on a refused attempt, real
/// form POSTs with the CSRF token, every page on a desktop and a phone viewport, no CSP
/// violation; screenshots in target/console-screenshots. Needs /usr/bin/chromium and
/// `npm ci` in tests/console-e2e, so tests/run.sh runs it with `--ignored`.
#[tokio::test]
#[ignore = "needs chromium and tests/console-e2e/node_modules; run by tests/run.sh"]
async fn console_in_headless_chromium() {
    use homeroom_broker::flows::{SsoSession, flows};
    let h = setup().await;
    // A refused attempt in the tenant, for the dashboard and the troubleshooter.
    let mut leo = account("acc_leo", "t1", STUDENT2, "Leo Okafor", vec![Role::Student]);
    leo.status = AccountStatus::Suspended;
    h.state.directory.create_account(&leo, None).await.unwrap();
    let (_, c) = pkce();
    let r = follow(
        &browser(),
        &h,
        &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT2)]),
    )
    .await;
    let (_, code, reference) = page_code(r).await;
    assert!(!code.is_empty());
    h.state.audit.flush().await;
    // Grace's SSO session, handed to the browser as its cookie.
    let now = h.state.now();
    let raw = flows(&h.state)
        .create_session(&SsoSession {
            tenant: TenantId::new("t1"),
            account: AccountId::new("acc_grace"),
            provider: Some(homeroom_core::ProviderId::new("idp")),
            upstream_label: ADMIN.into(),
            auth_time: now,
            created_at: now,
            last_seen: now,
            idle_secs: 1800,
            absolute_secs: 43_200,
            ref_id: homeroom_core::RefId::new("HR-E2E"),
        })
        .await
        .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("console-screenshots");
    let script = root.join("tests/console-e2e/e2e.mjs");
    let base = h.base.clone();
    let issuer = h.idp.issuer().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let zip_path = tmp.path().join("roster.zip");
    std::fs::write(
        &zip_path,
        roster_zip(&format!(
            "{USERS_HEADER}u1,,,true,s1,student,nia,,Nia,North,,1001,nia.north@demo.homeroom.test,,,,07,\n"
        )),
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .env("BASE", base)
            .env("SESSION", raw)
            .env("REFERENCE", reference)
            .env("CODE", code)
            .env("OUT", &out)
            .env("ADMIN", ADMIN)
            .env("ISSUER", issuer)
            .env("ROSTER_ZIP", &zip_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "console e2e failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    // The browser's archive and restore went through, audited.
    assert_eq!(status_of(&h, "acc_zed").await, AccountStatus::Active);
    h.state.audit.flush().await;
    let changes = h
        .state
        .directory
        .list_audit(&AuditFilter {
            kind: Some("admin.account_status".into()),
            tenant: Some(TenantId::new("t1")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(changes.len(), 2, "archive then activate");
    // The provider added through the form, the role added as the fix, the roster import.
    let p = h
        .state
        .directory
        .get_provider(&homeroom_core::ProviderId::new("e2e-idp"))
        .await
        .unwrap()
        .expect("the provider added in the browser");
    assert_eq!(p.tenant, TenantId::new("t1"));
    let zed = h
        .state
        .directory
        .get_account(&AccountId::new("acc_zed"))
        .await
        .unwrap()
        .unwrap();
    assert!(zed.roles.contains(&Role::Teacher));
    assert_eq!(
        h.state
            .directory
            .roster_imports(&TenantId::new("t1"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn only_same_origin_console_paths_are_return_targets() {
    use homeroom_broker::console::safe_console_path;
    for ok in [
        "/console",
        "/console/users?q=quill&role=student",
        "/console/users/acc_zed",
        "/console?tenant=t1",
    ] {
        assert_eq!(safe_console_path(ok).as_deref(), Some(ok), "{ok}");
    }
    for bad in [
        "https://evil.example/console",
        "//evil.example/console",
        "/console//evil.example",
        "/consolex",
        "/console.evil.example",
        "/console/../login",
        "/console/%2e%2e/login",
        "/console/%2F%2Fevil",
        "/console\\\\evil",
        "/console/a b",
        "/console\r\nx",
        "/login",
        "",
    ] {
        assert_eq!(safe_console_path(bad), None, "{bad}");
    }
}

/// Visiting a console page without a session: sign in through Homeroom (the sandbox
/// upstream), land back on that page, with no manual step; a forged return cookie
/// pointing elsewhere is ignored (no open redirect).
#[tokio::test]
async fn console_sign_in_returns_to_the_page_asked_for() {
    let h = setup().await;
    let b = browser();
    let r = b
        .get(format!("{}/console/users?q=quill&tenant=t1", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login?tenant=t1");
    // The login page, then the school email (home-realm discovery), the upstream, back.
    let r = follow(&b, &h, &format!("{}/login?tenant=t1", h.base)).await;
    assert_eq!(r.status(), 200);
    let start = format!("{}/login/discover?email={}", h.base, ADMIN);
    let mut url = start.clone();
    let mut landed = String::new();
    for _ in 0..12 {
        let r = b.get(&url).send().await.unwrap();
        if !r.status().is_redirection() {
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            assert!(body.contains("/console/users/acc_zed"), "{landed}: {body}");
            break;
        }
        let loc = location(&r);
        landed = loc.clone();
        url = if loc.starts_with('/') {
            format!("{}{loc}", h.base)
        } else {
            loc
        };
    }
    assert_eq!(landed, "/console/users?q=quill&tenant=t1");
    // The cookie is gone: a later sign-in shows the plain signed-in page.
    let r = follow(&b, &h, &start).await;
    let body = r.text().await.unwrap();
    assert!(body.contains("You are signed in"), "{body}");

    // A forged return cookie (another origin) is ignored.
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let base_url: reqwest::Url = h.base.parse().unwrap();
    jar.add_cookie_str(
        "hr_console_return=%2F%2Fevil.example%2Fconsole; Path=/",
        &base_url,
    );
    let evil = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = follow(&evil, &h, &start).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("You are signed in"), "{body}");
}

/// The form field `name="csrf"` of a page fetched by a signed-in admin.
async fn csrf(admin: &reqwest::Client, h: &Harness) -> String {
    let (_, body) = page(admin, h, "/console/providers").await;
    csrf_of(&body)
}

async fn post_form(
    admin: &reqwest::Client,
    h: &Harness,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let r = admin
        .post(format!("{}{path}", h.base))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let loc = location(&r);
    let body = r.text().await.unwrap();
    (status, if status == 303 { loc } else { body })
}

#[tokio::test]
async fn providers_are_added_and_edited_through_the_form() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    let csrf = csrf(&admin, &h).await;
    let (status, body) = page(&admin, &h, "/console/providers/new").await;
    assert_eq!(status, 200);
    assert!(body.contains("name=\"client_secret\""), "{body}");
    let issuer = h.idp.issuer();
    // A missing secret: refused next to its field, with the key path; nothing written.
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/providers/new",
        &[
            ("csrf", &csrf),
            ("id", "district-idp"),
            ("kind", "oidc"),
            ("display_name", "District sign-in"),
            ("issuer", issuer),
            ("client_id", "homeroom"),
            ("settings", "{}"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("class=\"field-error\">config.client_secret:"),
        "{body}"
    );
    let pid = homeroom_core::ProviderId::new("district-idp");
    assert!(
        h.state
            .directory
            .get_provider(&pid)
            .await
            .unwrap()
            .is_none()
    );
    // Bad JSON in the other settings; an unknown kind; a taken id.
    for (form_kind, settings, id, want) in [
        (
            "oidc",
            "{not json",
            "district-idp",
            ">config: not valid JSON",
        ),
        ("ldap", "{}", "district-idp", ">kind: unknown provider kind"),
        (
            "oidc",
            "{}",
            "idp",
            ">id: a provider with this id already exists",
        ),
    ] {
        let (status, body) = post_form(
            &admin,
            &h,
            "/console/providers/new",
            &[
                ("csrf", &csrf),
                ("id", id),
                ("kind", form_kind),
                ("display_name", "District sign-in"),
                ("issuer", issuer),
                ("client_id", "homeroom"),
                ("client_secret", "upstream-secret"),
                ("settings", settings),
            ],
        )
        .await;
        assert!(status == 400 || status == 409, "{status}");
        assert!(body.contains(want), "{want}: {body}");
    }
    // No token: refused.
    let (status, _) = post_form(
        &admin,
        &h,
        "/console/providers/new",
        &[("id", "district-idp"), ("kind", "oidc")],
    )
    .await;
    assert_eq!(status, 403);
    // Valid: created in the admin's tenant, served at once, audited.
    let (status, loc) = post_form(
        &admin,
        &h,
        "/console/providers/new",
        &[
            ("csrf", &csrf),
            ("id", "district-idp"),
            ("kind", "oidc"),
            ("display_name", "District sign-in"),
            ("issuer", issuer),
            ("client_id", "homeroom"),
            ("client_secret", "upstream-secret"),
            ("settings", "{\"trust_email\": true, \"timeout_secs\": 2}"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{loc}");
    assert_eq!(loc, "/console/providers?done=created");
    let rec = h.state.directory.get_provider(&pid).await.unwrap().unwrap();
    assert_eq!(rec.tenant, TenantId::new("t1"));
    assert_eq!(rec.config["timeout_secs"], 2);
    assert!(h.state.providers.get(&pid).is_some());
    // The edit form never shows the secret.
    let (status, body) = page(&admin, &h, "/console/providers/district-idp/edit").await;
    assert_eq!(status, 200);
    assert!(!body.contains("upstream-secret"), "{body}");
    assert!(body.contains("timeout_secs"));
    // A bad edit changes nothing.
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/providers/district-idp/edit",
        &[
            ("csrf", &csrf),
            ("display_name", "District sign-in"),
            ("issuer", "http://not-https.example"),
            ("client_id", "homeroom"),
            ("settings", "{}"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("config.issuer:"), "{body}");
    let same = h.state.directory.get_provider(&pid).await.unwrap().unwrap();
    assert_eq!(same.config, rec.config);
    // A good edit: blank secret keeps it; removed keys are removed.
    let (status, loc) = post_form(
        &admin,
        &h,
        "/console/providers/district-idp/edit",
        &[
            ("csrf", &csrf),
            ("display_name", "District SSO"),
            ("issuer", issuer),
            ("client_id", "homeroom"),
            ("client_secret", ""),
            ("settings", "{\"timeout_secs\": 3}"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{loc}");
    let edited = h.state.directory.get_provider(&pid).await.unwrap().unwrap();
    assert_eq!(edited.display_name, "District SSO");
    assert_eq!(edited.config["client_secret"], "upstream-secret");
    assert_eq!(edited.config["timeout_secs"], 3);
    assert!(edited.config.get("trust_email").is_none());
    h.state.audit.flush().await;
    for kind in ["admin.provider_created", "admin.provider_changed"] {
        let events = h
            .state
            .directory
            .list_audit(&AuditFilter {
                kind: Some(kind.into()),
                tenant: Some(TenantId::new("t1")),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!events.is_empty(), "{kind}");
        assert!(!events[0].detail.to_string().contains("upstream-secret"));
    }
    // Another tenant's provider cannot be opened or edited.
    let mut other = h.state.directory.get_provider(&pid).await.unwrap().unwrap();
    other.id = homeroom_core::ProviderId::new("t2-idp");
    other.tenant = TenantId::new("t2");
    h.state.directory.upsert_provider(&other).await.unwrap();
    assert_eq!(
        page(&admin, &h, "/console/providers/t2-idp/edit").await.0,
        404
    );
    let (status, _) = post_form(
        &admin,
        &h,
        "/console/providers/t2-idp/edit",
        &[("csrf", &csrf), ("display_name", "Mine now")],
    )
    .await;
    assert_eq!(status, 404);
    let t2 = h
        .state
        .directory
        .get_provider(&homeroom_core::ProviderId::new("t2-idp"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t2.display_name, "District SSO");
}

#[tokio::test]
async fn apps_are_added_and_edited_through_the_form() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    let csrf = csrf(&admin, &h).await;
    let app_id = homeroom_core::ClientId::new("library");
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/apps/new",
        &[
            ("csrf", &csrf),
            ("client_id", "library"),
            ("name", "Library"),
            (
                "redirect_uris",
                "https://library.example.org/cb\njavascript:alert(1)",
            ),
            ("scopes", "openid profile"),
            ("id_token_alg", "RS256"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("redirect_uris[1]:"), "{body}");
    assert!(h.state.directory.get_app(&app_id).await.unwrap().is_none());
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/apps/new",
        &[
            ("csrf", &csrf),
            ("client_id", "library"),
            ("name", "Library"),
            ("redirect_uris", "https://library.example.org/cb"),
            ("scopes", "openid telepathy"),
            ("id_token_alg", "RS256"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("scopes[1]:"), "{body}");
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/apps/new",
        &[
            ("csrf", &csrf),
            ("client_id", "library"),
            ("name", "Library"),
            ("redirect_uris", "https://library.example.org/cb"),
            ("scopes", "openid profile email"),
            ("id_token_alg", "ES256"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("shown only once"), "{body}");
    let app = h.state.directory.get_app(&app_id).await.unwrap().unwrap();
    assert_eq!(app.tenant, TenantId::new("t1"));
    assert_eq!(app.id_token_alg, "ES256");
    assert!(app.secret_hash.is_some());
    // Edit: a bad URI changes nothing; a good edit saves; disable from the list.
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/apps/library/edit",
        &[
            ("csrf", &csrf),
            ("name", "Library"),
            ("redirect_uris", "http://library.example.org/cb"),
            ("enabled", "true"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("redirect_uris[0]:"), "{body}");
    let (status, _) = post_form(
        &admin,
        &h,
        "/console/apps/library/edit",
        &[
            ("csrf", &csrf),
            ("name", "School Library"),
            ("redirect_uris", "https://library.example.org/cb2"),
            ("enabled", "true"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let app = h.state.directory.get_app(&app_id).await.unwrap().unwrap();
    assert_eq!(app.name, "School Library");
    assert_eq!(app.redirect_uris, vec!["https://library.example.org/cb2"]);
    let (status, _) = post_form(
        &admin,
        &h,
        "/console/apps/library/enabled",
        &[("csrf", &csrf), ("enabled", "false")],
    )
    .await;
    assert_eq!(status, 303);
    assert!(
        !h.state
            .directory
            .get_app(&app_id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
    // Another tenant's app: not found.
    let mut t2 = app_record("t2-app", None, "RS256");
    t2.tenant = TenantId::new("t2");
    h.state.directory.upsert_app(&t2).await.unwrap();
    assert_eq!(page(&admin, &h, "/console/apps/t2-app/edit").await.0, 404);
    let (status, _) = post_form(
        &admin,
        &h,
        "/console/apps/t2-app/enabled",
        &[("csrf", &csrf), ("enabled", "false")],
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        h.state
            .directory
            .get_app(&homeroom_core::ClientId::new("t2-app"))
            .await
            .unwrap()
            .unwrap()
            .enabled
    );
}

/// A OneRoster 1.1 package (manifest, orgs, users) as zip bytes.
fn roster_zip(users: &str) -> Vec<u8> {
    use std::io::Write as _;
    let manifest = "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.academicSessions,absent\nfile.categories,absent\nfile.classes,absent\nfile.classResources,absent\nfile.courses,absent\nfile.courseResources,absent\nfile.demographics,absent\nfile.enrollments,absent\nfile.lineItems,absent\nfile.orgs,bulk\nfile.resources,absent\nfile.results,absent\nfile.users,bulk\nsource.systemName,Test SIS\n";
    let orgs = "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\nd1,,,District One,district,,\ns1,,,North School,school,NCES1,d1\n";
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in [
            ("manifest.csv", manifest),
            ("orgs.csv", orgs),
            ("users.csv", users),
        ] {
            zip.start_file(name, opts).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

const USERS_HEADER: &str = "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\n";

async fn upload(
    admin: &reqwest::Client,
    h: &Harness,
    csrf: Option<&str>,
    file: Vec<u8>,
) -> (u16, String) {
    // The body a browser sends for the form.
    let boundary = "----homeroomTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    if let Some(c) = csrf {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{c}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"roster.zip\"\r\nContent-Type: application/zip\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = admin
        .post(format!("{}/console/rosters", h.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn rosters_are_uploaded_with_problems_and_conflicts_listed() {
    let h = setup().await;
    let admin = signed_in(&h, ADMIN).await;
    let csrf = csrf(&admin, &h).await;
    let good = format!(
        "{USERS_HEADER}u1,,,true,s1,student,nia,,Nia,North,,1001,nia.north@demo.homeroom.test,,,,07,\nu2,,,true,s1,teacher,tom,,Tom,Teach,,2001,ada.lovelace@demo.homeroom.test,,,,,\n"
    );
    // No token: refused, nothing imported. No session: sent to sign in, nothing imported.
    let (status, _) = upload(&admin, &h, None, roster_zip(&good)).await;
    assert_eq!(status, 403);
    let (status, _) = upload(&browser(), &h, Some(&csrf), roster_zip(&good)).await;
    assert_eq!(status, 303);
    let student = signed_in(&h, STUDENT).await;
    let (status, _) = upload(&student, &h, Some(&csrf), roster_zip(&good)).await;
    assert_eq!(status, 403);
    let t1 = TenantId::new("t1");
    assert!(
        h.state
            .directory
            .roster_imports(&t1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Not a zip.
    let (status, body) = upload(&admin, &h, Some(&csrf), b"hello".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("not a zip"), "{body}");
    // A package with a bad row: the file, line, column and reason; nothing written.
    let bad = format!(
        "{USERS_HEADER}u1,,,maybe,s1,student,nia,,Nia,North,,1001,nia.north@demo.homeroom.test,,,,07,\n"
    );
    let (status, body) = upload(&admin, &h, Some(&csrf), roster_zip(&bad)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("<td>users.csv</td><td>2</td><td>enabledUser</td>"),
        "{body}"
    );
    assert!(body.contains("failed: nothing was written"), "{body}");
    // A good package: imported; the conflict (an email of an account the roster does
    // not manage) is listed, and the import is in the list with a detail page.
    let (status, body) = upload(&admin, &h, Some(&csrf), roster_zip(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ada.lovelace@demo.homeroom.test"), "{body}");
    assert!(body.contains("1 added"), "{body}");
    let imports = h.state.directory.roster_imports(&t1, 10).await.unwrap();
    assert_eq!(imports.len(), 2);
    let (status, body) = page(&admin, &h, &format!("/console/rosters/{}", imports[0].id)).await;
    assert_eq!(status, 200);
    assert!(body.contains("Conflicts"), "{body}");
    let (status, body) = page(&admin, &h, &format!("/console/rosters/{}", imports[1].id)).await;
    assert_eq!(status, 200);
    assert!(body.contains("enabledUser"), "{body}");
    assert_eq!(page(&admin, &h, "/console/rosters/nope").await.0, 404);
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .list_audit(&AuditFilter {
            kind: Some("admin.roster_import".into()),
            tenant: Some(t1.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
}

/// Add account: an email already in use is shown where it lives, with its fix as a button;
/// the fixes work; nothing is created while the email is in use.
#[tokio::test]
async fn add_account_says_where_the_email_lives_and_offers_the_fix() {
    let h = setup().await;
    let d = &h.state.directory;
    let mut old = account(
        "acc_old",
        "t1",
        "old.teacher@demo.homeroom.test",
        "Olive Oldham",
        vec![Role::Teacher],
    );
    old.status = AccountStatus::Archived;
    d.create_account(&old, None).await.unwrap();
    let admin = signed_in(&h, ADMIN).await;
    let csrf = csrf(&admin, &h).await;
    let before = d.count_accounts(Some(&TenantId::new("t1"))).await.unwrap();
    let (status, body) = page(&admin, &h, "/console/accounts/new").await;
    assert_eq!(status, 200);
    assert!(body.contains("name=\"send_invitation\""));
    // The archived account (hidden from the list) with a different case: restore.
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/accounts/new",
        &[
            ("csrf", &csrf),
            ("role", "teacher"),
            ("name", "Olive Oldham"),
            ("email", "Old.Teacher@Demo.Homeroom.Test"),
            ("send_invitation", "true"),
        ],
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already in use"), "{body}");
    assert!(body.contains("archived account"), "{body}");
    assert!(
        body.contains("action=\"/console/users/acc_old/status\""),
        "{body}"
    );
    // A student account, asked as a teacher, with dots dropped: add the role.
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/accounts/new",
        &[
            ("csrf", &csrf),
            ("role", "teacher"),
            ("name", "Zed Q"),
            ("email", "zedstudent@demo.homeroom.test"),
        ],
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("differs only in case, dots"), "{body}");
    assert!(
        body.contains("action=\"/console/users/acc_zed/roles\""),
        "{body}"
    );
    assert_eq!(
        d.count_accounts(Some(&TenantId::new("t1"))).await.unwrap(),
        before
    );
    // Apply the fix: the role is added (CSRF checked), audited.
    let (status, _) = post_form(
        &admin,
        &h,
        "/console/users/acc_zed/roles",
        &[("role", "teacher")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, loc) = post_form(
        &admin,
        &h,
        "/console/users/acc_zed/roles",
        &[("csrf", &csrf), ("role", "teacher")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(loc, "/console/users/acc_zed?done=role");
    let zed = d
        .get_account(&AccountId::new("acc_zed"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zed.roles, vec![Role::Student, Role::Teacher]);
    // Bad input: the field and the reason, nothing created.
    for (role, email, name, want) in [
        (
            "wizard",
            "new.person@demo.homeroom.test",
            "New Person",
            "role:",
        ),
        ("teacher", "not-an-email", "New Person", "email:"),
        ("teacher", "new.person@demo.homeroom.test", "", "name:"),
    ] {
        let (status, body) = post_form(
            &admin,
            &h,
            "/console/accounts/new",
            &[
                ("csrf", &csrf),
                ("role", role),
                ("name", name),
                ("email", email),
            ],
        )
        .await;
        assert_eq!(status, 400, "{want}");
        assert!(
            body.contains(&format!("class=\"field-error\">{want}")),
            "{want}: {body}"
        );
    }
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/accounts/new",
        &[
            ("csrf", &csrf),
            ("role", "teacher"),
            ("name", "New Person"),
            ("email", "new.person@demo.homeroom.test"),
            ("school", "nowhere"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("class=\"field-error\">school:"), "{body}");
    assert_eq!(
        d.count_accounts(Some(&TenantId::new("t1"))).await.unwrap(),
        before
    );
    // A new email: created, with the invitation link to copy.
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/accounts/new",
        &[
            ("csrf", &csrf),
            ("role", "teacher"),
            ("name", "New Person"),
            ("email", "new.person@demo.homeroom.test"),
            ("send_invitation", "true"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("The account was created."), "{body}");
    assert!(
        body.contains("class=\"copy\" readonly value=\"http"),
        "{body}"
    );
    // Again: the pending invitation, with "resend".
    let (status, body) = post_form(
        &admin,
        &h,
        "/console/accounts/new",
        &[
            ("csrf", &csrf),
            ("role", "teacher"),
            ("name", "New Person"),
            ("email", "new.person@demo.homeroom.test"),
        ],
    )
    .await;
    assert_eq!(status, 409);
    assert!(body.contains("invitation pending"), "{body}");
    assert!(body.contains("Resend the invitation"), "{body}");
    // The other tenant's account with the same name/email is never mentioned.
    let (_, body) = post_form(
        &admin,
        &h,
        "/console/accounts/new",
        &[
            ("csrf", &csrf),
            ("role", "student"),
            ("name", "Zed"),
            ("email", "zed.other@other.test"),
            ("send_invitation", "false"),
        ],
    )
    .await;
    assert!(!body.contains("acc_other"), "{body}");
}
