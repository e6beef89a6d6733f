//! The whole import: read the package, parse and validate every file, plan against the
//! stored roster, then (unless a dry run) apply the plan in one transaction and log it.
//! Any error anywhere before the transaction commits means nothing is written (a failed
//! import is still logged, with its report).

use crate::RosterError;
use crate::manifest::{self, FileMode};
use crate::parse;
use crate::plan::{self, PlanContext};
use crate::problem::Problems;
use crate::report::{FileReport, ImportReport, ImportStatus};
use crate::source::{self, PackageFiles};
use homeroom_core::{Clock, Role, SystemClock, TenantId};
use homeroom_directory::{Directory, RosterImport};
use std::collections::BTreeMap;
use std::path::Path;

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Validate and plan, report what would change, write nothing (not even the log).
    pub dry_run: bool,
    /// Link a new roster person to the single existing, unrostered account of the tenant
    /// with the same email, instead of reporting the conflict.
    pub adopt_existing: bool,
    /// How `ext:*` roles map to Homeroom roles for this tenant (unmapped ones are errors).
    pub ext_roles: BTreeMap<String, Role>,
    /// The time of the import (Unix seconds); the system clock when `None`.
    pub now: Option<i64>,
}

/// What an import is doing, for a progress indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// Reading the package from disk.
    Reading,
    /// Rows parsed so far in one file (every 10,000 rows and at the end of the file).
    Rows { file: &'a str, rows: usize },
    /// Checking references and conflicts against the stored roster.
    Planning,
    /// Writing, in one transaction, this many rows.
    Applying { writes: usize },
    /// Finished.
    Done,
}

/// A progress callback.
pub type ProgressFn<'a> = dyn FnMut(Progress<'_>) + Send + 'a;

/// Imports a package from a zip file or a folder.
pub async fn import_path(
    dir: &Directory,
    tenant: &TenantId,
    path: &Path,
    opts: &ImportOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<ImportReport, RosterError> {
    ensure_tenant(dir, tenant).await?;
    let mut problems = Problems::new();
    progress(Progress::Reading);
    let files = source::read_path(path, &mut problems);
    run(dir, tenant, files, problems, opts, progress).await
}

/// Imports a zipped package held in memory (an upload).
pub async fn import_zip_bytes(
    dir: &Directory,
    tenant: &TenantId,
    bytes: Vec<u8>,
    opts: &ImportOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<ImportReport, RosterError> {
    ensure_tenant(dir, tenant).await?;
    let mut problems = Problems::new();
    progress(Progress::Reading);
    let files = source::read_zip_bytes(bytes, "upload.zip", &mut problems);
    run(dir, tenant, files, problems, opts, progress).await
}

async fn ensure_tenant(dir: &Directory, tenant: &TenantId) -> Result<(), RosterError> {
    match dir.get_tenant(tenant).await? {
        Some(_) => Ok(()),
        None => Err(RosterError::UnknownTenant(tenant.to_string())),
    }
}

fn now_or(opts: &ImportOptions) -> i64 {
    opts.now.unwrap_or_else(|| SystemClock.now())
}

/// `bulk` / `delta` / `mixed` / `empty` over the files Homeroom reads.
fn overall_mode(modes: &[FileMode]) -> &'static str {
    let bulk = modes.contains(&FileMode::Bulk);
    let delta = modes.contains(&FileMode::Delta);
    match (bulk, delta) {
        (true, true) => "mixed",
        (true, false) => "bulk",
        (false, true) => "delta",
        (false, false) => "empty",
    }
}

async fn run(
    dir: &Directory,
    tenant: &TenantId,
    files: Option<PackageFiles>,
    mut problems: Problems,
    opts: &ImportOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<ImportReport, RosterError> {
    let started_at = now_or(opts);
    let mut report = ImportReport {
        import_id: format!("imp_{}", ulid::Ulid::new().to_string().to_lowercase()),
        tenant: tenant.to_string(),
        status: ImportStatus::Failed,
        dry_run: opts.dry_run,
        started_at,
        finished_at: started_at,
        oneroster_version: None,
        mode: "empty".into(),
        files: Vec::new(),
        ignored_files: Vec::new(),
        problems: Problems::new(),
        conflicts: Vec::new(),
        counts: Default::default(),
        failure: None,
    };

    let Some(files) = files else {
        return finish_failed(dir, report, problems, opts).await;
    };
    report.ignored_files = files.ignored.clone();
    let Some(manifest) = manifest::parse(&files, &mut problems) else {
        return finish_failed(dir, report, problems, opts).await;
    };
    report.oneroster_version = Some(manifest.version.as_str().to_owned());
    for (name, f) in &files.files {
        let handled = matches!(*name, "orgs" | "users" | "classes" | "enrollments")
            || (*name == "roles" && manifest.version == manifest::Version::V1p2);
        if *name != "manifest" && !handled {
            report.ignored_files.push(f.path.clone());
        }
    }
    report.ignored_files.sort();

    let mut rows_by_file: BTreeMap<String, usize> = BTreeMap::new();
    let parsed = {
        let mut on_rows = |file: &str, rows: usize| {
            rows_by_file.insert(file.to_owned(), rows);
            progress(Progress::Rows { file, rows });
        };
        parse::parse(
            &files,
            manifest,
            &opts.ext_roles,
            &mut problems,
            &mut on_rows,
        )
    };
    drop(files);
    let modes = [
        (&parsed.orgs.file, parsed.orgs.mode),
        (&parsed.users.file, parsed.users.mode),
        (&parsed.roles.file, parsed.roles.mode),
        (&parsed.classes.file, parsed.classes.mode),
        (&parsed.enrollments.file, parsed.enrollments.mode),
    ];
    for (file, mode) in modes {
        if mode != FileMode::Absent {
            report.files.push(FileReport {
                file: file.clone(),
                mode: mode.as_str().to_owned(),
                rows: rows_by_file.get(file.as_str()).copied().unwrap_or(0),
            });
        }
    }
    report.mode = overall_mode(&modes.map(|(_, m)| m)).to_owned();
    if problems.has_errors() {
        return finish_failed(dir, report, problems, opts).await;
    }

    progress(Progress::Planning);
    let snapshot = dir.roster_snapshot(tenant).await?;
    let ctx = PlanContext {
        tenant: tenant.clone(),
        now: started_at,
        import_id: report.import_id.clone(),
        ext_roles: opts.ext_roles.clone(),
        adopt_existing: opts.adopt_existing,
    };
    let plan = plan::plan(&parsed, &snapshot, &ctx, &mut problems);
    drop(snapshot);
    report.counts = plan.counts;
    report.conflicts = plan.conflicts;
    if problems.has_errors() {
        return finish_failed(dir, report, problems, opts).await;
    }

    report.status = ImportStatus::Ok;
    report.problems = problems;
    let mut changes = plan.changes;
    if opts.dry_run {
        report.finished_at = now_or(opts);
        progress(Progress::Done);
        return Ok(report);
    }
    let writes = changes.accounts_create.len()
        + changes.accounts_update.len()
        + changes.users_upsert.len()
        + changes.orgs_upsert.len()
        + changes.orgs_delete.len()
        + changes.roles_upsert.len()
        + changes.roles_delete.len()
        + changes.classes_upsert.len()
        + changes.classes_delete.len()
        + changes.enrollments_upsert.len()
        + changes.enrollments_delete.len();
    progress(Progress::Applying { writes });
    report.finished_at = now_or(opts);
    changes.import = import_row(&report, &parsed.users.mode);
    match dir.apply_roster_changes(&changes).await {
        Ok(()) => {
            progress(Progress::Done);
            Ok(report)
        }
        Err(e) => {
            // Rolled back: log the failure (best effort) and surface the error.
            report.status = ImportStatus::Failed;
            report.failure = Some(e.to_string());
            let row = import_row(&report, &parsed.users.mode);
            if let Err(log_err) = dir.record_roster_import(&row).await {
                tracing::warn!(error = %log_err, "could not log the failed roster import");
            }
            Err(RosterError::Directory(e))
        }
    }
}

fn import_row(report: &ImportReport, users_mode: &FileMode) -> RosterImport {
    let s = report.summary();
    RosterImport {
        id: report.import_id.clone(),
        tenant: TenantId::new(report.tenant.clone()),
        started_at: report.started_at,
        finished_at: report.finished_at,
        mode: report.mode.clone(),
        oneroster_version: report.oneroster_version.clone(),
        status: match report.status {
            ImportStatus::Ok => "ok".into(),
            ImportStatus::Failed => "failed".into(),
        },
        users_bulk: *users_mode == FileMode::Bulk,
        added: s.added as i64,
        updated: s.updated as i64,
        deactivated: s.deactivated as i64,
        conflicts: s.conflicts as i64,
        errors: report.problems.error_count as i64,
        report: serde_json::to_value(report).unwrap_or(serde_json::Value::Null),
    }
}

/// Ends a refused import: nothing applied; the attempt is logged unless a dry run.
async fn finish_failed(
    dir: &Directory,
    mut report: ImportReport,
    problems: Problems,
    opts: &ImportOptions,
) -> Result<ImportReport, RosterError> {
    report.status = ImportStatus::Failed;
    report.problems = problems;
    report.finished_at = now_or(opts);
    // A failed import changes nobody: the counts describe nothing that happened.
    report.counts = Default::default();
    if !opts.dry_run {
        dir.record_roster_import(&import_row(&report, &FileMode::Absent))
            .await?;
    }
    Ok(report)
}
