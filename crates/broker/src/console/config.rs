//! Console forms to add and edit providers and apps. The input is checked by the admin
//! API's own checks ([`crate::admin_ops`]); a refusal names the field (`config.issuer`,
//! `redirect_uris[1]`) next to it and writes nothing. Changes are audited like the API's.

use super::{
    Ctx, FormResult, authenticate, authenticate_post, failed, form_fields, not_found, render,
    see_other,
};
use crate::AppState;
use crate::admin::{self, AppCreate, AppPatch, ProviderCreate};
use crate::admin_ops::{self, Invalid, is_secret_key};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use homeroom_core::{ClientId, ProviderId};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::collections::HashMap;

const KINDS: [&str; 7] = [
    "oidc",
    "google",
    "microsoft",
    "clever",
    "classlink",
    "gg4l",
    "saml",
];

/// The form's own inputs for settings keys; the rest go in the JSON box.
const INPUT_KEYS: [&str; 3] = ["issuer", "client_id", "client_secret"];

fn known_keys(kind: &str) -> &'static str {
    match kind {
        "oidc" => {
            "issuer, client_id, client_secret, scopes, discovery_url, use_userinfo, trust_email, clock_skew_secs, token_auth, timeout_secs"
        }
        "google" => {
            "client_id, client_secret, hosted_domains, allow_consumer_accounts, issuer, discovery_url, clock_skew_secs, timeout_secs"
        }
        "microsoft" => {
            "client_id, client_secret, tenant, allowed_tenants, authority, clock_skew_secs, timeout_secs"
        }
        "clever" => {
            "client_id, client_secret, district_ids, mode, oauth_base, api_base, require_district_authorization, require_email, claims, roles"
        }
        "classlink" => {
            "client_id, client_secret, tenant_ids, launchpad_base, api_base, scopes, require_email, claims, roles"
        }
        "gg4l" => {
            "client_id, client_secret, base_url, jwks_url, issuer, district_ids, org_ids, org_guid, require_email, claims, roles"
        }
        "saml" => {
            "idp_metadata_url, idp_metadata_xml, idp_entity_id, attribute mappings (see README)"
        }
        _ => "see README",
    }
}

#[derive(Template)]
#[template(path = "console_provider_form.html")]
struct ProviderForm<'a> {
    me: &'a super::Me,
    editing: bool,
    id: String,
    kind: String,
    kinds: Vec<&'static str>,
    display_name: String,
    issuer: String,
    client_id: String,
    secret_set: bool,
    settings: String,
    known_keys: &'static str,
    error_field: String,
    error_reason: String,
}

impl ProviderForm<'_> {
    /// The reason when the refused field is exactly `field`.
    fn err(&self, field: &str) -> &str {
        if self.error_field == field {
            &self.error_reason
        } else {
            ""
        }
    }
    /// The reason when the refused field has no input of its own (shown by the JSON box).
    fn settings_err(&self) -> &str {
        let own = ["id", "kind", "display_name"]
            .iter()
            .any(|f| *f == self.error_field)
            || INPUT_KEYS
                .iter()
                .any(|k| self.error_field == format!("config.{k}"));
        if own { "" } else { &self.error_reason }
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// The settings shown in the JSON box: everything but the inputs and the secrets.
fn other_settings(config: &Value) -> String {
    let mut o = config.as_object().cloned().unwrap_or_default();
    o.retain(|k, _| !INPUT_KEYS.contains(&k.as_str()) && !is_secret_key(k));
    if o.is_empty() {
        "{}".into()
    } else {
        serde_json::to_string_pretty(&Value::Object(o)).unwrap_or_else(|_| "{}".into())
    }
}

fn field(form: &HashMap<String, String>, k: &str) -> String {
    form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default()
}

/// The JSON box as an object, or the refusal naming it.
fn settings_object(
    form: &HashMap<String, String>,
) -> Result<serde_json::Map<String, Value>, Invalid> {
    let raw = field(form, "settings");
    if raw.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(&raw) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Invalid {
            field: "config".into(),
            reason: "the other settings must be a JSON object ({\"key\": value})".into(),
        }),
        Err(e) => Err(Invalid {
            field: "config".into(),
            reason: format!("not valid JSON: {e}"),
        }),
    }
}

fn provider_form_page(
    state: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    form: ProviderForm<'_>,
) -> Response {
    render(state, ctx, status, &form)
}

async fn new_provider_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let ctx = match authenticate(&state, &headers, "providers", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let page = ProviderForm {
        me: &ctx.me,
        editing: false,
        id: String::new(),
        kind: "oidc".into(),
        kinds: KINDS.to_vec(),
        display_name: String::new(),
        issuer: String::new(),
        client_id: String::new(),
        secret_set: false,
        settings: "{}".into(),
        known_keys: known_keys("oidc"),
        error_field: String::new(),
        error_reason: String::new(),
    };
    provider_form_page(&state, &ctx, StatusCode::OK, page)
}

async fn create_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormResult,
) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "providers", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let kind = field(&form, "kind");
    let mut page = ProviderForm {
        me: &ctx.me,
        editing: false,
        id: field(&form, "id"),
        kinds: KINDS.to_vec(),
        display_name: field(&form, "display_name"),
        issuer: field(&form, "issuer"),
        client_id: field(&form, "client_id"),
        secret_set: false,
        settings: form.get("settings").cloned().unwrap_or_default(),
        known_keys: known_keys(&kind),
        kind,
        error_field: String::new(),
        error_reason: String::new(),
    };
    let result = async {
        let mut config = settings_object(&form)?;
        for k in INPUT_KEYS {
            let v = field(&form, k);
            if !v.is_empty() {
                config.insert(k.into(), Value::String(v));
            }
        }
        let c = ProviderCreate {
            id: page.id.clone(),
            kind: page.kind.clone(),
            display_name: page.display_name.clone(),
            config: Value::Object(config),
        };
        admin_ops::check_provider_create(&c)?;
        Ok::<_, Invalid>(c)
    }
    .await;
    let c = match result {
        Ok(c) => c,
        Err(e) => {
            page.error_field = e.field;
            page.error_reason = e.reason;
            return provider_form_page(&state, &ctx, StatusCode::BAD_REQUEST, page);
        }
    };
    let pid = ProviderId::new(c.id.clone());
    match state.directory.get_provider(&pid).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            page.error_field = "id".into();
            page.error_reason = "a provider with this id already exists".into();
            return provider_form_page(&state, &ctx, StatusCode::CONFLICT, page);
        }
        Err(e) => return failed(e),
    }
    let rec = homeroom_directory::ProviderRecord {
        id: pid,
        tenant: ctx.admin.tenant.clone(),
        kind: c.kind,
        display_name: c.display_name.trim().to_owned(),
        enabled: true,
        config: c.config,
    };
    if let Err(e) = state.directory.upsert_provider(&rec).await {
        return failed(e);
    }
    if let Err(e) = state
        .providers
        .reload(&state.directory, &state.http, state.clock.clone())
        .await
    {
        return failed(e);
    }
    admin::changed(
        &state,
        &ctx.admin,
        "admin.provider_created",
        serde_json::json!({"provider": rec.id, "kind": rec.kind, "via": "console"}),
    );
    see_other("/console/providers?done=created")
}

async fn own_provider(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
) -> Result<homeroom_directory::ProviderRecord, Response> {
    match state.directory.get_provider(&ProviderId::new(id)).await {
        Ok(Some(p)) if p.tenant == ctx.admin.tenant => Ok(p),
        Ok(_) => Err(not_found("provider")),
        Err(e) => Err(failed(e)),
    }
}

async fn edit_provider_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(id): Path<String>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "providers", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rec = match own_provider(&state, &ctx, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let page = ProviderForm {
        me: &ctx.me,
        editing: true,
        id: rec.id.to_string(),
        kinds: KINDS.to_vec(),
        display_name: rec.display_name.clone(),
        issuer: str_of(&rec.config, "issuer"),
        client_id: str_of(&rec.config, "client_id"),
        secret_set: rec.config.get("client_secret").is_some(),
        settings: other_settings(&rec.config),
        known_keys: known_keys(&rec.kind),
        kind: rec.kind,
        error_field: String::new(),
        error_reason: String::new(),
    };
    provider_form_page(&state, &ctx, StatusCode::OK, page)
}

async fn save_provider_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: FormResult,
) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "providers", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    save_provider(&state, &ctx, &id, &form).await
}

/// Saves the edit form (POST `/console/providers/{id}/edit`): the inputs and the JSON box
/// replace the shown settings; secrets not shown are kept unless a new one is typed.
async fn save_provider(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    form: &HashMap<String, String>,
) -> Response {
    let mut rec = match own_provider(state, ctx, id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut page = ProviderForm {
        me: &ctx.me,
        editing: true,
        id: rec.id.to_string(),
        kinds: KINDS.to_vec(),
        display_name: field(form, "display_name"),
        issuer: field(form, "issuer"),
        client_id: field(form, "client_id"),
        secret_set: rec.config.get("client_secret").is_some(),
        settings: form.get("settings").cloned().unwrap_or_default(),
        known_keys: known_keys(&rec.kind),
        kind: rec.kind.clone(),
        error_field: String::new(),
        error_reason: String::new(),
    };
    let result = (|| {
        admin_ops::check_display_name("display_name", &page.display_name)?;
        let shown = settings_object(form)?;
        let mut patch = serde_json::Map::new();
        // Shown keys that were removed from the box are removed.
        if let Some(cur) = rec.config.as_object() {
            for k in cur.keys() {
                if !INPUT_KEYS.contains(&k.as_str()) && !is_secret_key(k) && !shown.contains_key(k)
                {
                    patch.insert(k.clone(), Value::Null);
                }
            }
        }
        patch.extend(shown);
        for k in INPUT_KEYS {
            let v = field(form, k);
            let value = if v.is_empty() && !is_secret_key(k) {
                Value::Null
            } else {
                Value::String(v)
            };
            patch.insert(k.into(), value);
        }
        let merged = admin_ops::merge_settings(&rec.config, &Value::Object(patch))?;
        admin_ops::check_provider_settings(&rec.kind, &merged)?;
        Ok::<_, Invalid>(merged)
    })();
    match result {
        Ok(merged) => {
            rec.config = merged;
            rec.display_name = page.display_name.clone();
        }
        Err(e) => {
            page.error_field = e.field;
            page.error_reason = e.reason;
            return provider_form_page(state, ctx, StatusCode::BAD_REQUEST, page);
        }
    }
    if let Err(e) = admin::save_provider(state, &ctx.admin, &rec).await {
        return failed(e);
    }
    see_other("/console/providers?done=saved")
}

// ---------------------------------------------------------------- apps

#[derive(Template)]
#[template(path = "console_app_form.html")]
struct AppForm<'a> {
    me: &'a super::Me,
    editing: bool,
    client_id: String,
    name: String,
    redirect_uris: String,
    post_logout_redirect_uris: String,
    enabled: bool,
    public: bool,
    native: bool,
    scopes: String,
    id_token_alg: String,
    start_url: String,
    initiate_login_uri: String,
    allowed_origins: String,
    error_field: String,
    error_reason: String,
}

impl AppForm<'_> {
    /// The reason when the refused field is `field` or one of its items (`field[2]`).
    fn err(&self, field: &str) -> &str {
        let hit = self.error_field == field
            || self
                .error_field
                .strip_prefix(field)
                .is_some_and(|rest| rest.starts_with('['));
        if hit { &self.error_reason } else { "" }
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn checked(form: &HashMap<String, String>, k: &str) -> bool {
    form.get(k).is_some_and(|v| v == "true")
}

fn app_form_from<'a>(
    me: &'a super::Me,
    editing: bool,
    form: &HashMap<String, String>,
) -> AppForm<'a> {
    AppForm {
        me,
        editing,
        client_id: field(form, "client_id"),
        name: field(form, "name"),
        redirect_uris: form.get("redirect_uris").cloned().unwrap_or_default(),
        post_logout_redirect_uris: form
            .get("post_logout_redirect_uris")
            .cloned()
            .unwrap_or_default(),
        enabled: checked(form, "enabled"),
        public: checked(form, "public"),
        native: checked(form, "native"),
        scopes: field(form, "scopes"),
        id_token_alg: field(form, "id_token_alg"),
        start_url: field(form, "start_url"),
        initiate_login_uri: field(form, "initiate_login_uri"),
        allowed_origins: form.get("allowed_origins").cloned().unwrap_or_default(),
        error_field: String::new(),
        error_reason: String::new(),
    }
}

async fn new_app_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let ctx = match authenticate(&state, &headers, "apps", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut page = app_form_from(&ctx.me, false, &HashMap::new());
    page.scopes = "openid profile email offline_access".into();
    page.id_token_alg = "RS256".into();
    render(&state, &ctx, StatusCode::OK, &page)
}

async fn create_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormResult,
) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "apps", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut page = app_form_from(&ctx.me, false, &form);
    let c = AppCreate {
        client_id: page.client_id.clone(),
        name: page.name.clone(),
        redirect_uris: lines(&page.redirect_uris),
        post_logout_redirect_uris: lines(&page.post_logout_redirect_uris),
        public: page.public,
        native: page.native,
        scopes: opt(page.scopes.clone()).map(|s| s.split_whitespace().map(str::to_owned).collect()),
        id_token_alg: opt(page.id_token_alg.clone()),
        start_url: opt(page.start_url.clone()),
        initiate_login_uri: opt(page.initiate_login_uri.clone()),
        allowed_origins: lines(&page.allowed_origins),
    };
    let (scopes, alg) = match admin_ops::check_app_create(&c) {
        Ok(v) => v,
        Err(e) => {
            page.error_field = e.field;
            page.error_reason = e.reason;
            return render(&state, &ctx, StatusCode::BAD_REQUEST, &page);
        }
    };
    let id = ClientId::new(c.client_id.clone());
    match state.directory.get_app(&id).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            page.error_field = "client_id".into();
            page.error_reason = "an app with this client_id already exists".into();
            return render(&state, &ctx, StatusCode::CONFLICT, &page);
        }
        Err(e) => return failed(e),
    }
    let secret = if c.public {
        None
    } else {
        match homeroom_core::crypto::random_token(32) {
            Ok(s) => Some(s),
            Err(e) => return failed(e),
        }
    };
    let record = homeroom_directory::AppRecord {
        client_id: id,
        tenant: ctx.admin.tenant.clone(),
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
        return failed(e);
    }
    state.caches.forget_apps();
    admin::changed(
        &state,
        &ctx.admin,
        "admin.app_created",
        serde_json::json!({"app": record.client_id, "public": c.public, "via": "console"}),
    );
    let notice = format!("The app {} was added.", record.name);
    super::apps_page(
        &state,
        &ctx,
        &notice,
        secret.as_deref().unwrap_or(""),
        record.client_id.as_str(),
    )
    .await
}

async fn own_app(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
) -> Result<homeroom_directory::AppRecord, Response> {
    match state.directory.get_app(&ClientId::new(id)).await {
        Ok(Some(a)) if a.tenant == ctx.admin.tenant => Ok(a),
        Ok(_) => Err(not_found("app")),
        Err(e) => Err(failed(e)),
    }
}

async fn edit_app_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(id): Path<String>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "apps", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let app = match own_app(&state, &ctx, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut page = app_form_from(&ctx.me, true, &HashMap::new());
    page.client_id = app.client_id.to_string();
    page.name = app.name;
    page.redirect_uris = app.redirect_uris.join("\n");
    page.post_logout_redirect_uris = app.post_logout_redirect_uris.join("\n");
    page.enabled = app.enabled;
    render(&state, &ctx, StatusCode::OK, &page)
}

async fn app_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    form: FormResult,
) -> Response {
    let form = form_fields(form);
    let ctx = match authenticate_post(&state, &headers, "apps", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut app = match own_app(&state, &ctx, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let patch = match action.as_str() {
        "edit" => AppPatch {
            name: Some(field(&form, "name")),
            redirect_uris: Some(lines(
                form.get("redirect_uris").map(String::as_str).unwrap_or(""),
            )),
            post_logout_redirect_uris: Some(lines(
                form.get("post_logout_redirect_uris")
                    .map(String::as_str)
                    .unwrap_or(""),
            )),
            enabled: Some(checked(&form, "enabled")),
        },
        "enabled" => AppPatch {
            name: None,
            redirect_uris: None,
            post_logout_redirect_uris: None,
            enabled: match form.get("enabled").map(String::as_str) {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => {
                    return super::message(
                        StatusCode::BAD_REQUEST,
                        "Bad request",
                        "enabled must be true or false. Nothing was changed.",
                    );
                }
            },
        },
        _ => return not_found("action"),
    };
    let native = app.redirect_uris.iter().any(|u| !u.starts_with("http"));
    if let Err(e) = admin_ops::check_app_patch(&patch, native) {
        let mut page = app_form_from(&ctx.me, true, &form);
        page.client_id = app.client_id.to_string();
        page.error_field = e.field;
        page.error_reason = e.reason;
        return render(&state, &ctx, StatusCode::BAD_REQUEST, &page);
    }
    if let Some(n) = patch.name {
        app.name = n.trim().to_owned();
    }
    if let Some(u) = patch.redirect_uris {
        app.redirect_uris = u;
    }
    if let Some(u) = patch.post_logout_redirect_uris {
        app.post_logout_redirect_uris = u;
    }
    if let Some(e) = patch.enabled {
        app.enabled = e;
    }
    if let Err(e) = state.directory.upsert_app(&app).await {
        return failed(e);
    }
    state.caches.forget_apps();
    admin::changed(
        &state,
        &ctx.admin,
        "admin.app_changed",
        serde_json::json!({"app": app.client_id, "enabled": app.enabled, "via": "console"}),
    );
    see_other("/console/apps?done=saved")
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console/providers/new",
            get(new_provider_form).post(create_provider),
        )
        .route(
            "/console/providers/{id}/edit",
            get(edit_provider_form).post(save_provider_form),
        )
        .route("/console/apps/new", get(new_app_form).post(create_app))
        .route(
            "/console/apps/{id}/edit",
            get(edit_app_form).post(|s, h, Path(id): Path<String>, f| {
                app_action(s, h, Path((id, "edit".to_owned())), f)
            }),
        )
        .route(
            "/console/apps/{id}/{action}",
            axum::routing::post(app_action),
        )
}
