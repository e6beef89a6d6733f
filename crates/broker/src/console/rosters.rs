//! The console's roster pages: upload a OneRoster zip (a `multipart/form-data` form with
//! the CSRF token, capped at [`MAX_UPLOAD`]) imported by the same code as
//! `POST /admin/api/rosters`, the list of imports with status and counts, and each
//! import's problems (file, line, column, reason) and conflicts.

use super::{Ctx, authenticate, authenticate_post, failed, message, not_found, render};
use crate::AppState;
use crate::admin;
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use homeroom_core::clock::rfc3339;
use homeroom_roster::{ImportReport, ImportStatus, Problem};
use http::{HeaderMap, StatusCode, header};
use std::collections::HashMap;

/// The largest upload accepted (the request body, multipart framing included).
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// A `name="value"` parameter of a Content-Disposition header.
fn disposition_param(h: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=\"");
    let mut at = 0;
    while let Some(i) = h[at..].find(&pat) {
        let start = at + i;
        // Whole parameter name only (`name=` must not match inside `filename=`).
        let ok = start == 0 || matches!(h.as_bytes()[start - 1], b' ' | b';' | b'\t');
        let vstart = start + pat.len();
        if ok {
            return h[vstart..]
                .find('"')
                .map(|end| h[vstart..vstart + end].to_owned());
        }
        at = vstart;
    }
    None
}

/// Splits a `multipart/form-data` body (RFC 7578) into its parts; `Err` says what is wrong.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, &'static str> {
    let (mime, params) = content_type
        .split_once(';')
        .ok_or("not a multipart/form-data request")?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return Err("not a multipart/form-data request");
    }
    let boundary = params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or("the multipart boundary is missing")?;
    let delim = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut pos = find(body, &delim, 0).ok_or("the form is empty")? + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err("malformed multipart body");
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("malformed part headers")?;
        let head =
            std::str::from_utf8(&body[pos..head_end]).map_err(|_| "malformed part headers")?;
        let mut next_delim = b"\r\n".to_vec();
        next_delim.extend_from_slice(&delim);
        let data_start = head_end + 4;
        let data_end = find(body, &next_delim, data_start).ok_or("the form is cut short")?;
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .ok_or("a part has no Content-Disposition")?;
        let name = disposition_param(&disposition, "name").ok_or("a part has no name")?;
        parts.push(Part {
            name,
            filename: disposition_param(&disposition, "filename"),
            data: body[data_start..data_end].to_vec(),
        });
        if parts.len() > 20 {
            return Err("too many form fields");
        }
        pos = data_end + next_delim.len();
    }
}

struct ImportRow {
    id: String,
    finished: String,
    status: String,
    ok: bool,
    mode: String,
    added: i64,
    updated: i64,
    deactivated: i64,
    conflicts: i64,
    errors: i64,
}

struct ProblemRow {
    severity: &'static str,
    file: String,
    line: String,
    column: String,
    code: String,
    reason: String,
}

fn problem_row(p: &Problem, severity: &'static str) -> ProblemRow {
    ProblemRow {
        severity,
        file: p.file.clone(),
        line: p.line.map(|l| l.to_string()).unwrap_or_default(),
        column: p.column.clone().unwrap_or_default(),
        code: p.code.clone(),
        reason: p.reason.clone(),
    }
}

/// The problems and conflicts of a report, as the pages list them.
struct Details {
    title: String,
    status: String,
    ok: bool,
    summary: String,
    problems: Vec<ProblemRow>,
    more_errors: usize,
    conflicts: Vec<String>,
    failure: String,
}

fn details(title: String, r: &ImportReport) -> Details {
    let mut problems: Vec<ProblemRow> = r
        .problems
        .errors
        .iter()
        .map(|p| problem_row(p, "error"))
        .collect();
    problems.extend(
        r.problems
            .warnings
            .iter()
            .map(|p| problem_row(p, "warning")),
    );
    let c = &r.counts;
    Details {
        title,
        ok: r.status == ImportStatus::Ok,
        status: match r.status {
            ImportStatus::Ok if r.dry_run => "ok (dry run: nothing written)".into(),
            ImportStatus::Ok => "ok".into(),
            ImportStatus::Failed => "failed: nothing was written".into(),
        },
        summary: format!(
            "people: {} added, {} updated, {} deactivated, {} in conflict",
            c.users.added, c.users.updated, c.users.deactivated, c.users.in_conflict
        ),
        more_errors: r
            .problems
            .error_count
            .saturating_sub(r.problems.errors.len()),
        problems,
        conflicts: r.conflicts.iter().map(ToString::to_string).collect(),
        failure: r.failure.clone().unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "console_rosters.html")]
struct RostersPage<'a> {
    me: &'a super::Me,
    max_mib: usize,
    error: &'a str,
    result: Option<Details>,
    imports: Vec<ImportRow>,
}

async fn rosters_page(
    state: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    error: &str,
    result: Option<Details>,
) -> Response {
    let list = match state.directory.roster_imports(&ctx.admin.tenant, 50).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let page = RostersPage {
        me: &ctx.me,
        max_mib: MAX_UPLOAD / (1024 * 1024),
        error,
        result,
        imports: list
            .into_iter()
            .map(|i| ImportRow {
                id: i.id.clone(),
                finished: rfc3339(i.finished_at),
                ok: i.succeeded(),
                status: i.status,
                mode: i.mode,
                added: i.added,
                updated: i.updated,
                deactivated: i.deactivated,
                conflicts: i.conflicts,
                errors: i.errors,
            })
            .collect(),
    };
    render(state, ctx, status, &page)
}

async fn rosters(State(state): State<AppState>, headers: HeaderMap, uri: http::Uri) -> Response {
    let ctx = match authenticate(&state, &headers, "rosters", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    rosters_page(&state, &ctx, StatusCode::OK, "", None).await
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(_) => {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The file is too large",
                &format!(
                    "Roster uploads are limited to {} MiB. Nothing was imported; use `homeroom roster import` for larger packages.",
                    MAX_UPLOAD / (1024 * 1024)
                ),
            );
        }
    };
    // The signed-in admin first: nobody else's upload is parsed.
    if let Err(r) = authenticate(&state, &headers, "rosters", None).await {
        return r;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parts = parse_multipart(ct, &body);
    let form: HashMap<String, String> = parts
        .as_ref()
        .map(|ps| {
            ps.iter()
                .filter(|p| p.filename.is_none() && p.data.len() <= 200)
                .map(|p| {
                    (
                        p.name.clone(),
                        String::from_utf8_lossy(&p.data).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ctx = match authenticate_post(&state, &headers, "rosters", &form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let parts = match parts {
        Ok(p) => p,
        Err(why) => {
            return rosters_page(&state, &ctx, StatusCode::BAD_REQUEST, why, None).await;
        }
    };
    let Some(file) = parts
        .into_iter()
        .find(|p| p.name == "file" && p.filename.is_some())
        .filter(|p| !p.data.is_empty())
    else {
        return rosters_page(
            &state,
            &ctx,
            StatusCode::BAD_REQUEST,
            "Choose the OneRoster zip file to import.",
            None,
        )
        .await;
    };
    if !file.data.starts_with(b"PK") {
        return rosters_page(
            &state,
            &ctx,
            StatusCode::BAD_REQUEST,
            "The file is not a zip: export the OneRoster CSV package as a .zip.",
            None,
        )
        .await;
    }
    let opts = homeroom_roster::ImportOptions {
        dry_run: form.get("dry_run").is_some_and(|v| v == "true"),
        ..Default::default()
    };
    let mut progress = |_p: homeroom_roster::Progress<'_>| {};
    let report = match homeroom_roster::import_zip_bytes(
        &state.directory,
        &ctx.admin.tenant,
        file.data,
        &opts,
        &mut progress,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let ok = report.status == ImportStatus::Ok;
    admin::changed(
        &state,
        &ctx.admin,
        "admin.roster_import",
        serde_json::json!({"ok": ok, "dry_run": opts.dry_run, "via": "console"}),
    );
    let name = file.filename.unwrap_or_default();
    let d = details(format!("Import of {name}"), &report);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    rosters_page(&state, &ctx, status, "", Some(d)).await
}

#[derive(Template)]
#[template(path = "console_roster_import.html")]
struct ImportPage<'a> {
    me: &'a super::Me,
    d: Details,
}

async fn import_detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: http::Uri,
    Path(id): Path<String>,
) -> Response {
    let ctx = match authenticate(&state, &headers, "rosters", Some(&uri)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list = match state
        .directory
        .roster_imports(&ctx.admin.tenant, 1000)
        .await
    {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let Some(i) = list.into_iter().find(|i| i.id == id) else {
        return not_found("roster import");
    };
    let title = format!("Import of {}", rfc3339(i.finished_at));
    let d = match serde_json::from_value::<ImportReport>(i.report) {
        Ok(r) => details(title, &r),
        Err(e) => return failed(format!("stored import report: {e}")),
    };
    render(&state, &ctx, StatusCode::OK, &ImportPage { me: &ctx.me, d })
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console/rosters",
            get(rosters)
                .post(upload)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route("/console/rosters/{id}", get(import_detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_and_refusals() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.zip\"\r\nContent-Type: application/zip\r\n\r\nPK\x03\x04\r\n--data\r\n--XyZ--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "csrf");
        assert_eq!(parts[0].data, b"tok");
        assert_eq!(parts[1].filename.as_deref(), Some("r.zip"));
        assert_eq!(parts[1].data, b"PK\x03\x04\r\n--data");
        assert!(parse_multipart("application/zip", body).is_err());
        assert!(parse_multipart("multipart/form-data; boundary=XyZ", &body[..60]).is_err());
        assert!(parse_multipart("multipart/form-data", body).is_err());
        assert!(parse_multipart("multipart/form-data; boundary=other", body).is_err());
    }
}
