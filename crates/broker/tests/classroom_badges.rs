#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Classroom QR badges (sign-in from a trusted network only unless the tenant allows it,
//! revoked per learner, per class, by a newer sheet and by a new code, archived learners
//! refused, rate-limited, the QR code decoded back to the link) and the classroom actions
//! of the admin API (a teacher outside the class refused for each and nothing changed,
//! lead-teacher scope, IT tenant-wide, bad input, CSV formula neutralisation, OpenAPI).

mod common;
use common::*;
use homeroom_broker::classroom::CodeKey;
use homeroom_core::{AccountId, ClientId, TenantId};
use homeroom_directory::AccountStatus;

const GRACE: &str = "grace.hopper@demo.homeroom.test";
const OMAR: &str = "omar.haddad@demo.homeroom.test";

/// A fresh address on the school network (so only the per-badge limit counts).
fn school_ip() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("10.20.{}.{}", (n / 250) % 250, n % 250 + 1)
}
const HOME_IP: &str = "203.0.113.7";
const START: &str = "https://app.example.test/start";

fn enable(s: &mut homeroom_broker::Settings) {
    s.classroom.tenants.insert(TenantId::new("t1"));
    s.classroom.key = Some(CodeKey::new([42; 32]));
    s.trust_forwarded_for = true;
    s.classroom
        .badges
        .trusted
        .insert(TenantId::new("t1"), vec!["10.20.0.0/16".parse().unwrap()]);
}

fn enable_anywhere(s: &mut homeroom_broker::Settings) {
    enable(s);
    s.classroom.badges.anywhere.insert(TenantId::new("t1"));
}

async fn setup_with(tune: fn(&mut homeroom_broker::Settings)) -> Harness {
    let h = harness_with(Opts {
        tune: Some(tune),
        ..Opts::default()
    })
    .await;
    roster::class_fixture(&h).await;
    // The app badges continue to has a start page.
    let mut app = h
        .state
        .directory
        .get_app(&ClientId::new(APP))
        .await
        .unwrap()
        .unwrap();
    app.start_url = Some(START.into());
    h.state.directory.upsert_app(&app).await.unwrap();
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

fn between<'a>(body: &'a str, start: &str, end: &str) -> &'a str {
    body.split(start)
        .nth(1)
        .and_then(|s| s.split(end).next())
        .unwrap_or_else(|| panic!("{start} not in {body}"))
}

fn csrf_of(body: &str) -> String {
    between(body, "name=\"csrf\" value=\"", "\"").to_owned()
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

/// Reads a QR code back: rasterises the SVG's path (the renderer draws each dark run as
/// `M{left} {top}h{w}v{h}H{left}V{top}`) and decodes it with rqrr.
fn decode_qr(svg: &str) -> String {
    let w: usize = between(svg, "width=\"", "\"").parse().unwrap();
    let ht: usize = between(svg, "height=\"", "\"").parse().unwrap();
    let d = between(svg, " d=\"", "\"");
    let mut dark = vec![false; w * ht];
    for cmd in d.split('M').filter(|c| !c.is_empty()) {
        let (lt, rest) = cmd.split_once('h').unwrap();
        let (l, t) = lt.split_once(' ').unwrap();
        let (rw, rest) = rest.split_once('v').unwrap();
        let (rh, _) = rest.split_once('H').unwrap();
        let (l, t, rw, rh): (usize, usize, usize, usize) = (
            l.parse().unwrap(),
            t.parse().unwrap(),
            rw.parse().unwrap(),
            rh.parse().unwrap(),
        );
        for y in t..t + rh {
            for x in l..l + rw {
                dark[y * w + x] = true;
            }
        }
    }
    let mut img =
        rqrr::PreparedImage::prepare_from_greyscale(
            w,
            ht,
            |x, y| {
                if dark[y * w + x] { 0 } else { 255 }
            },
        );
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the SVG");
    grids[0].decode().unwrap().1
}

/// Prints class c1 with QR badges as `teacher` (for `app`); returns the badge links, in
/// card order (the learners by family name: Chen (u1), Okafor (u2), Patel (u3)).
async fn print_badges(b: &reqwest::Client, h: &Harness, app: &str) -> Vec<String> {
    let (status, sheet) = get(b, h, "/classroom/class/c1/print").await;
    assert_eq!(status, 200, "{sheet}");
    assert_eq!(sheet.matches("data-testid=\"qr-badge\"").count(), 0);
    let r = post(
        b,
        h,
        "/classroom/class/c1/print",
        &[("csrf", &csrf_of(&sheet)), ("app", app)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let sheet = r.text().await.unwrap();
    assert_eq!(sheet.matches("class=\"code-card\"").count(), 3);
    assert!(!sheet.contains("<script") && !sheet.contains("style="));
    let badges: Vec<String> = sheet
        .split("data-testid=\"qr-badge\">")
        .skip(1)
        .map(|s| decode_qr(s.split("</svg>").next().unwrap()))
        .collect();
    assert_eq!(badges.len(), 3, "one QR badge per card");
    for url in &badges {
        let token = url
            .strip_prefix(&format!("{}/badge/", h.base))
            .unwrap_or_else(|| panic!("{url}"));
        assert_eq!(token.len(), 43, "256-bit token");
        assert!(!sheet.contains(token), "the link is only in the QR code");
    }
    badges
}

async fn scan(b: &reqwest::Client, url: &str, ip: &str) -> reqwest::Response {
    b.get(url)
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

async fn events(h: &Harness, kind: &str) -> Vec<homeroom_directory::AuditEvent> {
    h.state.audit.flush().await;
    h.state
        .directory
        .list_audit(&homeroom_directory::AuditFilter {
            kind: Some(kind.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn badge_signs_in_from_the_school_network_only() {
    let h = setup_with(enable).await;
    let grace = signed_in(&h, GRACE).await;
    let badges = print_badges(&grace, &h, APP).await;
    // Tokens are stored hashed only.
    let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM classroom_badges")
        .fetch_all(h.state.directory.pool())
        .await
        .unwrap();
    assert_eq!(hashes.len(), 3);
    let maya_token = badges[0].rsplit('/').next().unwrap();
    assert!(hashes.contains(&homeroom_core::crypto::sha256_hex(maya_token)));
    assert!(!hashes.iter().any(|h| h == maya_token));

    // From home: refused, and nobody is signed in.
    let learner = browser();
    let r = scan(&learner, &badges[0], HOME_IP).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_network");
    assert!(events(&h, "classroom.badge_used").await.is_empty());

    // From the school network: signed in, on to the app the sheet was printed for.
    let r = scan(&learner, &badges[0], &school_ip()).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), START);
    let used = events(&h, "classroom.badge_used").await;
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].account, Some(account_of(&h, "u1").await));
    // The browser now has Maya's session: the app gets a code without a login page.
    let (v, c) = pkce();
    let r = follow(&learner, &h, &authorize_url(&h, APP, Some(&c), &[])).await;
    let loc = location(&r);
    assert!(loc.starts_with(CB), "{loc}");
    let code = query_param(&loc, "code").unwrap();
    let tokens = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let payload = id_token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], account_of(&h, "u1").await.as_str());

    // A badge printed for no app lands on the signed-in page.
    let badges = print_badges(&grace, &h, "").await;
    let r = scan(&browser(), &badges[1], &school_ip()).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("You are signed in"));
    // An app of another tenant cannot be named.
    let (_, sheet) = get(&grace, &h, "/classroom/class/c1/print").await;
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/print",
        &[("csrf", &csrf_of(&sheet)), ("app", "t2-app")],
    )
    .await;
    assert_eq!(page_code(r).await.1, "oauth.target_not_allowed");
}

#[tokio::test]
async fn badge_works_anywhere_when_the_tenant_allows_it() {
    let h = setup_with(enable_anywhere).await;
    let grace = signed_in(&h, GRACE).await;
    let badges = print_badges(&grace, &h, APP).await;
    let r = scan(&browser(), &badges[2], HOME_IP).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), START);
}

#[tokio::test]
async fn revoked_replaced_and_made_up_badges_are_refused() {
    let h = setup_with(enable).await;
    let grace = signed_in(&h, GRACE).await;
    let badges = print_badges(&grace, &h, APP).await;
    let made_up = format!("{}/badge/{}", h.base, "A".repeat(43));
    let r = scan(&browser(), &made_up, &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_invalid");
    let r = scan(&browser(), &format!("{}/badge/short", h.base), &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_invalid");

    // Per learner, from the learner page.
    let (_, page) = get(&grace, &h, "/classroom/class/c1/learner/u1").await;
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/badges/revoke",
        &[("csrf", &csrf_of(&page)), ("learner", "u1")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = scan(&browser(), &badges[0], &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_revoked");
    // Leo's still works (and keeps working: a badge is used every morning).
    for _ in 0..2 {
        let r = scan(&browser(), &badges[1], &school_ip()).await;
        assert_eq!(r.status(), 303);
    }
    // A new sign-in code revokes the learner's badge.
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/reset",
        &[
            ("csrf", &csrf_of(&page)),
            ("mode", "learner"),
            ("learner", "u2"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let r = scan(&browser(), &badges[1], &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_revoked");
    let revoked = events(&h, "classroom.badges_revoked").await;
    assert!(
        revoked.iter().any(|e| e.detail["reason"] == "code_reset"),
        "{revoked:?}"
    );
    // A newer sheet replaces every badge of the class.
    let newer = print_badges(&grace, &h, APP).await;
    let r = scan(&browser(), &badges[2], &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_revoked");
    // Per class, from the class page.
    let (_, class_page) = get(&grace, &h, "/classroom/class/c1").await;
    assert!(class_page.contains("Revoke every QR badge"));
    let r = post(
        &grace,
        &h,
        "/classroom/class/c1/badges/revoke",
        &[("csrf", &csrf_of(&class_page))],
    )
    .await;
    assert_eq!(r.status(), 303);
    for url in &newer {
        let r = scan(&browser(), url, &school_ip()).await;
        assert_eq!(page_code(r).await.1, "classroom.badge_revoked", "{url}");
    }
    // Another teacher cannot revoke (nor print) this class's badges.
    let omar = signed_in(&h, OMAR).await;
    let (_, own) = get(&omar, &h, "/classroom/class/c2").await;
    let r = post(
        &omar,
        &h,
        "/classroom/class/c1/badges/revoke",
        &[("csrf", &csrf_of(&own))],
    )
    .await;
    assert_eq!(page_code(r).await.1, "classroom.not_your_class");
    let r = post(
        &omar,
        &h,
        "/classroom/class/c1/print",
        &[("csrf", &csrf_of(&own)), ("app", APP)],
    )
    .await;
    assert_eq!(page_code(r).await.1, "classroom.not_your_class");
    // Without the CSRF token nothing is issued.
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM classroom_badges")
        .fetch_one(h.state.directory.pool())
        .await
        .unwrap();
    let r = post(&grace, &h, "/classroom/class/c1/print", &[("app", APP)]).await;
    assert_eq!(page_code(r).await.1, "session.csrf");
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM classroom_badges")
        .fetch_one(h.state.directory.pool())
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(events(&h, "classroom.badges_issued").await.len(), 2);
}

#[tokio::test]
async fn archived_learners_are_refused_and_badges_are_rate_limited() {
    let h = setup_with(enable).await;
    let grace = signed_in(&h, GRACE).await;
    let badges = print_badges(&grace, &h, APP).await;
    h.state
        .directory
        .set_account_status(&account_of(&h, "u3").await, AccountStatus::Archived)
        .await
        .unwrap();
    let r = scan(&browser(), &badges[2], &school_ip()).await;
    assert_eq!(page_code(r).await.1, "account.archived");
    assert!(events(&h, "classroom.badge_used").await.is_empty());
    // Hammering one badge hits the classroom rate limit.
    let mut limited = false;
    for _ in 0..15 {
        let r = scan(&browser(), &badges[2], &school_ip()).await;
        let (status, code, _) = page_code(r).await;
        if code == "limit.too_many_attempts" {
            assert_eq!(status, 429);
            limited = true;
            break;
        }
        assert_eq!(code, "account.archived");
    }
    assert!(limited, "the badge limit never applied");
}

// ---------------------------------------------------------------- admin API

const BOT: &str = "admin-bot";
const BOT_SECRET: &str = "admin-bot-secret";

async fn bot_token(h: &Harness) -> String {
    admin_bot_token(h, BOT, BOT_SECRET).await
}

/// A person's access token for the classroom API: the app is allowed `homeroom:classroom`
/// and asks for it (signed in through the sandbox).
async fn person_token(h: &Harness, user: &str) -> String {
    let mut app = h
        .state
        .directory
        .get_app(&ClientId::new(APP))
        .await
        .unwrap()
        .unwrap();
    if !app.allowed_scopes.iter().any(|s| s == "homeroom:classroom") {
        app.allowed_scopes.push("homeroom:classroom".into());
        h.state.directory.upsert_app(&app).await.unwrap();
        h.state.caches.forget_apps();
    }
    let b = browser();
    let (code, v) = login_scoped(&b, h, APP, user, "openid homeroom:classroom").await;
    json(redeem(h, APP, Some(APP_SECRET), &code, &v).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn api(h: &Harness, token: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}/admin/api/classroom{path}", h.base))
        .bearer_auth(token)
}

async fn api_get(h: &Harness, token: &str, path: &str) -> reqwest::Response {
    api(h, token, reqwest::Method::GET, path)
        .send()
        .await
        .unwrap()
}

async fn api_post(
    h: &Harness,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    api(h, token, reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Every row of the classroom tables, to prove nothing changed.
async fn snapshot(h: &Harness) -> Vec<String> {
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT account_id || ':' || code_enc || ':' || CAST(set_at AS TEXT) FROM classroom_codes",
    )
    .fetch_all(h.state.directory.pool())
    .await
    .unwrap();
    let badges: Vec<String> = sqlx::query_scalar(
        "SELECT token_hash || ':' || COALESCE(CAST(revoked_at AS TEXT), 'live') FROM classroom_badges",
    )
    .fetch_all(h.state.directory.pool())
    .await
    .unwrap();
    out.extend(badges);
    out.sort();
    out
}

#[tokio::test]
async fn api_refuses_a_teacher_outside_the_class_for_every_action_and_changes_nothing() {
    let h = setup_with(enable).await;
    // A teacher's ordinary sign-in token (what any app receives) is not an API credential.
    let b = browser();
    let (code, v) = login(&b, &h, APP, GRACE).await;
    let plain = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api_post(
        &h,
        &plain,
        "/class/c1/reset",
        serde_json::json!({"mode": "each"}),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(api_get(&h, &plain, "/classes").await.status() == 403);
    let grace_at = person_token(&h, GRACE).await;
    let grace = signed_in(&h, GRACE).await;
    // Grace, through the API, gives the class codes; and prints badges.
    let r = api_post(
        &h,
        &grace_at,
        "/class/c1/reset",
        serde_json::json!({"mode": "each"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["accounts"].as_array().unwrap().len(), 3);
    print_badges(&grace, &h, APP).await;
    let before = snapshot(&h).await;
    let resets_before = events(&h, "classroom.codes_reset").await.len();

    let omar_at = person_token(&h, OMAR).await;
    let classes = json(api_get(&h, &omar_at, "/classes").await).await;
    assert_eq!(
        classes,
        serde_json::json!([{"id": "c2", "title": "7B Maths", "school": "s1"}])
    );
    let gets = [
        "/class/c1/learners",
        "/class/c1/learners/u1/code",
        "/class/c1/codes.csv",
        "/school/s1/learners",
        "/school/s1/learners/u1/code",
        "/school/s1/codes.csv",
        // His own class does not reach a learner of another class.
        "/class/c2/learners/u1/code",
    ];
    for path in gets {
        let r = api_get(&h, &omar_at, path).await;
        assert_eq!(r.status(), 403, "{path}");
        let body = json(r).await;
        assert_eq!(body["error"], "classroom.not_your_class", "{path}");
        assert!(!body["reason"].as_str().unwrap().is_empty());
    }
    let posts = [
        (
            "/class/c1/reset",
            serde_json::json!({"mode": "learner", "learner": "u1"}),
        ),
        ("/class/c1/reset", serde_json::json!({"mode": "shared"})),
        ("/class/c1/reset", serde_json::json!({"mode": "each"})),
        ("/school/s1/reset", serde_json::json!({"mode": "each"})),
        (
            "/class/c2/reset",
            serde_json::json!({"mode": "learner", "learner": "u1"}),
        ),
        ("/class/c1/badges/revoke", serde_json::json!({})),
        (
            "/class/c1/badges/revoke",
            serde_json::json!({"learner": "u1"}),
        ),
        ("/school/s1/badges/revoke", serde_json::json!({})),
        (
            "/class/c2/badges/revoke",
            serde_json::json!({"learner": "u1"}),
        ),
    ];
    for (path, body) in posts {
        let r = api_post(&h, &omar_at, path, body.clone()).await;
        assert_eq!(r.status(), 403, "{path} {body}");
        assert_eq!(
            json(r).await["error"],
            "classroom.not_your_class",
            "{path} {body}"
        );
    }
    assert_eq!(snapshot(&h).await, before, "nothing changed");
    assert_eq!(
        events(&h, "classroom.codes_reset").await.len(),
        resets_before
    );
    assert!(events(&h, "classroom.code_shown").await.is_empty());
    // A learner's token is no teacher's.
    let maya_at = person_token(&h, "maya.chen@demo.homeroom.test").await;
    let r = api_get(&h, &maya_at, "/classes").await;
    assert_eq!(r.status(), 403);
    assert_eq!(api_get(&h, "nope", "/classes").await.status(), 401);

    // As lead teacher of s1, Omar may act on the whole school.
    let omar_id = account_of(&h, "t2").await;
    sqlx::query("UPDATE accounts SET roles = $1 WHERE id = $2")
        .bind("[\"teacher\",\"school_admin\"]")
        .bind(omar_id.as_str())
        .execute(h.state.directory.pool())
        .await
        .unwrap();
    let classes = json(api_get(&h, &omar_at, "/classes").await).await;
    let ids: Vec<&str> = classes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    let r = api_get(&h, &omar_at, "/school/s1/codes.csv").await;
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    for u in ["maya", "leo", "sam", "ana"] {
        assert!(csv.contains(&format!("\r\n{u},")), "{u} in {csv}");
    }
    let r = api_post(
        &h,
        &omar_at,
        "/class/c1/badges/revoke",
        serde_json::json!({"learner": "u1"}),
    )
    .await;
    assert_eq!(json(r).await["revoked"], 1);
    // Grace is no lead teacher.
    let r = api_get(&h, &grace_at, "/school/s1/codes.csv").await;
    assert_eq!(json(r).await["error"], "classroom.not_your_class");
}

#[tokio::test]
async fn api_it_admin_acts_tenant_wide_csv_is_neutralised_and_bad_input_changes_nothing() {
    let h = setup_with(enable).await;
    let it = bot_token(&h).await;
    let classes = json(api_get(&h, &it, "/classes").await).await;
    assert_eq!(classes.as_array().unwrap().len(), 2);
    let r = api_post(
        &h,
        &it,
        "/class/c1/reset",
        serde_json::json!({"mode": "shared"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let learners = json(api_get(&h, &it, "/class/c1/learners").await).await;
    let list = learners.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for l in list {
        assert_eq!(l["has_code"], true);
        assert!(l.get("code").is_none(), "never a code in a list: {l}");
    }
    let shown = json(api_get(&h, &it, "/class/c1/learners/u3/code").await).await;
    let code = shown["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    let shown_events = events(&h, "classroom.code_shown").await;
    assert_eq!(shown_events.len(), 1);
    assert_eq!(shown_events[0].detail["by"], format!("client:{BOT}"));

    let r = api_get(&h, &it, "/class/c1/codes.csv").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "username,name,sign_in_code,parent_access_code");
    let sam = lines.iter().find(|l| l.starts_with("sam,")).unwrap();
    assert!(sam.starts_with("sam,\"'=HYPERLINK("), "{sam}");
    assert!(sam.contains(&format!(",{code},")), "{sam}");
    assert!(!csv.contains(",=") && !csv.contains(",\"="), "{csv}");
    assert_eq!(events(&h, "classroom.codes_downloaded").await.len(), 1);

    // Bad input: 4xx with field and reason, nothing changed.
    let before = snapshot(&h).await;
    let bad = [
        (
            "/class/c1/reset",
            serde_json::json!({"mode": "bogus"}),
            400,
            "mode",
        ),
        (
            "/class/c1/reset",
            serde_json::json!({"mode": "learner"}),
            400,
            "learner",
        ),
        (
            "/class/c1/reset",
            serde_json::json!({"mode": "each", "learner": "u1"}),
            400,
            "learner",
        ),
        (
            "/school/s1/reset",
            serde_json::json!({"mode": "shared"}),
            400,
            "mode",
        ),
        (
            "/class/c1/reset",
            serde_json::json!({"mode": "each", "extra": 1}),
            400,
            "body",
        ),
        (
            "/district/d1/reset",
            serde_json::json!({"mode": "each"}),
            400,
            "kind",
        ),
        (
            "/class/nope/reset",
            serde_json::json!({"mode": "each"}),
            404,
            "id",
        ),
        (
            "/class/c1/reset",
            serde_json::json!({"mode": "learner", "learner": "u4"}),
            404,
            "learner",
        ),
        (
            "/class/c1/badges/revoke",
            serde_json::json!({"learner": ""}),
            400,
            "learner",
        ),
    ];
    for (path, body, status, field) in bad {
        let r = api_post(&h, &it, path, body.clone()).await;
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        let j = json(r).await;
        assert_eq!(j["field"], field, "{path} {body}: {j}");
        assert!(!j["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(snapshot(&h).await, before, "nothing changed");

    // IT revokes a class's badges.
    let grace = signed_in(&h, GRACE).await;
    let badges = print_badges(&grace, &h, APP).await;
    let r = api_post(&h, &it, "/class/c1/badges/revoke", serde_json::json!({})).await;
    assert_eq!(json(r).await["revoked"], 3);
    let r = scan(&browser(), &badges[0], &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_revoked");
    let learners = json(api_get(&h, &it, "/class/c1/learners").await).await;
    assert!(
        learners
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["has_badge"] == false)
    );
}

#[tokio::test]
async fn openapi_lists_the_classroom_endpoints() {
    let h = harness().await;
    let doc = json(
        reqwest::get(format!("{}/admin/api/openapi.json", h.base))
            .await
            .unwrap(),
    )
    .await;
    for p in [
        "/admin/api/classroom/classes",
        "/admin/api/classroom/{kind}/{id}/learners",
        "/admin/api/classroom/{kind}/{id}/learners/{user}/code",
        "/admin/api/classroom/{kind}/{id}/reset",
        "/admin/api/classroom/{kind}/{id}/codes.csv",
        "/admin/api/classroom/{kind}/{id}/badges/revoke",
        "/admin/api/tenant",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    assert!(doc["components"]["schemas"]["ResetIn"].is_object());
}

#[tokio::test]
async fn badges_and_the_api_on_postgres() {
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
    let badges = print_badges(&grace, &h, "").await;
    let r = scan(&browser(), &badges[0], &school_ip()).await;
    assert_eq!(r.status(), 200);
    let r = scan(&browser(), &badges[0], HOME_IP).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_network");
    let grace_at = person_token(&h, GRACE).await;
    let r = api_post(
        &h,
        &grace_at,
        "/class/c1/reset",
        serde_json::json!({"mode": "learner", "learner": "u1"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = scan(&browser(), &badges[0], &school_ip()).await;
    assert_eq!(page_code(r).await.1, "classroom.badge_revoked");
    let learners = json(api_get(&h, &grace_at, "/class/c1/learners").await).await;
    let has: Vec<bool> = learners
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["has_badge"].as_bool().unwrap())
        .collect();
    assert_eq!(has, [false, true, true]);
    let r = api_post(
        &h,
        &grace_at,
        "/class/c1/badges/revoke",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(json(r).await["revoked"], 2);
}
