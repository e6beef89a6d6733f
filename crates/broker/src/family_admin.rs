//! The families part of the admin API (`/admin/api/families`), with its own OpenAPI
//! part merged into the admin document ([`FamilyApiDoc`]).
//!
//! Staff can list and read families, revoke a secondary guardian (both guardians are
//! emailed), make another account the primary guardian (every guardian's access is
//! revoked and everyone affected is emailed), and send a guardian a reset-password link.
//! There is deliberately no endpoint that adds a guardian: staff can never grant access
//! (only a primary guardian's invitation can). Every change is an audit event naming who
//! made it; bad input gets 400 with the field and the reason and changes nothing.

use crate::AppState;
use crate::admin::{ApiError, LinkOut, api_error, authenticate, bad, changed, internal, not_found};
use crate::family::{self, FamilyError};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use homeroom_core::AccountId;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// A guardian as staff see it.
#[derive(Serialize, ToSchema)]
pub struct GuardianOut {
    pub account: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// `primary` or `secondary`.
    pub role: String,
    /// `full` (primary) or `view` (secondary).
    pub access: String,
    pub added_at: i64,
    pub added_by: String,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

/// A learner of a family.
#[derive(Serialize, ToSchema)]
pub struct StudentOut {
    pub account: String,
    /// `sourced_id` or `parent_code`.
    pub linked_by: String,
    pub linked_at: i64,
}

/// A family, its guardians (revoked ones too, for the record) and learners.
#[derive(Serialize, ToSchema)]
pub struct FamilyOut {
    pub id: String,
    pub name: String,
    pub primary: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub guardians: Vec<GuardianOut>,
    pub students: Vec<StudentOut>,
    /// Invitations not used and not revoked.
    pub pending_invitations: Vec<String>,
    /// The family this one was merged into, if it was.
    pub merged_into: Option<String>,
}

/// Body of a primary change.
#[derive(Deserialize, ToSchema)]
pub struct PrimaryChange {
    /// The account that becomes the primary guardian (an account of the tenant).
    pub account: String,
}

/// Result of a primary change.
#[derive(Serialize, ToSchema)]
pub struct PrimaryChanged {
    pub family: FamilyOut,
    /// Accounts whose access was revoked (the old primary and every secondary).
    pub revoked: Vec<String>,
}

async fn family_out(
    state: &AppState,
    f: homeroom_directory::Family,
) -> Result<FamilyOut, homeroom_directory::DirectoryError> {
    let mut guardians = Vec::new();
    for g in state.directory.family_guardians(&f.id, true).await? {
        let a = state.directory.get_account(&g.account).await?;
        guardians.push(GuardianOut {
            account: g.account.to_string(),
            email: a.as_ref().and_then(|a| a.email.clone()),
            name: a.as_ref().and_then(|a| a.name.clone()),
            role: g.role.as_str().into(),
            access: g.access.as_str().into(),
            added_at: g.added_at,
            added_by: g.added_by,
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by,
        });
    }
    let students = state
        .directory
        .family_students(&f.id)
        .await?
        .into_iter()
        .map(|s| StudentOut {
            account: s.account.to_string(),
            linked_by: s.linked_by,
            linked_at: s.linked_at,
        })
        .collect();
    let pending_invitations = state
        .directory
        .family_invitations(&f.id)
        .await?
        .into_iter()
        .filter(|i| i.usable())
        .map(|i| i.email)
        .collect();
    Ok(FamilyOut {
        id: f.id,
        name: f.name,
        primary: f.primary.to_string(),
        created_at: f.created_at,
        updated_at: f.updated_at,
        guardians,
        students,
        pending_invitations,
        merged_into: f.merged_into,
    })
}

/// The family with this id in the admin's tenant, or 404.
async fn own_family(
    state: &AppState,
    admin: &crate::admin::Admin,
    id: &str,
) -> Result<homeroom_directory::Family, Response> {
    match state.directory.get_family(id).await {
        Ok(Some(f)) if f.tenant == admin.tenant => Ok(f),
        Ok(_) => Err(not_found("family")),
        Err(e) => Err(internal(e)),
    }
}

/// The authenticated admin and a family of their tenant, or the JSON refusal.
async fn admin_and_family(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(crate::admin::Admin, homeroom_directory::Family), Response> {
    let admin = authenticate(state, headers).await?;
    let f = own_family(state, &admin, id).await?;
    Ok((admin, f))
}

/// The family as it is now (after a change), as the JSON answer.
async fn family_response(state: &AppState, admin: &crate::admin::Admin, id: &str) -> Response {
    let f = match own_family(state, admin, id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match family_out(state, f).await {
        Ok(f) => axum::Json(f).into_response(),
        Err(e) => internal(e),
    }
}

fn family_error(e: FamilyError) -> Response {
    match e {
        FamilyError::NoFamily => not_found("family"),
        FamilyError::NoAccount => bad("account", "no such account in your tenant"),
        FamilyError::NotSecondary => api_error(
            StatusCode::CONFLICT,
            "not_secondary",
            Some("account"),
            "the account is not a live secondary guardian of this family (a primary is replaced with POST .../primary)",
        ),
        FamilyError::AlreadyPrimary => bad(
            "account",
            "the account is already the primary guardian of this family",
        ),
        FamilyError::NotGuardian => api_error(
            StatusCode::CONFLICT,
            "not_guardian",
            Some("account"),
            "the account is not a live guardian of this family",
        ),
        FamilyError::Local(l) => crate::admin::local_error(l),
        FamilyError::Directory(homeroom_directory::DirectoryError::NotFound { .. }) => {
            not_found("live family")
        }
        other => internal(other),
    }
}

/// Families of the tenant (at most 1000, oldest first).
#[utoipa::path(get, path = "/admin/api/families", responses((status = 200, body = [FamilyOut]), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn families(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let admin = match authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let list = match state
        .directory
        .families_in_tenant(&admin.tenant, 1000)
        .await
    {
        Ok(l) => l,
        Err(e) => return internal(e),
    };
    let mut out = Vec::with_capacity(list.len());
    for f in list {
        match family_out(&state, f).await {
            Ok(f) => out.push(f),
            Err(e) => return internal(e),
        }
    }
    axum::Json(out).into_response()
}

/// One family.
#[utoipa::path(get, path = "/admin/api/families/{id}", params(("id" = String, Path, description = "Family id")), responses((status = 200, body = FamilyOut), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn family(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (_, f) = match admin_and_family(&state, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match family_out(&state, f).await {
        Ok(f) => axum::Json(f).into_response(),
        Err(e) => internal(e),
    }
}

/// Revokes a secondary guardian's access; the secondary and the primary are emailed.
/// (There is no way for staff to grant access.)
#[utoipa::path(post, path = "/admin/api/families/{id}/guardians/{account}/revoke", params(("id" = String, Path, description = "Family id"), ("account" = String, Path, description = "Guardian account id")), responses((status = 200, body = FamilyOut), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, account)): Path<(String, String)>,
) -> Response {
    let (admin, f) = match admin_and_family(&state, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let account = AccountId::new(account);
    if let Err(e) = family::revoke_secondary(&state, &f.id, &account, &admin.actor).await {
        return family_error(e);
    }
    changed(
        &state,
        &admin,
        "admin.family_secondary_revoked",
        serde_json::json!({"family": f.id, "account": account}),
    );
    match family_out(&state, f).await {
        Ok(f) => axum::Json(f).into_response(),
        Err(e) => internal(e),
    }
}

/// Makes another account of the tenant the primary guardian: every guardian's access is
/// revoked (the new primary must invite again), pending invitations are revoked, and
/// everyone affected is emailed.
#[utoipa::path(post, path = "/admin/api/families/{id}/primary", params(("id" = String, Path, description = "Family id")), request_body = PrimaryChange, responses((status = 200, body = PrimaryChanged), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn primary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (admin, f) = match admin_and_family(&state, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let change: PrimaryChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return bad(
                "account",
                &format!("send {{\"account\": \"acc_...\"}}: {e}"),
            );
        }
    };
    if change.account.trim().is_empty() {
        return bad("account", "must not be empty");
    }
    let new_primary = AccountId::new(change.account.trim());
    match state.directory.get_account(&new_primary).await {
        Ok(Some(a)) if a.tenant == admin.tenant => {}
        Ok(_) => return bad("account", "no such account in your tenant"),
        Err(e) => return internal(e),
    }
    let revoked = match family::change_primary(&state, &f.id, &new_primary, &admin.actor).await {
        Ok(r) => r,
        Err(e) => return family_error(e),
    };
    changed(
        &state,
        &admin,
        "admin.family_primary_changed",
        serde_json::json!({"family": f.id, "old_primary": f.primary, "new_primary": new_primary}),
    );
    let f = match own_family(&state, &admin, &id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match family_out(&state, f).await {
        Ok(f) => axum::Json(PrimaryChanged {
            family: f,
            revoked: revoked.iter().map(|g| g.account.to_string()).collect(),
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

/// The body of `POST /admin/api/families/{id}/merge`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeFrom {
    /// The family merged into this one (same tenant).
    #[schema(min_length = 1, max_length = 100)]
    pub from: String,
}

/// Merges another family of the tenant into this one: its learners move here; its
/// guardians (its primary too) and this family's secondaries lose access; this family's
/// primary stays and invites again; everyone affected is emailed.
#[utoipa::path(post, path = "/admin/api/families/{id}/merge", params(("id" = String, Path, description = "Family id (the one that stays)")), request_body = MergeFrom, responses((status = 200, body = PrimaryChanged), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn merge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (admin, into) = match admin_and_family(&state, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let m: MergeFrom = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return bad("from", &format!("send {{\"from\": \"fam_...\"}}: {e}")),
    };
    let from = m.from.trim();
    if from.is_empty() || from.len() > 100 {
        return bad("from", "a family id of your tenant");
    }
    if from == into.id {
        return bad("from", "a family cannot be merged into itself");
    }
    // Another tenant's family is as unknown as a missing one.
    if let Err(r) = own_family(&state, &admin, from).await {
        return r;
    }
    let revoked = match family::merge(&state, from, &into.id, &admin.actor).await {
        Ok(r) => r,
        Err(e) => return family_error(e),
    };
    changed(
        &state,
        &admin,
        "admin.family_merged",
        serde_json::json!({"from": from, "into": into.id}),
    );
    let f = match own_family(&state, &admin, &id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match family_out(&state, f).await {
        Ok(f) => axum::Json(PrimaryChanged {
            family: f,
            revoked: revoked.iter().map(|g| g.account.to_string()).collect(),
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

/// The body of `POST /admin/api/families/{id}/students`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StudentLink {
    /// The learner's roster `sourcedId` (the learner must have an account).
    #[schema(min_length = 1, max_length = 200)]
    pub sourced_id: String,
}

/// Links a rostered learner to the family by roster `sourcedId` (as the SIS records the
/// guardianship). This covers a learner; it never adds a guardian.
#[utoipa::path(post, path = "/admin/api/families/{id}/students", params(("id" = String, Path, description = "Family id")), request_body = StudentLink, responses((status = 200, body = FamilyOut), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn link_student(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (admin, f) = match admin_and_family(&state, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let link: StudentLink = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(e) => {
            return bad(
                "sourced_id",
                &format!("send {{\"sourced_id\": \"...\"}}: {e}"),
            );
        }
    };
    let sourced = link.sourced_id.trim();
    if sourced.is_empty() || sourced.len() > 200 || sourced.chars().any(char::is_control) {
        return bad(
            "sourced_id",
            "a roster sourcedId (1 to 200 printable characters)",
        );
    }
    let learner = match state
        .directory
        .link_family_student_by_sourced_id(&f.id, sourced, state.now())
        .await
    {
        Ok(a) => a,
        Err(homeroom_directory::DirectoryError::NotFound { .. }) => {
            return not_found("a rostered learner with that sourcedId and an account");
        }
        Err(e) => return internal(e),
    };
    changed(
        &state,
        &admin,
        "admin.family_student_linked",
        serde_json::json!({"family": f.id, "learner": learner, "sourced_id": sourced}),
    );
    family_response(&state, &admin, &id).await
}

/// Sends one guardian a reset-password link to their own email address.
#[utoipa::path(post, path = "/admin/api/families/{id}/guardians/{account}/reset", params(("id" = String, Path, description = "Family id"), ("account" = String, Path, description = "Guardian account id")), responses((status = 200, body = LinkOut), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, account)): Path<(String, String)>,
) -> Response {
    let (admin, f) = match admin_and_family(&state, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let account = AccountId::new(account);
    match family::reset_guardian(&state, &f.id, &account, &admin.actor).await {
        Ok(link) => {
            changed(
                &state,
                &admin,
                "admin.family_reset_issued",
                serde_json::json!({"family": f.id, "account": account}),
            );
            axum::Json(LinkOut {
                url: link.url,
                created_at: link.created_at,
                expires_at: link.expires_at,
            })
            .into_response()
        }
        Err(e) => family_error(e),
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(families, family, revoke, primary, merge, link_student, reset),
    components(schemas(
        FamilyOut,
        GuardianOut,
        StudentOut,
        PrimaryChange,
        PrimaryChanged,
        StudentLink,
        MergeFrom
    ))
)]
pub struct FamilyApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api/families", get(families))
        .route("/admin/api/families/{id}", get(family))
        .route(
            "/admin/api/families/{id}/guardians/{account}/revoke",
            post(revoke),
        )
        .route("/admin/api/families/{id}/primary", post(primary))
        .route("/admin/api/families/{id}/students", post(link_student))
        .route("/admin/api/families/{id}/merge", post(merge))
        .route(
            "/admin/api/families/{id}/guardians/{account}/reset",
            post(reset),
        )
}
