//! The console's "Add account" page over [`crate::admin_accounts`]: when the email is
//! already in use, the page says where (even where the users list hides it) and offers
//! each fix as a button (restore, add the role, link to the roster record, resend the
//! invitation) instead of a bare "email already in use".

use super::{FormResult, Issued, authenticate, authenticate_post, failed, form_fields, render};
use crate::AppState;
use crate::admin_accounts::{self, AccountCreate, CreateError, EmailInUse};
use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use homeroom_core::AccountId;
use http::{HeaderMap, StatusCode};
use std::collections::HashMap;

const ROLES: [(&str, &str); 7] = [
    ("student", "Student"),
    ("teacher", "Teacher"),
    ("staff", "Staff"),
    ("school_admin", "School administrator"),
    ("district_admin", "District administrator"),
    ("guardian", "Guardian"),
    ("it_admin", "IT administrator"),
];

#[derive(Template)]
#[template(path = "console_account_new.html")]
struct NewAccountPage<'a> {
    me: &'a super::Me,
    roles: Vec<(&'static str, &'static str)>,
    schools: Vec<(String, String)>,
    role: String,
    name: String,
    email: String,
    school: String,
    send_invitation: bool,
    found: Vec<EmailInUse>,
    error_field: String,
    error_reason: String,
}

async fn schools(
    state: &AppState,
    tenant: &homeroom_core::TenantId,
) -> Result<Vec<(String, String)>, Response> {
    match state.directory.roster_schools(tenant).await {
        Ok(l) => Ok(l.into_iter().map(|o| (o.sourced_id, o.name)).collect()),
        Err(e) => Err(failed(e)),
    }
}

async fn new_form(State(state): State<AppState>, headers: HeaderMap, uri: http::Uri) -> Response {
    let ctx = match authenticate(&state, &headers, "users", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let schools = match schools(&state, &ctx.admin.tenant).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let page = NewAccountPage {
        me: &ctx.me,
        roles: ROLES.to_vec(),
        schools,
        role: "student".into(),
        name: String::new(),
        email: String::new(),
        school: String::new(),
        send_invitation: true,
        found: Vec::new(),
        error_field: String::new(),
        error_reason: String::new(),
    };
    render(&state, &ctx, StatusCode::OK, &page)
}

fn field(form: &HashMap<String, String>, k: &str) -> String {
    form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default()
}

async fn create(State(state): State<AppState>, headers: HeaderMap, form: FormResult) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "users", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let c = AccountCreate {
        role: field(&form, "role"),
        email: field(&form, "email"),
        name: field(&form, "name"),
        school: Some(field(&form, "school")).filter(|s| !s.is_empty()),
        send_invitation: form.get("send_invitation").is_some_and(|v| v == "true"),
        link_roster: Some(field(&form, "link_roster")).filter(|s| !s.is_empty()),
    };
    let (status, found, error_field, error_reason) = match admin_accounts::create_account(
        &state, &ctx.admin, &c,
    )
    .await
    {
        Ok(out) => {
            let id = AccountId::new(out.account.id.clone());
            let a = match state.directory.get_account(&id).await {
                Ok(Some(a)) => a,
                Ok(None) => return failed("the new account vanished"),
                Err(e) => return failed(e),
            };
            let issued = out.invitation.map(|l| Issued {
                    label: "Invitation link (mailed to the person; it never expires; first use sets a password)",
                    url: l.url,
                    expires_at: l.expires_at,
                });
            return super::profile_page(&state, &ctx, a, "The account was created.", issued).await;
        }
        Err(CreateError::Invalid { field, reason }) => {
            (StatusCode::BAD_REQUEST, Vec::new(), field, reason)
        }
        Err(CreateError::InUse(found)) => {
            (StatusCode::CONFLICT, found, String::new(), String::new())
        }
        Err(CreateError::Busy) => (
            StatusCode::CONFLICT,
            Vec::new(),
            "email".into(),
            crate::admin_accounts::BUSY_REASON.into(),
        ),
        Err(CreateError::Directory(homeroom_directory::DirectoryError::Conflict { .. })) => (
            StatusCode::CONFLICT,
            Vec::new(),
            "link_roster".into(),
            "the roster record got an account meanwhile; nothing was created".into(),
        ),
        Err(e) => return failed(e),
    };
    let schools = match schools(&state, &ctx.admin.tenant).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let page = NewAccountPage {
        me: &ctx.me,
        roles: ROLES.to_vec(),
        schools,
        role: c.role,
        name: c.name,
        email: c.email,
        school: c.school.unwrap_or_default(),
        send_invitation: c.send_invitation,
        found,
        error_field,
        error_reason,
    };
    render(&state, &ctx, status, &page)
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/console/accounts/new", get(new_form).post(create))
}
