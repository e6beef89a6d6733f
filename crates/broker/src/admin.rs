//! The admin REST API under `/admin/api` (JSON), with its OpenAPI 3 document at
//! `/admin/api/openapi.json` generated from these handlers and types.
//!
//! Authentication: a Bearer access token issued by this Homeroom, either to an app by the
//! client-credentials grant with the `homeroom:admin` scope (automation), or to a person
//! whose account holds the `it_admin` role (admins sign in through Homeroom itself). Every
//! request is scoped to that token's tenant: objects of other tenants are "not found".
//! Every change writes an audit event naming who made it. Bad input gets 400 with the
//! field and the reason, and changes nothing.

use crate::AppState;
use crate::audit::{self, Ev};
use crate::troubleshoot;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use homeroom_core::{AccountId, ProviderId, RefId, Role, TenantId};
use homeroom_directory::{AccountStatus, AuditFilter};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// The scope that makes a client-credentials token an admin token.
pub const ADMIN_SCOPE: &str = "homeroom:admin";
/// The scope a teacher's or lead teacher's token needs for the classroom part of the API
/// (`/admin/api/classroom/...`). An ordinary sign-in token an app received is never an API
/// credential: the app must have been allowed this scope and have asked for it.
pub const CLASSROOM_SCOPE: &str = "homeroom:classroom";

/// Who is calling, and for which tenant.
#[derive(Debug, Clone)]
pub struct Admin {
    pub tenant: TenantId,
    /// `account:<id>` or `client:<id>`, for the audit log.
    pub actor: String,
}

/// The error body of every admin endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
    pub field: Option<String>,
    pub reason: String,
}

pub(crate) fn api_error(
    status: StatusCode,
    error: &str,
    field: Option<&str>,
    reason: &str,
) -> Response {
    let mut r = (
        status,
        axum::Json(ApiError {
            error: error.into(),
            field: field.map(str::to_owned),
            reason: reason.into(),
        }),
    )
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

pub(crate) fn bad(field: &str, reason: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some(field),
        reason,
    )
}

pub(crate) fn not_found(what: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        &format!("no such {what} in your tenant"),
    )
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API internal error");
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        None,
        "internal error; see the server log",
    )
}

/// Authenticates an admin request.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Admin, Response> {
    let token = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") => {
            h[7..].trim().to_owned()
        }
        _ => {
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                None,
                "send an admin access token as Bearer",
            ));
        }
    };
    let Some(active) = crate::tokens::validate_access_token(state, &token).await else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            None,
            "the access token is invalid, expired or revoked",
        ));
    };
    let scope = active.claims["scope"].as_str().unwrap_or("");
    if active.family.account.as_str().starts_with("client:") {
        if scope.split(' ').any(|s| s == ADMIN_SCOPE) {
            return Ok(Admin {
                tenant: active.family.tenant.clone(),
                actor: active.family.account.to_string(),
            });
        }
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
            "the token lacks the homeroom:admin scope",
        ));
    }
    // A person's token counts only when it was issued for the API: an app that merely
    // received an IT admin's sign-in token must not be able to administer the tenant.
    if !scope.split(' ').any(|s| s == ADMIN_SCOPE) {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
            "the token lacks the homeroom:admin scope (an app's sign-in token is not an admin credential)",
        ));
    }
    match state.directory.get_account(&active.family.account).await {
        Ok(Some(a)) if a.status == AccountStatus::Active && a.roles.contains(&Role::ItAdmin) => {
            Ok(Admin {
                tenant: a.tenant.clone(),
                actor: format!("account:{}", a.id),
            })
        }
        Ok(_) => Err(api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
            "the account is not an active it_admin",
        )),
        Err(e) => Err(internal(e)),
    }
}

macro_rules! admin {
    ($state:expr, $headers:expr) => {
        match authenticate(&$state, &$headers).await {
            Ok(a) => a,
            Err(r) => return r,
        }
    };
}

/// Records an admin change (`kind`) in the admin's tenant, naming who made it.
pub fn changed(state: &AppState, admin: &Admin, kind: &str, detail: serde_json::Value) {
    let mut d = detail;
    if let Some(o) = d.as_object_mut() {
        o.insert("by".into(), serde_json::json!(admin.actor));
    }
    audit::record(
        state,
        None,
        kind,
        Ev {
            tenant: Some(admin.tenant.clone()),
            ..Default::default()
        }
        .detail(d),
    );
}

#[derive(Serialize, ToSchema)]
pub struct TenantOut {
    pub id: String,
    pub name: String,
    pub domains: Vec<String>,
    pub session_idle_secs: i64,
    pub session_absolute_secs: i64,
}

/// The caller's tenant.
#[utoipa::path(get, path = "/admin/api/tenant", responses((status = 200, body = TenantOut), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn tenant(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let admin = admin!(state, headers);
    match state.directory.get_tenant(&admin.tenant).await {
        Ok(Some(t)) => axum::Json(TenantOut {
            id: t.id.to_string(),
            name: t.name,
            domains: t.domains,
            session_idle_secs: t.session_idle_secs,
            session_absolute_secs: t.session_absolute_secs,
        })
        .into_response(),
        Ok(None) => not_found("tenant"),
        Err(e) => internal(e),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProviderOut {
    pub id: String,
    pub kind: String,
    pub display_name: String,
    pub enabled: bool,
    /// Settings without secrets.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

fn redact(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        for (k, val) in o.iter_mut() {
            if k.contains("secret") || k.contains("password") || k.contains("key") {
                *val = serde_json::json!("[redacted]");
            }
        }
    }
    v
}

/// The tenant's upstream providers.
#[utoipa::path(get, path = "/admin/api/providers", responses((status = 200, body = [ProviderOut]), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn providers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let admin = admin!(state, headers);
    match state.directory.list_providers(Some(&admin.tenant)).await {
        Ok(list) => axum::Json(
            list.into_iter()
                .map(|p| ProviderOut {
                    id: p.id.to_string(),
                    kind: p.kind,
                    display_name: p.display_name,
                    enabled: p.enabled,
                    config: redact(p.config),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    pub enabled: Option<bool>,
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: Option<String>,
    /// Settings to change: each key replaces the stored one, `null` removes it, a secret
    /// sent back as `"[redacted]"` keeps the stored secret. The result is validated like
    /// a new provider's (`config.<key>` names the problem); nothing is written on a problem.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// Enables, disables, renames a provider or changes its settings.
#[utoipa::path(patch, path = "/admin/api/providers/{id}", params(("id" = String, Path, description = "Provider id")), request_body = ProviderPatch, responses((status = 200, body = ProviderOut), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn patch_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<axum::Json<ProviderPatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let axum::Json(patch) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    if let Some(n) = &patch.display_name
        && let Err(e) = crate::admin_ops::check_display_name("display_name", n)
    {
        return bad(&e.field, &e.reason);
    }
    let mut rec = match state.directory.get_provider(&ProviderId::new(id)).await {
        Ok(Some(p)) if p.tenant == admin.tenant => p,
        Ok(_) => return not_found("provider"),
        Err(e) => return internal(e),
    };
    if let Some(c) = &patch.config {
        let merged = match crate::admin_ops::merge_settings(&rec.config, c) {
            Ok(m) => m,
            Err(e) => return bad(&e.field, &e.reason),
        };
        if let Err(e) = crate::admin_ops::check_provider_settings(&rec.kind, &merged) {
            return bad(&e.field, &e.reason);
        }
        rec.config = merged;
    }
    if let Some(e) = patch.enabled {
        rec.enabled = e;
    }
    if let Some(n) = patch.display_name {
        rec.display_name = n.trim().to_owned();
    }
    if let Err(e) = save_provider(&state, &admin, &rec).await {
        return internal(e);
    }
    axum::Json(ProviderOut {
        id: rec.id.to_string(),
        kind: rec.kind,
        display_name: rec.display_name,
        enabled: rec.enabled,
        config: redact(rec.config),
    })
    .into_response()
}

/// Stores a changed provider, reloads the registry and audits the change.
pub async fn save_provider(
    state: &AppState,
    admin: &Admin,
    rec: &homeroom_directory::ProviderRecord,
) -> Result<(), homeroom_directory::DirectoryError> {
    state.directory.upsert_provider(rec).await?;
    state
        .providers
        .reload(&state.directory, &state.http, state.clock.clone())
        .await?;
    state.caches.forget_apps();
    changed(
        state,
        admin,
        "admin.provider_changed",
        serde_json::json!({"provider": rec.id, "enabled": rec.enabled, "display_name": rec.display_name}),
    );
    Ok(())
}

/// "Test connection": fetches the provider's discovery document and JWKS (or SAML
/// metadata) and checks the issuer, the clock against the provider's, the signing keys
/// and the redirect URI registration; each finding is `ok`, `warn` or `fail` with what to
/// do (see [`crate::connection`]).
#[utoipa::path(post, path = "/admin/api/providers/{id}/test", params(("id" = String, Path, description = "Provider id")), responses((status = 200, body = crate::connection::ConnectionReport), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)), security(("bearer" = [])))]
pub async fn test_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let admin = admin!(state, headers);
    let rec = match state.directory.get_provider(&ProviderId::new(id)).await {
        Ok(Some(p)) if p.tenant == admin.tenant => p,
        Ok(_) => return not_found("provider"),
        Err(e) => return internal(e),
    };
    let report = crate::connection::test(&state, &rec).await;
    changed(
        &state,
        &admin,
        "admin.provider_tested",
        serde_json::json!({"provider": rec.id, "status": report.status.as_str()}),
    );
    axum::Json(report).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct AppOut {
    pub client_id: String,
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub enabled: bool,
}

/// A new upstream provider of the tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderCreate {
    #[schema(pattern = "^[A-Za-z0-9_-]{2,64}$")]
    pub id: String,
    /// `oidc`, `google`, `microsoft`, `clever`, `classlink`, `gg4l` or `saml`.
    #[schema(example = "oidc")]
    pub kind: String,
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: String,
    /// The kind's settings (the same keys as in the configuration file).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// Registers a provider; its settings are validated like `homeroom check-config` does and
/// each problem names its key (`config.client_secret`). Nothing is written on a problem.
#[utoipa::path(post, path = "/admin/api/providers", request_body = ProviderCreate, responses((status = 201, body = ProviderOut), (status = 400, body = ApiError), (status = 409, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn create_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::Json<ProviderCreate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let axum::Json(c) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    if let Err(e) = crate::admin_ops::check_provider_create(&c) {
        return bad(&e.field, &e.reason);
    }
    let pid = ProviderId::new(c.id.clone());
    match state.directory.get_provider(&pid).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return api_error(
                StatusCode::CONFLICT,
                "exists",
                Some("id"),
                "a provider with this id already exists",
            );
        }
        Err(e) => return internal(e),
    }
    let rec = homeroom_directory::ProviderRecord {
        id: pid,
        tenant: admin.tenant.clone(),
        kind: c.kind,
        display_name: c.display_name.trim().to_owned(),
        enabled: true,
        config: c.config,
    };
    if let Err(e) = state.directory.upsert_provider(&rec).await {
        return internal(e);
    }
    if let Err(e) = state
        .providers
        .reload(&state.directory, &state.http, state.clock.clone())
        .await
    {
        return internal(e);
    }
    changed(
        &state,
        &admin,
        "admin.provider_created",
        serde_json::json!({"provider": rec.id, "kind": rec.kind}),
    );
    (
        StatusCode::CREATED,
        axum::Json(ProviderOut {
            id: rec.id.to_string(),
            kind: rec.kind,
            display_name: rec.display_name,
            enabled: true,
            config: redact(rec.config),
        }),
    )
        .into_response()
}

/// A new app (OAuth client) of the tenant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppCreate {
    #[schema(pattern = "^[A-Za-z0-9._-]{3,64}$")]
    pub client_id: String,
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Exact-match redirect URIs: https, http on loopback, or (native) a reverse-domain scheme.
    #[schema(min_items = 1)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// A public client (no secret; PKCE required). Default false: a secret is generated.
    #[serde(default)]
    pub public: bool,
    /// A native/mobile app (private-use URI schemes allowed).
    #[serde(default)]
    pub native: bool,
    /// Default: openid profile email offline_access.
    pub scopes: Option<Vec<String>>,
    /// `RS256` (default) or `ES256`.
    #[schema(pattern = "^(RS256|ES256)$")]
    pub id_token_alg: Option<String>,
    pub start_url: Option<String>,
    pub initiate_login_uri: Option<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// The created app; `client_secret` is shown once and stored only as a hash.
#[derive(Serialize, ToSchema)]
pub struct AppCreated {
    pub app: AppOut,
    pub client_secret: Option<String>,
}

pub const APP_SCOPES: [&str; 8] = [
    "openid",
    "profile",
    "email",
    "offline_access",
    "roles",
    "family",
    ADMIN_SCOPE,
    CLASSROOM_SCOPE,
];

/// Registers an app. Bad input names the field (e.g. `redirect_uris[0]`) and creates nothing.
#[utoipa::path(post, path = "/admin/api/apps", request_body = AppCreate, responses((status = 201, body = AppCreated), (status = 400, body = ApiError), (status = 409, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn create_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::Json<AppCreate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let axum::Json(c) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    let (scopes, alg) = match crate::admin_ops::check_app_create(&c) {
        Ok(v) => v,
        Err(e) => return bad(&e.field, &e.reason),
    };
    let id = homeroom_core::ClientId::new(c.client_id.clone());
    match state.directory.get_app(&id).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return api_error(
                StatusCode::CONFLICT,
                "exists",
                Some("client_id"),
                "an app with this client_id already exists",
            );
        }
        Err(e) => return internal(e),
    }
    let secret = if c.public {
        None
    } else {
        match homeroom_core::crypto::random_token(32) {
            Ok(s) => Some(s),
            Err(e) => return internal(e),
        }
    };
    let record = homeroom_directory::AppRecord {
        client_id: id,
        tenant: admin.tenant.clone(),
        name: c.name.trim().to_owned(),
        secret_hash: secret.as_deref().map(homeroom_core::crypto::sha256_hex),
        token_endpoint_auth_method: if c.public {
            "none".into()
        } else {
            "client_secret_basic".into()
        },
        redirect_uris: c.redirect_uris,
        post_logout_redirect_uris: c.post_logout_redirect_uris,
        allowed_scopes: scopes,
        id_token_alg: alg,
        enabled: true,
        initiate_login_uri: c.initiate_login_uri,
        start_url: c.start_url,
        allowed_origins: c.allowed_origins,
    };
    if let Err(e) = state.directory.upsert_app(&record).await {
        return internal(e);
    }
    state.caches.forget_apps();
    changed(
        &state,
        &admin,
        "admin.app_created",
        serde_json::json!({"app": record.client_id, "public": c.public}),
    );
    let out = AppOut {
        public: record.is_public(),
        client_id: record.client_id.to_string(),
        name: record.name,
        redirect_uris: record.redirect_uris,
        enabled: true,
    };
    (
        StatusCode::CREATED,
        axum::Json(AppCreated {
            app: out,
            client_secret: secret,
        }),
    )
        .into_response()
}

/// Changes to an app (every field optional).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(min_items = 1)]
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// Edits an app of the tenant.
#[utoipa::path(patch, path = "/admin/api/apps/{id}", params(("id" = String, Path, description = "App client_id")), request_body = AppPatch, responses((status = 200, body = AppOut), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn patch_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<axum::Json<AppPatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let axum::Json(p) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    let mut app = match state
        .directory
        .get_app(&homeroom_core::ClientId::new(id))
        .await
    {
        Ok(Some(a)) if a.tenant == admin.tenant => a,
        Ok(_) => return not_found("app"),
        Err(e) => return internal(e),
    };
    let native = app.redirect_uris.iter().any(|u| !u.starts_with("http"));
    if let Err(e) = crate::admin_ops::check_app_patch(&p, native) {
        return bad(&e.field, &e.reason);
    }
    if let Some(n) = p.name {
        app.name = n.trim().to_owned();
    }
    if let Some(u) = p.redirect_uris {
        app.redirect_uris = u;
    }
    if let Some(u) = p.post_logout_redirect_uris {
        app.post_logout_redirect_uris = u;
    }
    if let Some(e) = p.enabled {
        app.enabled = e;
    }
    if let Err(e) = state.directory.upsert_app(&app).await {
        return internal(e);
    }
    state.caches.forget_apps();
    changed(
        &state,
        &admin,
        "admin.app_changed",
        serde_json::json!({"app": app.client_id, "enabled": app.enabled}),
    );
    axum::Json(AppOut {
        public: app.is_public(),
        client_id: app.client_id.to_string(),
        name: app.name,
        redirect_uris: app.redirect_uris,
        enabled: app.enabled,
    })
    .into_response()
}

/// The tenant's apps.
#[utoipa::path(get, path = "/admin/api/apps", responses((status = 200, body = [AppOut]), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn apps(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let admin = admin!(state, headers);
    match state.directory.list_apps(Some(&admin.tenant)).await {
        Ok(list) => axum::Json(
            list.into_iter()
                .map(|a| AppOut {
                    public: a.is_public(),
                    client_id: a.client_id.to_string(),
                    name: a.name,
                    redirect_uris: a.redirect_uris,
                    enabled: a.enabled,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountOut {
    pub id: String,
    pub status: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
    pub sign_in_count: i64,
    pub providers: Vec<String>,
}

/// An account as the API and the console show it (with its linked providers).
pub async fn account_out(state: &AppState, a: homeroom_directory::Account) -> AccountOut {
    let providers = state
        .directory
        .links_for_account(&a.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.provider.to_string())
        .collect();
    AccountOut {
        id: a.id.to_string(),
        status: a.status.as_str().into(),
        email: a.email,
        email_verified: a.email_verified,
        name: a.name,
        username: a.username,
        roles: a.roles.iter().map(ToString::to_string).collect(),
        created_at: a.created_at,
        last_sign_in_at: a.last_sign_in_at,
        sign_in_count: a.sign_in_count,
        providers,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AccountQuery {
    /// At least 3 letters of a name, email or username.
    #[param(min_length = 3)]
    pub q: String,
    /// Only accounts with this role (`student`, `teacher`, ...).
    pub role: Option<String>,
}

/// Searches accounts of the tenant.
#[utoipa::path(get, path = "/admin/api/accounts", params(AccountQuery), responses((status = 200, body = [AccountOut]), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let Ok(Query(q)) = q else {
        return bad(
            "q",
            "required: at least 3 letters of a name, email or username",
        );
    };
    if q.q.trim().chars().count() < 3 {
        return bad("q", "at least 3 characters");
    }
    let role = match q.role.as_deref().map(str::parse::<Role>) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(_)) => return bad("role", "unknown role"),
    };
    match state
        .directory
        .search_accounts(&admin.tenant, &q.q, role, 50)
        .await
    {
        Ok(list) => {
            let mut out = Vec::new();
            for a in list {
                out.push(account_out(&state, a).await);
            }
            axum::Json(out).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn own_account(
    state: &AppState,
    admin: &Admin,
    id: &str,
) -> Result<homeroom_directory::Account, Response> {
    match state.directory.get_account(&AccountId::new(id)).await {
        Ok(Some(a)) if a.tenant == admin.tenant => Ok(a),
        Ok(_) => Err(not_found("account")),
        Err(e) => Err(internal(e)),
    }
}

/// One account.
#[utoipa::path(get, path = "/admin/api/accounts/{id}", params(("id" = String, Path, description = "Account id")), responses((status = 200, body = AccountOut), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn account(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let admin = admin!(state, headers);
    match own_account(&state, &admin, &id).await {
        Ok(a) => axum::Json(account_out(&state, a).await).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `active`, `suspended` or `archived`.
    #[schema(pattern = "^(active|suspended|archived)$")]
    pub status: String,
}

/// Activates, suspends or archives an account.
#[utoipa::path(post, path = "/admin/api/accounts/{id}/status", params(("id" = String, Path, description = "Account id")), request_body = StatusChange, responses((status = 200, body = AccountOut), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn account_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<axum::Json<StatusChange>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let axum::Json(change) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    let Some(status) = AccountStatus::parse(&change.status) else {
        return bad("status", "must be active, suspended or archived");
    };
    let a = match own_account(&state, &admin, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Err(e) = set_status(&state, &admin, &a, status).await {
        return internal(e);
    }
    match own_account(&state, &admin, &id).await {
        Ok(a) => axum::Json(account_out(&state, a).await).into_response(),
        Err(r) => r,
    }
}

/// Changes an account's status and audits the change.
pub async fn set_status(
    state: &AppState,
    admin: &Admin,
    a: &homeroom_directory::Account,
    status: AccountStatus,
) -> Result<(), homeroom_directory::DirectoryError> {
    state.directory.set_account_status(&a.id, status).await?;
    changed(
        state,
        admin,
        "admin.account_status",
        serde_json::json!({"account": a.id, "from": a.status.as_str(), "to": status.as_str()}),
    );
    Ok(())
}

pub(crate) fn local_error(e: crate::local::LocalError) -> Response {
    use crate::local::LocalError as L;
    match e {
        L::NoAccount => not_found("account"),
        L::SsoOnly(p) => api_error(
            StatusCode::CONFLICT,
            "sso_only",
            None,
            &format!("the account signs in through {p}; its password lives there"),
        ),
        L::PasswordAlreadySet => api_error(
            StatusCode::CONFLICT,
            "password_set",
            None,
            "the account already has a password: issue a reset link instead",
        ),
        L::NotLocal => api_error(
            StatusCode::CONFLICT,
            "not_local",
            None,
            "the account has no Homeroom password: send an invitation first",
        ),
        L::NoLogin => api_error(
            StatusCode::CONFLICT,
            "no_login",
            None,
            "the account has no email or username to sign in with",
        ),
        other => internal(other),
    }
}

#[derive(Serialize, ToSchema)]
pub struct LinkOut {
    /// The link to copy (also mailed when the account has an email).
    pub url: String,
    pub created_at: i64,
    /// `null` for invitations, which never expire.
    pub expires_at: Option<i64>,
}

macro_rules! local_action {
    ($name:ident, $path:literal, $doc:literal, $call:path, $kind:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, params(("id" = String, Path, description = "Account id")), responses((status = 200, body = LinkOut), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
        pub async fn $name(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
            let admin = admin!(state, headers);
            let a = match own_account(&state, &admin, &id).await {
                Ok(a) => a,
                Err(r) => return r,
            };
            match $call(&state, &a.id, &admin.actor).await {
                Ok(link) => {
                    changed(&state, &admin, $kind, serde_json::json!({"account": a.id}));
                    axum::Json(LinkOut { url: link.url, created_at: link.created_at, expires_at: link.expires_at }).into_response()
                }
                Err(e) => local_error(e),
            }
        }
    };
}

local_action!(
    invitation,
    "/admin/api/accounts/{id}/invitation",
    "A fresh invitation link (first use sets a password; it never expires).",
    crate::local::invite,
    "admin.invitation_issued"
);
local_action!(
    reset_link,
    "/admin/api/accounts/{id}/reset",
    "A fresh password-reset link (single use, 6 hours).",
    crate::local::issue_reset,
    "admin.reset_issued"
);

/// Unlocks an account locked by failed password attempts.
#[utoipa::path(post, path = "/admin/api/accounts/{id}/unlock", params(("id" = String, Path, description = "Account id")), responses((status = 200, body = Object), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn unlock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let admin = admin!(state, headers);
    let a = match own_account(&state, &admin, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match crate::local::unlock(&state, &a.id, &admin.actor).await {
        Ok(was_locked) => axum::Json(serde_json::json!({"unlocked": was_locked})).into_response(),
        Err(e) => local_error(e),
    }
}

/// Local-password facts of an account (password set, failed attempts, locked until,
/// pending invitation or reset) and its email log.
#[utoipa::path(get, path = "/admin/api/accounts/{id}/local", params(("id" = String, Path, description = "Account id")), responses((status = 200, body = Object), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn local_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let admin = admin!(state, headers);
    let a = match own_account(&state, &admin, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let status = match crate::local::status(&state, &a.id).await {
        Ok(s) => s,
        Err(e) => return local_error(e),
    };
    let emails = match crate::local::email_log(&state, &a.id).await {
        Ok(m) => m,
        Err(e) => return local_error(e),
    };
    axum::Json(serde_json::json!({"local": status, "emails": emails})).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only events with this error code (e.g. `upstream.domain_mismatch`).
    pub code: Option<String>,
    /// Only events of this kind (e.g. `login.refused`, `admin.app_created`).
    pub kind: Option<String>,
    /// Only events of this provider id.
    pub provider: Option<String>,
    /// Only events of this app (client_id).
    pub app: Option<String>,
    /// Only events of this account id.
    pub account: Option<String>,
    /// Events at or after this time (Unix milliseconds).
    #[param(minimum = 0)]
    pub since: Option<i64>,
    /// Events at or before this time (Unix milliseconds); not before `since`.
    #[param(minimum = 0)]
    pub until: Option<i64>,
    /// At most this many events, newest first (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventOut {
    pub id: String,
    pub reference: Option<String>,
    pub at_ms: i64,
    pub kind: String,
    pub code: Option<String>,
    pub provider: Option<String>,
    pub app: Option<String>,
    pub account: Option<String>,
}

/// An audit event as the API and the console show it.
pub fn event_out(e: homeroom_directory::AuditEvent) -> EventOut {
    EventOut {
        id: e.id,
        reference: e.ref_id.map(|r| r.to_string()),
        at_ms: e.at_ms,
        kind: e.kind,
        code: e.code,
        provider: e.provider.map(|p| p.to_string()),
        app: e.client.map(|c| c.to_string()),
        account: e.account.map(|a| a.to_string()),
    }
}

/// Audit events of the tenant, newest first.
#[utoipa::path(get, path = "/admin/api/events", params(AuditQuery), responses((status = 200, body = [EventOut]), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad("query", &e.body_text()),
    };
    if q.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return bad("limit", "between 1 and 1000");
    }
    for (field, v) in [
        ("code", &q.code),
        ("kind", &q.kind),
        ("provider", &q.provider),
        ("app", &q.app),
        ("account", &q.account),
    ] {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 200 || v.chars().any(char::is_control))
        {
            return bad(field, "1 to 200 characters, no control characters");
        }
    }
    for (field, v) in [("since", q.since), ("until", q.until)] {
        if v.is_some_and(|t| t < 0) {
            return bad(field, "Unix milliseconds, not negative");
        }
    }
    if let (Some(since), Some(until)) = (q.since, q.until)
        && since > until
    {
        return bad("until", "must not be before since");
    }
    state.audit.flush().await;
    let filter = AuditFilter {
        tenant: Some(admin.tenant.clone()),
        code: q.code,
        kind: q.kind,
        provider: q.provider.map(ProviderId::new),
        client: q.app.map(homeroom_core::ClientId::new),
        account: q.account.map(AccountId::new),
        since_ms: q.since,
        until_ms: q.until,
        limit: q.limit.unwrap_or(100),
    };
    match state.directory.list_audit(&filter).await {
        Ok(list) => axum::Json(list.into_iter().map(event_out).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

/// The whole trace of one attempt, by its reference id.
#[utoipa::path(get, path = "/admin/api/trace/{reference}", params(("reference" = String, Path, description = "Reference id (HR-...)")), responses((status = 200, body = [troubleshoot::TraceStep]), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn trace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> Response {
    let admin = admin!(state, headers);
    state.audit.flush().await;
    match troubleshoot::trace(
        &state.directory,
        &RefId::new(reference),
        Some(&admin.tenant),
    )
    .await
    {
        Ok(steps) if steps.is_empty() => not_found("reference"),
        Ok(steps) => axum::Json(steps).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct TroubleshootQuery {
    /// An email, a username, at least 3 letters of a name, or a reference id (`HR-...`).
    #[param(min_length = 3, max_length = 320)]
    pub q: String,
}

#[derive(Serialize, ToSchema)]
pub struct TroubleshootOut {
    pub accounts: Vec<troubleshoot::AccountReport>,
    pub trace: Vec<troubleshoot::TraceStep>,
}

/// The troubleshooter: one box, one answer.
#[utoipa::path(get, path = "/admin/api/troubleshoot", params(TroubleshootQuery), responses((status = 200, body = TroubleshootOut), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn troubleshoot_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<TroubleshootQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let Ok(Query(q)) = q else {
        return bad("q", "required");
    };
    let query = q.q.trim();
    if query.chars().count() < 3 || query.len() > 320 {
        return bad("q", "3 to 320 characters");
    }
    match troubleshoot_answer(&state, &admin.tenant, query).await {
        Ok(out) => axum::Json(out).into_response(),
        Err(e) => internal(e),
    }
}

/// The troubleshooter's answer for a (validated) query in a tenant: the trace of a
/// reference id (`HR-...`), else the reports of up to five matching accounts.
pub async fn troubleshoot_answer(
    state: &AppState,
    tenant: &TenantId,
    query: &str,
) -> Result<TroubleshootOut, homeroom_directory::DirectoryError> {
    state.audit.flush().await;
    if query.starts_with("HR-") {
        let trace = troubleshoot::trace(&state.directory, &RefId::new(query), Some(tenant)).await?;
        return Ok(TroubleshootOut {
            accounts: Vec::new(),
            trace,
        });
    }
    let found = troubleshoot::find(&state.directory, tenant, query).await?;
    let mut accounts = Vec::new();
    for a in found.iter().take(5) {
        accounts.push(troubleshoot::account_report(&state.directory, a, state.now()).await?);
    }
    Ok(TroubleshootOut {
        accounts,
        trace: Vec::new(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct LimitOut {
    /// `challenged` or `blocked`.
    pub state: String,
    pub class: String,
    pub key: String,
}

/// Keys currently challenged or blocked by the rate limits.
#[utoipa::path(get, path = "/admin/api/limits", responses((status = 200, body = [LimitOut]), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn limits(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let admin = admin!(state, headers);
    let list = crate::limits::listed_for(&state, &admin.tenant).await;
    axum::Json(
        list.into_iter()
            .map(|(s, c, k)| LimitOut {
                state: s,
                class: c,
                key: k,
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftLimit {
    /// A `key` from `GET /admin/api/limits`.
    #[schema(pattern = "^rl:", max_length = 200)]
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct Lifted {
    pub key: String,
    pub lifted: bool,
}

/// Lifts the limit on a key listed by `GET /admin/api/limits` (its buckets are reset and
/// it leaves the list). A key that is not listed is 404 and nothing changes.
#[utoipa::path(post, path = "/admin/api/limits/lift", request_body = LiftLimit, responses((status = 200, body = Lifted), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)), security(("bearer" = [])))]
pub async fn lift_limit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::Json<LiftLimit>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = admin!(state, headers);
    let axum::Json(l) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    if !l.key.starts_with("rl:") || l.key.len() > 200 {
        return bad("key", "a key from GET /admin/api/limits");
    }
    // Another tenant's tenant or app key is as unknown here as an unlisted one.
    let listed = crate::limits::listed_for(&state, &admin.tenant).await;
    if !listed.iter().any(|(_, _, k)| *k == l.key) {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("key"),
            "the key is not challenged or blocked now (GET /admin/api/limits lists those)",
        );
    }
    let lifted = crate::limits::lift(&state, &l.key).await;
    changed(
        &state,
        &admin,
        "admin.limit_lifted",
        serde_json::json!({"key": l.key, "lifted": lifted}),
    );
    axum::Json(Lifted { key: l.key, lifted }).into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RosterQuery {
    /// `true`: validate and report what would change, write nothing (default `false`).
    pub dry_run: Option<bool>,
}

/// Imports a OneRoster package (the zip as the request body). `?dry_run=true` validates and
/// reports without writing.
#[utoipa::path(post, path = "/admin/api/rosters", params(RosterQuery), request_body(content = Vec<u8>, content_type = "application/zip"), responses((status = 200, body = Object, description = "The import report"), (status = 400, body = Object, description = "The import report listing each problem with file, line and column, or an error body with field and reason"), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn import_roster(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<RosterQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Response {
    let admin = admin!(state, headers);
    let Ok(Query(q)) = q else {
        return bad("dry_run", "true or false (the only parameter)");
    };
    if body.is_empty() {
        return bad("body", "send the OneRoster zip as the request body");
    }
    let opts = homeroom_roster::ImportOptions {
        dry_run: q.dry_run.unwrap_or(false),
        ..Default::default()
    };
    let mut progress = |_p: homeroom_roster::Progress<'_>| {};
    match homeroom_roster::import_zip_bytes(
        &state.directory,
        &admin.tenant,
        body.to_vec(),
        &opts,
        &mut progress,
    )
    .await
    {
        Ok(report) => {
            let ok = matches!(report.status, homeroom_roster::ImportStatus::Ok);
            changed(
                &state,
                &admin,
                "admin.roster_import",
                serde_json::json!({"ok": ok, "dry_run": opts.dry_run}),
            );
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            (
                status,
                axum::Json(serde_json::to_value(&report).unwrap_or_default()),
            )
                .into_response()
        }
        Err(e) => internal(e),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Homeroom admin API", description = "Configure a tenant's providers and apps, search accounts, read audit events and traces, run the troubleshooter, lift rate limits, import rosters."),
    paths(tenant, providers, create_provider, patch_provider, test_provider, apps, create_app, patch_app, accounts, account, account_status, invitation, reset_link, unlock, local_status, events, trace, troubleshoot_handler, limits, lift_limit, import_roster, crate::admin_accounts::create, crate::admin_accounts::roles),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> Response {
    let mut doc = ApiDoc::openapi();
    // Families have their own module and document part (crate::family_admin).
    doc.merge(crate::family_admin::FamilyApiDoc::openapi());
    doc.merge(crate::admin_classroom::ClassroomApiDoc::openapi());
    axum::Json(doc).into_response()
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(crate::admin_classroom::routes())
        .route("/admin/api/openapi.json", get(openapi))
        .route("/admin/api/tenant", get(tenant))
        .route("/admin/api/providers", get(providers).post(create_provider))
        .route(
            "/admin/api/providers/{id}",
            axum::routing::patch(patch_provider),
        )
        .route("/admin/api/providers/{id}/test", post(test_provider))
        .route("/admin/api/apps", get(apps).post(create_app))
        .route("/admin/api/apps/{id}", axum::routing::patch(patch_app))
        .route("/admin/api/accounts", get(accounts))
        .route("/admin/api/accounts/{id}", get(account))
        .route("/admin/api/accounts/{id}/status", post(account_status))
        .route("/admin/api/accounts/{id}/invitation", post(invitation))
        .route("/admin/api/accounts/{id}/reset", post(reset_link))
        .route("/admin/api/accounts/{id}/unlock", post(unlock))
        .route("/admin/api/accounts/{id}/local", get(local_status))
        .route("/admin/api/events", get(events))
        .route("/admin/api/trace/{reference}", get(trace))
        .route("/admin/api/troubleshoot", get(troubleshoot_handler))
        .route("/admin/api/limits", get(limits))
        .route("/admin/api/limits/lift", post(lift_limit))
        .route(
            "/admin/api/rosters",
            post(import_roster).layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
}
