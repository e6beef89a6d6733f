//! The IT web console under `/console`: server-rendered pages (askama, auto-escaped, no
//! inline script or style) over the same logic as the admin API in [`crate::admin`].
//!
//! - Authentication: the browser's Homeroom SSO session of an active account holding the
//!   `it_admin` role. Without a session a page redirects to Homeroom's own sign-in and
//!   remembers the page (the `hr_console_return` cookie, only same-origin `/console`
//!   paths: [`safe_console_path`]); the sign-in pipeline returns there
//!   ([`return_target`]). Other accounts get 403. Everything is scoped to the admin's
//!   tenant: another tenant's objects are "not found".
//! - Every POST form carries the CSRF double-submit token (the `hr_csrf` cookie, also used
//!   by the password pages) and is refused when the token is missing or wrong, or when its
//!   `Origin` is not ours. Every change is audited by the admin module's helpers, naming the
//!   admin (`account:<id>`).
//! - Pages: dashboard (sign-ins of the last 24 hours per hour as an SVG chart, by outcome,
//!   provider and code as `<meter>` bars, top failure reasons), users (search, role tabs,
//!   profile with the troubleshooter's checklist, local password facts, email log and
//!   actions), add account (`console::accounts`), troubleshooter, events and traces, providers
//!   and apps (list, add, edit, enable/disable, test connection: `console::config`), roster
//!   imports and uploads (`console::rosters`).

use crate::AppState;
use crate::admin::{self, Admin};
use crate::audit::{self, Ev};
use crate::pages::html;
use crate::troubleshoot::{AccountReport, FailureLine, Finding, LookAlike, TraceStep};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use homeroom_core::clock::rfc3339;
use homeroom_core::{AccountId, ClientId, LoginError, ProviderId, RefId, Role};
use homeroom_directory::{Account, AccountStatus, AuditFilter, DirectoryError};
use http::{HeaderMap, StatusCode};
use std::collections::{BTreeMap, HashMap};

mod accounts;
mod config;
mod rosters;

/// Why a console page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("session store: {0}")]
    Session(String),
}

/// The signed-in admin as the page chrome shows it.
pub struct Me {
    pub name: String,
    pub tenant_name: String,
    /// Which navigation entry is current.
    pub section: &'static str,
    /// The CSRF double-submit token every form carries.
    pub csrf: String,
}

/// A console request by an authenticated admin.
struct Ctx {
    admin: Admin,
    me: Me,
    fresh_csrf: bool,
}

#[derive(Template)]
#[template(path = "console_message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    button_href: &'a str,
    button_label: &'a str,
    hint: &'a str,
}

fn message(status: StatusCode, title: &str, message: &str) -> Response {
    html(
        status,
        &MessagePage {
            title,
            message,
            button_href: "",
            button_label: "",
            hint: "",
        },
    )
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console internal error");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The console could not load this page. The details are in the server log.",
    )
}

fn not_found(what: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no such {what} in your tenant."),
    )
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A same-origin console path (`/console`, `/console/...`, `/console?...`) fit to return
/// to after sign-in; anything else (another origin, `//host`, backslashes, `..` segments,
/// control characters) is refused, so the return target is never an open redirect.
pub fn safe_console_path(p: &str) -> Option<String> {
    let rest = p.strip_prefix("/console")?;
    let boundary_ok = rest.is_empty() || rest.starts_with('/') || rest.starts_with('?');
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let clean = p.len() <= 1000
        && !p.contains("//")
        && !p.contains('\\')
        && !p.contains('#')
        && !p.chars().any(|c| c.is_control() || c.is_whitespace())
        && !path.split('/').any(|seg| {
            let seg = seg.to_ascii_lowercase();
            seg == ".."
                || seg == "."
                || seg.contains("%2e")
                || seg.contains("%2f")
                || seg.contains("%5c")
        });
    (boundary_ok && clean).then(|| p.to_owned())
}

/// The console page an admin asked for before signing in (the `hr_console_return` cookie,
/// checked again here), for the sign-in pipeline to return to.
pub fn return_target(headers: &HeaderMap, secure: bool) -> Option<String> {
    let crate::cookies::CookieValue::One(raw) =
        crate::cookies::read(headers, crate::cookies::CONSOLE_RETURN, secure)
    else {
        return None;
    };
    let decoded = url::form_urlencoded::parse(format!("v={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    safe_console_path(&decoded)
}

/// Without a session: straight to Homeroom's own sign-in (the tenant's login page when it
/// is known from `?tenant=` or is the only one), remembering the page asked for.
async fn sign_in_redirect(state: &AppState, uri: Option<&http::Uri>) -> Response {
    let wanted = uri
        .and_then(|u| u.path_and_query())
        .map(|pq| pq.as_str().to_owned())
        .and_then(|p| safe_console_path(&p))
        .unwrap_or_else(|| "/console".to_owned());
    let hint = uri.and_then(|u| u.query()).and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "tenant")
            .map(|(_, v)| v.into_owned())
    });
    let tenant = match hint.filter(|t| !t.is_empty() && t.len() <= 100) {
        Some(t) => Some(t),
        None => match state.directory.list_tenants().await {
            Ok(list) if list.len() == 1 => list.first().map(|t| t.id.to_string()),
            _ => None,
        },
    };
    let href = match tenant {
        Some(t) => format!("/login?tenant={}", enc(&t)),
        None => "/login".to_owned(),
    };
    let mut r = crate::respond::redirect(StatusCode::SEE_OTHER, &href);
    let cookie = crate::cookies::set(
        crate::cookies::CONSOLE_RETURN,
        &enc(&wanted),
        state.settings.secure_cookies,
        Some(600),
    );
    if let Ok(v) = http::HeaderValue::from_str(&cookie) {
        r.headers_mut().append(http::header::SET_COOKIE, v);
    }
    r
}

/// The signed-in it_admin, or the page to show instead (sign in, or 403). `uri` is the
/// page asked for (GET), to come back to after signing in.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    section: &'static str,
    uri: Option<&http::Uri>,
) -> Result<Ctx, Response> {
    let session = match crate::pipeline::current_session(state, headers).await {
        Ok(s) => s,
        Err(r) => return Err(failed(ConsoleError::Session(r.detail))),
    };
    let Some((_, session)) = session else {
        return Err(sign_in_redirect(state, uri).await);
    };
    let account = match state.directory.get_account(&session.account).await {
        Ok(a) => a,
        Err(e) => return Err(failed(e)),
    };
    let Some(account) = account.filter(|a| {
        a.status == AccountStatus::Active
            && a.roles.contains(&Role::ItAdmin)
            && a.tenant == session.tenant
    }) else {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Not for this account",
            "The console is only for active accounts with the IT administrator role. Ask your IT team if you need access.",
        ));
    };
    let tenant_name = match state.directory.get_tenant(&account.tenant).await {
        Ok(t) => t
            .map(|t| t.name)
            .unwrap_or_else(|| account.tenant.to_string()),
        Err(e) => return Err(failed(e)),
    };
    let Some((csrf, fresh_csrf)) = crate::local::csrf_token(state, headers) else {
        return Err(failed("randomness unavailable"));
    };
    Ok(Ctx {
        me: Me {
            name: account
                .name
                .clone()
                .or_else(|| account.email.clone())
                .unwrap_or_else(|| account.id.to_string()),
            tenant_name,
            section,
            csrf,
        },
        admin: Admin {
            tenant: account.tenant.clone(),
            actor: format!("account:{}", account.id),
        },
        fresh_csrf,
    })
}

/// [`authenticate`] for a form POST, which also needs a valid CSRF token and our origin.
async fn authenticate_post(
    state: &AppState,
    headers: &HeaderMap,
    section: &'static str,
    form: &HashMap<String, String>,
) -> Result<Ctx, Response> {
    let ctx = authenticate(state, headers, section, None).await?;
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !crate::local::csrf_ok(state, headers, token) {
        audit::record(
            state,
            None,
            "console.csrf_refused",
            Ev {
                tenant: Some(ctx.admin.tenant.clone()),
                code: Some(LoginError::Csrf.code().to_owned()),
                ..Default::default()
            }
            .detail(serde_json::json!({"by": ctx.admin.actor})),
        );
        return Err(message(
            StatusCode::FORBIDDEN,
            "The form expired",
            "This form could not be checked (it was sent from another site, or it is too old). Nothing was changed. Go back, reload the page and try again.",
        ));
    }
    Ok(ctx)
}

fn render<T: Template>(state: &AppState, ctx: &Ctx, status: StatusCode, t: &T) -> Response {
    crate::local::with_csrf(state, html(status, t), &ctx.me.csrf, ctx.fresh_csrf)
}

fn see_other(to: &str) -> Response {
    crate::respond::redirect(StatusCode::SEE_OTHER, to)
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

type FormResult =
    Result<axum::Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>;

fn form_fields(f: FormResult) -> HashMap<String, String> {
    f.map(|axum::Form(m)| m).unwrap_or_default()
}

// ---------------------------------------------------------------- dashboard

struct Bar {
    label: String,
    value: usize,
    tone: &'static str,
}

struct ProviderRow {
    label: String,
    ok: usize,
    refused: usize,
}

/// One hour of the last 24, as a stacked SVG bar (heights in chart units).
struct HourBar {
    x: usize,
    label: String,
    ok: usize,
    refused: usize,
    ok_y: usize,
    ok_h: usize,
    bad_y: usize,
    bad_h: usize,
}

/// Height of the hourly chart's plot area, in SVG units.
const CHART_H: usize = 100;

/// The last 24 hours in hourly buckets (oldest first), scaled to [`CHART_H`].
fn hourly(now: i64, ok: &[i64], bad: &[i64]) -> (Vec<HourBar>, usize) {
    let mut counts = [(0usize, 0usize); 24];
    let bucket = |at_ms: i64| {
        let age = now.saturating_sub(at_ms / 1000);
        (0..24 * 3600)
            .contains(&age)
            .then(|| 23 - usize::try_from(age / 3600).unwrap_or(23).min(23))
    };
    for at in ok {
        if let Some(i) = bucket(*at) {
            counts[i].0 += 1;
        }
    }
    for at in bad {
        if let Some(i) = bucket(*at) {
            counts[i].1 += 1;
        }
    }
    let max = counts.iter().map(|(o, b)| o + b).max().unwrap_or(0).max(1);
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, &(o, b))| {
            let ok_h = o * CHART_H / max;
            let bad_h = b * CHART_H / max;
            let hours_ago = 23 - i;
            HourBar {
                x: i * 30,
                label: if hours_ago == 0 {
                    "this hour".into()
                } else {
                    format!("{hours_ago} h ago")
                },
                ok: o,
                refused: b,
                ok_y: CHART_H - ok_h,
                ok_h,
                bad_y: CHART_H - ok_h - bad_h,
                bad_h,
            }
        })
        .collect();
    (bars, max)
}

struct CodeRow {
    code: String,
    value: usize,
    guidance: String,
}

#[derive(Template)]
#[template(path = "console_dashboard.html")]
struct DashboardPage<'a> {
    me: &'a Me,
    total: usize,
    succeeded: usize,
    refused: usize,
    truncated: bool,
    by_outcome: Vec<Bar>,
    max_outcome: usize,
    by_provider: Vec<ProviderRow>,
    max_provider: usize,
    by_code: Vec<CodeRow>,
    max_code: usize,
    hours: Vec<HourBar>,
    hour_max: usize,
}

const WINDOW_LIMIT: i64 = 1000;

async fn dashboard(State(state): State<AppState>, headers: HeaderMap, uri: http::Uri) -> Response {
    let ctx = match authenticate(&state, &headers, "dashboard", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    state.audit.flush().await;
    let since = (state.now() - 24 * 3600).saturating_mul(1000);
    let window = |kind: &str| AuditFilter {
        tenant: Some(ctx.admin.tenant.clone()),
        kind: Some(kind.into()),
        since_ms: Some(since),
        limit: WINDOW_LIMIT,
        ..Default::default()
    };
    let ok = match state.directory.list_audit(&window("login.success")).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let bad = match state.directory.list_audit(&window("login.refused")).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let truncated = ok.len() as i64 >= WINDOW_LIMIT || bad.len() as i64 >= WINDOW_LIMIT;
    let mut providers: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let label = |p: &Option<ProviderId>| {
        p.as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "Homeroom password / none".into())
    };
    for e in &ok {
        providers.entry(label(&e.provider)).or_default().0 += 1;
    }
    let mut codes: HashMap<String, (usize, String)> = HashMap::new();
    for e in &bad {
        providers.entry(label(&e.provider)).or_default().1 += 1;
        let code = e.code.clone().unwrap_or_else(|| "unknown".into());
        let entry = codes.entry(code).or_insert_with(|| {
            let guidance = e
                .detail
                .get("error")
                .and_then(|v| serde_json::from_value::<LoginError>(v.clone()).ok())
                .map(|err| err.it_guidance())
                .unwrap_or_default();
            (0, guidance)
        });
        entry.0 += 1;
    }
    let mut by_code: Vec<CodeRow> = codes
        .into_iter()
        .map(|(code, (value, guidance))| CodeRow {
            code,
            value,
            guidance,
        })
        .collect();
    by_code.sort_by(|a, b| b.value.cmp(&a.value).then(a.code.cmp(&b.code)));
    by_code.truncate(10);
    let by_provider: Vec<ProviderRow> = providers
        .into_iter()
        .map(|(label, (ok, refused))| ProviderRow { label, ok, refused })
        .collect();
    let (hours, hour_max) = hourly(
        state.now(),
        &ok.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        &bad.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
    );
    let page = DashboardPage {
        me: &ctx.me,
        hours,
        hour_max,
        total: ok.len() + bad.len(),
        succeeded: ok.len(),
        refused: bad.len(),
        truncated,
        max_outcome: ok.len().max(bad.len()).max(1),
        by_outcome: vec![
            Bar {
                label: "Signed in".into(),
                value: ok.len(),
                tone: "ok",
            },
            Bar {
                label: "Refused".into(),
                value: bad.len(),
                tone: "bad",
            },
        ],
        max_provider: by_provider
            .iter()
            .map(|p| p.ok.max(p.refused))
            .max()
            .unwrap_or(0)
            .max(1),
        by_provider,
        max_code: by_code.first().map(|c| c.value).unwrap_or(1).max(1),
        by_code,
    };
    render(&state, &ctx, StatusCode::OK, &page)
}

// ---------------------------------------------------------------- users

struct Tab {
    label: &'static str,
    href: String,
    current: bool,
}

struct UserRow {
    id: String,
    name: String,
    login: String,
    roles: String,
    status: String,
}

#[derive(Template)]
#[template(path = "console_users.html")]
struct UsersPage<'a> {
    me: &'a Me,
    q: &'a str,
    role: &'a str,
    tabs: Vec<Tab>,
    notice: String,
    results: Vec<UserRow>,
}

#[derive(serde::Deserialize, Default)]
struct UsersQuery {
    q: Option<String>,
    role: Option<String>,
}

fn roles_text(a: &Account) -> String {
    a.roles
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn users(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    q: QueryResult<UsersQuery>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "users", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let UsersQuery { q, role } = q.map(|Query(q)| q).unwrap_or_default();
    let q = q.unwrap_or_default();
    let query = q.trim();
    let role_s = role.unwrap_or_default();
    let role = match role_s.as_str() {
        "" => None,
        r => match r.parse::<Role>() {
            Ok(r) => Some(r),
            Err(_) => return message(StatusCode::BAD_REQUEST, "Unknown role", "Pick a tab."),
        },
    };
    let tabs = [
        ("All", ""),
        ("Teachers", "teacher"),
        ("Students", "student"),
        ("Staff", "staff"),
        ("School admins", "school_admin"),
        ("District admins", "district_admin"),
        ("Guardians", "guardian"),
        ("IT admins", "it_admin"),
    ]
    .into_iter()
    .map(|(label, r)| Tab {
        label,
        href: match (query.is_empty(), r.is_empty()) {
            (true, true) => "/console/users".into(),
            (true, false) => format!("/console/users?role={r}"),
            (false, true) => format!("/console/users?q={}", enc(query)),
            (false, false) => format!("/console/users?q={}&role={r}", enc(query)),
        },
        current: r == role_s,
    })
    .collect();
    let mut notice = String::new();
    let mut results = Vec::new();
    if query.chars().count() < 3 || query.len() > 320 {
        if !query.is_empty() {
            notice = "Type at least 3 letters of a name, email or username.".into();
        }
    } else {
        match state
            .directory
            .search_accounts(&ctx.admin.tenant, query, role, 50)
            .await
        {
            Ok(list) => {
                if list.is_empty() {
                    notice =
                        "Nobody in your tenant matches. Try the troubleshooter for a wider look."
                            .into();
                }
                results = list
                    .iter()
                    .map(|a| UserRow {
                        id: a.id.to_string(),
                        name: a.name.clone().unwrap_or_else(|| "(no name)".into()),
                        login: a
                            .email
                            .clone()
                            .or_else(|| a.username.clone())
                            .unwrap_or_default(),
                        roles: roles_text(a),
                        status: a.status.as_str().into(),
                    })
                    .collect();
            }
            Err(e) => return failed(e),
        }
    }
    let page = UsersPage {
        me: &ctx.me,
        q: query,
        role: &role_s,
        tabs,
        notice,
        results,
    };
    render(&state, &ctx, StatusCode::OK, &page)
}

struct Action {
    path: &'static str,
    status: &'static str,
    label: &'static str,
}

struct MailRow {
    at: String,
    kind: String,
    to: String,
    subject: String,
    status: String,
}

#[derive(Template)]
#[template(path = "console_user.html")]
struct UserPage<'a> {
    me: &'a Me,
    id: String,
    name: String,
    status: String,
    email: String,
    username: String,
    roles: String,
    providers: String,
    notice: &'a str,
    link: &'a str,
    link_label: &'a str,
    link_expires: String,
    actions: Vec<Action>,
    findings: Vec<Finding>,
    look_alikes: Vec<LookAlike>,
    failures: Vec<FailureLine>,
    local: Vec<(&'static str, String)>,
    emails: Vec<MailRow>,
}

/// The account with this id in the admin's tenant, or the 404 page.
async fn own_account(state: &AppState, admin: &Admin, id: &str) -> Result<Account, Response> {
    match state.directory.get_account(&AccountId::new(id)).await {
        Ok(Some(a)) if a.tenant == admin.tenant => Ok(a),
        Ok(_) => Err(not_found("account")),
        Err(e) => Err(failed(e)),
    }
}

/// A link IT just issued, shown once on the profile.
struct Issued<'a> {
    label: &'a str,
    url: String,
    expires_at: Option<i64>,
}

async fn profile_page(
    state: &AppState,
    ctx: &Ctx,
    a: Account,
    notice: &str,
    issued: Option<Issued<'_>>,
) -> Response {
    let report: AccountReport =
        match crate::troubleshoot::account_report(&state.directory, &a, state.now()).await {
            Ok(r) => r,
            Err(e) => return failed(e),
        };
    let local = match crate::local::status(state, &a.id).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let emails = match crate::local::email_log(state, &a.id).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let mut actions = Vec::new();
    if a.status == AccountStatus::Active {
        actions.push(Action {
            path: "status",
            status: "archived",
            label: "Archive",
        });
        actions.push(Action {
            path: "status",
            status: "suspended",
            label: "Suspend",
        });
    } else {
        actions.push(Action {
            path: "status",
            status: "active",
            label: "Activate",
        });
    }
    let mut local_facts = Vec::new();
    match &local {
        Some(s) => {
            if s.locked_until.is_some() || s.failed_attempts > 0 {
                actions.push(Action {
                    path: "unlock",
                    status: "",
                    label: "Unlock",
                });
            }
            if s.password_set {
                actions.push(Action {
                    path: "reset",
                    status: "",
                    label: "Copy a reset link",
                });
            } else {
                actions.push(Action {
                    path: "invitation",
                    status: "",
                    label: "Copy an invitation link",
                });
            }
            local_facts.push((
                "Password",
                match s.password_set_at {
                    Some(t) if s.password_set => format!("set {}", rfc3339(t)),
                    _ if s.password_set => "set".into(),
                    _ => "not set yet".into(),
                },
            ));
            local_facts.push(("Failed attempts", s.failed_attempts.to_string()));
            if let Some(t) = s.last_failed_at {
                local_facts.push(("Last failed attempt", rfc3339(t)));
            }
            local_facts.push((
                "Locked",
                s.locked_until
                    .map(|t| format!("until {}", rfc3339(t)))
                    .unwrap_or_else(|| "no".into()),
            ));
            if let Some(i) = &s.pending_invitation {
                local_facts.push((
                    "Pending invitation",
                    format!("sent {} by {}", rfc3339(i.created_at), i.created_by),
                ));
            }
            if let Some(r) = &s.pending_reset {
                local_facts.push((
                    "Pending reset",
                    format!(
                        "sent {}, expires {}",
                        rfc3339(r.sent_at),
                        rfc3339(r.expires_at)
                    ),
                ));
            }
        }
        None => {
            let has_links = !admin::account_out(state, a.clone())
                .await
                .providers
                .is_empty();
            if !has_links {
                actions.push(Action {
                    path: "invitation",
                    status: "",
                    label: "Copy an invitation link",
                });
                local_facts.push((
                    "Password",
                    "none yet, and no provider linked: copy an invitation link so the person can set one".into(),
                ));
            }
        }
    }
    let out = admin::account_out(state, a.clone()).await;
    let (link, link_label, link_expires) = match &issued {
        Some(i) => (
            i.url.as_str(),
            i.label,
            i.expires_at.map(rfc3339).unwrap_or_default(),
        ),
        None => ("", "", String::new()),
    };
    let page = UserPage {
        me: &ctx.me,
        id: out.id,
        name: out.name.unwrap_or_else(|| "(no name)".into()),
        status: out.status,
        email: out
            .email
            .map(|e| {
                format!(
                    "{e} ({})",
                    if out.email_verified {
                        "verified"
                    } else {
                        "not verified"
                    }
                )
            })
            .unwrap_or_else(|| "none".into()),
        username: out.username.unwrap_or_else(|| "none".into()),
        roles: out.roles.join(", "),
        providers: if out.providers.is_empty() {
            "none".into()
        } else {
            out.providers.join(", ")
        },
        notice,
        link,
        link_label,
        link_expires,
        actions,
        findings: report.findings,
        look_alikes: report.look_alikes,
        failures: report.recent_failures,
        local: local_facts,
        emails: emails
            .into_iter()
            .map(|m| MailRow {
                at: rfc3339(m.created_at),
                kind: m.kind,
                to: m.to,
                subject: m.subject,
                status: m.status.as_str().into(),
            })
            .collect(),
    };
    render(state, ctx, StatusCode::OK, &page)
}

#[derive(serde::Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

async fn user(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(id): Path<String>,
    q: QueryResult<DoneQuery>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "users", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let a = match own_account(&state, &ctx.admin, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let notice = match q.ok().and_then(|Query(q)| q.done).as_deref() {
        Some("status") => "The account's status was changed.",
        Some("role") => "The role was added to the account.",
        Some("unlocked") => "The account was unlocked.",
        Some("not_locked") => "The account was not locked.",
        _ => "",
    };
    profile_page(&state, &ctx, a, notice, None).await
}

fn local_refusal(e: crate::local::LocalError) -> Option<&'static str> {
    use crate::local::LocalError as L;
    match e {
        L::SsoOnly(_) => Some(
            "This account signs in through a school provider; its password lives there, not in Homeroom.",
        ),
        L::PasswordAlreadySet => {
            Some("The account already has a password: copy a reset link instead.")
        }
        L::NotLocal => Some("The account has no Homeroom password: send an invitation first."),
        L::NoLogin => Some("The account has no email or username to sign in with."),
        L::NoAccount => Some("No such account."),
        L::Random | L::Directory(_) => None,
    }
}

async fn user_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    form: FormResult,
) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "users", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let a = match own_account(&state, &ctx.admin, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let back = format!("/console/users/{}", enc(a.id.as_str()));
    match action.as_str() {
        "status" => {
            let Some(status) = form.get("status").and_then(|s| AccountStatus::parse(s)) else {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Unknown status",
                    "The status must be active, suspended or archived. Nothing was changed.",
                );
            };
            if let Err(e) = admin::set_status(&state, &ctx.admin, &a, status).await {
                return failed(e);
            }
            see_other(&format!("{back}?done=status"))
        }
        "roles" => {
            let Some(role) = form.get("role").and_then(|r| r.parse::<Role>().ok()) else {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Unknown role",
                    "Pick a role from the list. Nothing was changed.",
                );
            };
            match crate::admin_accounts::add_role(&state, &ctx.admin, &a, role).await {
                Ok(_) => see_other(&format!("{back}?done=role")),
                Err(e) => failed(e),
            }
        }
        "unlock" => match crate::local::unlock(&state, &a.id, &ctx.admin.actor).await {
            Ok(true) => see_other(&format!("{back}?done=unlocked")),
            Ok(false) => see_other(&format!("{back}?done=not_locked")),
            Err(e) => match local_refusal(e) {
                Some(why) => profile_page(&state, &ctx, a, why, None).await,
                None => failed("unlock failed"),
            },
        },
        "invitation" | "reset" => {
            let invitation = action == "invitation";
            let result = if invitation {
                crate::local::invite(&state, &a.id, &ctx.admin.actor).await
            } else {
                crate::local::issue_reset(&state, &a.id, &ctx.admin.actor).await
            };
            match result {
                Ok(link) => {
                    admin::changed(
                        &state,
                        &ctx.admin,
                        if invitation {
                            "admin.invitation_issued"
                        } else {
                            "admin.reset_issued"
                        },
                        serde_json::json!({"account": a.id, "via": "console"}),
                    );
                    let label = if invitation {
                        "Invitation link (it never expires; first use sets a password)"
                    } else {
                        "Password reset link (single use)"
                    };
                    profile_page(
                        &state,
                        &ctx,
                        a,
                        "A new link was issued.",
                        Some(Issued {
                            label,
                            url: link.url,
                            expires_at: link.expires_at,
                        }),
                    )
                    .await
                }
                Err(e) => match local_refusal(e) {
                    Some(why) => profile_page(&state, &ctx, a, why, None).await,
                    None => failed("issuing a link failed"),
                },
            }
        }
        _ => not_found("action"),
    }
}

// ---------------------------------------------------------------- troubleshooter, events

impl TraceStep {
    /// The step's detail as indented JSON, for the page.
    pub fn detail_text(&self) -> String {
        serde_json::to_string_pretty(&self.detail).unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "console_troubleshoot.html")]
struct TroubleshootPage<'a> {
    me: &'a Me,
    q: &'a str,
    notice: &'a str,
    accounts: Vec<AccountReport>,
    trace: Vec<TraceStep>,
}

#[derive(serde::Deserialize, Default)]
struct QQuery {
    q: Option<String>,
}

async fn troubleshooter(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    q: QueryResult<QQuery>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "troubleshoot", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = q.ok().and_then(|Query(q)| q.q).unwrap_or_default();
    let query = q.trim();
    let (mut accounts, mut trace, mut notice) = (Vec::new(), Vec::new(), "");
    if query.chars().count() < 3 || query.len() > 320 {
        if !query.is_empty() {
            notice = "Type at least 3 characters.";
        }
    } else {
        match admin::troubleshoot_answer(&state, &ctx.admin.tenant, query).await {
            Ok(out) => {
                accounts = out.accounts;
                trace = out.trace;
                if accounts.is_empty() && trace.is_empty() {
                    notice = if query.starts_with("HR-") {
                        "No attempt with this reference in your tenant. Check the reference on the student's error page."
                    } else {
                        "Nobody in your tenant matches: the account may not exist yet, or may be in another district."
                    };
                }
            }
            Err(e) => return failed(e),
        }
    }
    let page = TroubleshootPage {
        me: &ctx.me,
        q: query,
        notice,
        accounts,
        trace,
    };
    render(&state, &ctx, StatusCode::OK, &page)
}

struct EventRow {
    at: String,
    kind: String,
    code: String,
    provider: String,
    app: String,
    reference: String,
}

#[derive(Template)]
#[template(path = "console_events.html")]
struct EventsPage<'a> {
    me: &'a Me,
    code: &'a str,
    provider: &'a str,
    app: &'a str,
    events: Vec<EventRow>,
}

#[derive(serde::Deserialize, Default)]
struct EventsQuery {
    code: Option<String>,
    provider: Option<String>,
    app: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 100)
        .map(str::to_owned)
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    q: QueryResult<EventsQuery>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "events", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let (code, provider, app) = (nonempty(&q.code), nonempty(&q.provider), nonempty(&q.app));
    state.audit.flush().await;
    let filter = AuditFilter {
        tenant: Some(ctx.admin.tenant.clone()),
        code: code.clone(),
        provider: provider.clone().map(ProviderId::new),
        client: app.clone().map(ClientId::new),
        limit: 200,
        ..Default::default()
    };
    let list = match state.directory.list_audit(&filter).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let events = list
        .into_iter()
        .map(admin::event_out)
        .map(|e| EventRow {
            at: rfc3339(e.at_ms / 1000),
            kind: e.kind,
            code: e.code.unwrap_or_default(),
            provider: e.provider.unwrap_or_default(),
            app: e.app.unwrap_or_default(),
            reference: e.reference.unwrap_or_default(),
        })
        .collect();
    let page = EventsPage {
        me: &ctx.me,
        code: code.as_deref().unwrap_or(""),
        provider: provider.as_deref().unwrap_or(""),
        app: app.as_deref().unwrap_or(""),
        events,
    };
    render(&state, &ctx, StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "console_trace.html")]
struct TracePage<'a> {
    me: &'a Me,
    reference: &'a str,
    trace: Vec<TraceStep>,
}

async fn trace(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(reference): Path<String>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "events", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if reference.len() > 100 {
        return not_found("reference");
    }
    state.audit.flush().await;
    let steps = match crate::troubleshoot::trace(
        &state.directory,
        &RefId::new(reference.clone()),
        Some(&ctx.admin.tenant),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let status = if steps.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let page = TracePage {
        me: &ctx.me,
        reference: &reference,
        trace: steps,
    };
    render(&state, &ctx, status, &page)
}

// ---------------------------------------------------------------- providers, apps, rosters

struct ProviderLine {
    id: String,
    kind: String,
    display_name: String,
    enabled: bool,
}

#[derive(Template)]
#[template(path = "console_providers.html")]
struct ProvidersPage<'a> {
    me: &'a Me,
    notice: &'a str,
    tested: &'a str,
    checks: Vec<crate::connection::ConnectionFinding>,
    providers: Vec<ProviderLine>,
}

async fn providers_page(
    state: &AppState,
    ctx: &Ctx,
    notice: &str,
    tested: &str,
    checks: Vec<crate::connection::ConnectionFinding>,
) -> Response {
    let list = match state
        .directory
        .list_providers(Some(&ctx.admin.tenant))
        .await
    {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let page = ProvidersPage {
        me: &ctx.me,
        notice,
        tested,
        checks,
        providers: list
            .into_iter()
            .map(|p| ProviderLine {
                id: p.id.to_string(),
                kind: p.kind,
                display_name: p.display_name,
                enabled: p.enabled,
            })
            .collect(),
    };
    render(state, ctx, StatusCode::OK, &page)
}

async fn providers(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    q: QueryResult<DoneQuery>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "providers", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let notice = match q.ok().and_then(|Query(q)| q.done).as_deref() {
        Some("enabled") => "The provider is enabled.",
        Some("disabled") => "The provider is disabled: its button is gone from the sign-in page.",
        Some("created") => "The provider was added and is enabled: test its connection below.",
        Some("saved") => "The provider's settings were saved and are in use now.",
        _ => "",
    };
    providers_page(&state, &ctx, notice, "", Vec::new()).await
}

async fn provider_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    form: FormResult,
) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "providers", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut rec = match state.directory.get_provider(&ProviderId::new(id)).await {
        Ok(Some(p)) if p.tenant == ctx.admin.tenant => p,
        Ok(_) => return not_found("provider"),
        Err(e) => return failed(e),
    };
    match action.as_str() {
        "enabled" => {
            let enabled = match form.get("enabled").map(String::as_str) {
                Some("true") => true,
                Some("false") => false,
                _ => {
                    return message(
                        StatusCode::BAD_REQUEST,
                        "Bad request",
                        "enabled must be true or false. Nothing was changed.",
                    );
                }
            };
            rec.enabled = enabled;
            if let Err(e) = admin::save_provider(&state, &ctx.admin, &rec).await {
                return failed(e);
            }
            see_other(if enabled {
                "/console/providers?done=enabled"
            } else {
                "/console/providers?done=disabled"
            })
        }
        "test" => {
            let report = crate::connection::test(&state, &rec).await;
            admin::changed(
                &state,
                &ctx.admin,
                "admin.provider_tested",
                serde_json::json!({"provider": rec.id, "status": report.status.as_str(), "via": "console"}),
            );
            let checks = report.findings;
            let tested = rec.display_name.clone();
            providers_page(&state, &ctx, "", &tested, checks).await
        }
        _ => not_found("action"),
    }
}

#[derive(Template)]
#[template(path = "console_apps.html")]
struct AppsPage<'a> {
    me: &'a Me,
    notice: &'a str,
    secret: &'a str,
    secret_app: &'a str,
    apps: Vec<admin::AppOut>,
}

async fn apps_page(
    state: &AppState,
    ctx: &Ctx,
    notice: &str,
    secret: &str,
    secret_app: &str,
) -> Response {
    let list = match state.directory.list_apps(Some(&ctx.admin.tenant)).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let page = AppsPage {
        me: &ctx.me,
        notice,
        secret,
        secret_app,
        apps: list
            .into_iter()
            .map(|a| admin::AppOut {
                public: a.is_public(),
                client_id: a.client_id.to_string(),
                name: a.name,
                redirect_uris: a.redirect_uris,
                enabled: a.enabled,
            })
            .collect(),
    };
    render(state, ctx, StatusCode::OK, &page)
}

async fn apps(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    q: QueryResult<DoneQuery>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "apps", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let notice = match q.ok().and_then(|Query(q)| q.done).as_deref() {
        Some("saved") => "The app was saved; the change is in effect now.",
        _ => "",
    };
    apps_page(&state, &ctx, notice, "", "").await
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/users", get(users))
        .route("/console/users/{id}", get(user))
        .route("/console/users/{id}/{action}", post(user_action))
        .route("/console/troubleshoot", get(troubleshooter))
        .route("/console/events", get(events))
        .route("/console/trace/{reference}", get(trace))
        .route("/console/providers", get(providers))
        .route("/console/providers/{id}/{action}", post(provider_action))
        .route("/console/apps", get(apps))
        .merge(config::routes())
        .merge(accounts::routes())
        .merge(rosters::routes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_buckets_stack_and_scale() {
        let now = 100_000;
        // One success this hour, two refusals 3 hours ago, one too old to count.
        let ok = [now * 1000 - 5_000];
        let bad = [
            (now - 3 * 3600 - 10) * 1000,
            (now - 3 * 3600 - 20) * 1000,
            (now - 25 * 3600) * 1000,
        ];
        let (bars, max) = hourly(now, &ok, &bad);
        assert_eq!(bars.len(), 24);
        assert_eq!(max, 2);
        assert_eq!((bars[23].ok, bars[23].refused), (1, 0));
        assert_eq!(bars[23].ok_h, CHART_H / 2);
        assert_eq!((bars[20].ok, bars[20].refused), (0, 2));
        assert_eq!((bars[20].bad_y, bars[20].bad_h), (0, CHART_H));
        assert_eq!(bars.iter().map(|b| b.refused).sum::<usize>(), 2);
    }
}
