//! The import report: what was read, every problem, every conflict, and the counts. It is
//! printed by the CLI, returned by the library, and stored (as JSON) in the import log.

use crate::plan::{Conflict, Counts};
use crate::problem::Problems;
use serde::{Deserialize, Serialize};

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Applied (or, for a dry run, would be applied).
    Ok,
    /// Refused: nothing was written (see `problems.errors` and `failure`).
    Failed,
}

/// One file read from the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// Name as written in the package.
    pub file: String,
    /// `bulk` or `delta`.
    pub mode: String,
    /// Data rows read (including rows with errors).
    pub rows: usize,
}

/// The four numbers of the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub added: usize,
    pub updated: usize,
    pub deactivated: usize,
    pub conflicts: usize,
}

/// Everything about one import.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportReport {
    pub import_id: String,
    pub tenant: String,
    pub status: ImportStatus,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: i64,
    pub oneroster_version: Option<String>,
    /// `bulk`, `delta`, `mixed` or `empty`.
    pub mode: String,
    pub files: Vec<FileReport>,
    /// Files of the package that Homeroom does not read (other OneRoster files, stray files).
    pub ignored_files: Vec<String>,
    pub problems: Problems,
    pub conflicts: Vec<Conflict>,
    pub counts: Counts,
    /// Why a failed import failed, when it is not a package problem (a database error).
    pub failure: Option<String>,
}

impl ImportReport {
    pub fn succeeded(&self) -> bool {
        self.status == ImportStatus::Ok
    }

    pub fn summary(&self) -> Summary {
        Summary {
            added: self.counts.users.added,
            updated: self.counts.users.updated,
            deactivated: self.counts.users.deactivated,
            conflicts: self.conflicts.len(),
        }
    }

    /// A plain-text rendering: summary line, then errors, conflicts and warnings.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let s = self.summary();
        let verdict = match (self.status, self.dry_run) {
            (ImportStatus::Failed, _) => "FAILED (nothing written)",
            (ImportStatus::Ok, true) => "dry run OK (nothing written)",
            (ImportStatus::Ok, false) => "OK",
        };
        let _ = writeln!(
            out,
            "import {} of tenant {}: {verdict}",
            self.import_id, self.tenant
        );
        let _ = writeln!(
            out,
            "OneRoster {} ({}): {} added, {} updated, {} deactivated, {} conflicts",
            self.oneroster_version.as_deref().unwrap_or("?"),
            self.mode,
            s.added,
            s.updated,
            s.deactivated,
            s.conflicts
        );
        for f in &self.files {
            let _ = writeln!(out, "  {} ({}): {} rows", f.file, f.mode, f.rows);
        }
        let c = &self.counts;
        for (name, k) in [
            ("orgs", c.orgs),
            ("classes", c.classes),
            ("enrollments", c.enrollments),
            ("roles", c.roles),
        ] {
            if k != Default::default() {
                let _ = writeln!(
                    out,
                    "  {name}: {} added, {} updated, {} removed, {} unchanged, {} stale",
                    k.added, k.updated, k.removed, k.unchanged, k.stale
                );
            }
        }
        if !self.ignored_files.is_empty() {
            let _ = writeln!(out, "ignored files: {}", self.ignored_files.join(", "));
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(out, "failure: {f}");
        }
        if self.problems.error_count > 0 {
            let _ = writeln!(out, "{} error(s):", self.problems.error_count);
            for p in &self.problems.errors {
                let _ = writeln!(out, "  {p}");
            }
            let more = self
                .problems
                .error_count
                .saturating_sub(self.problems.errors.len());
            if more > 0 {
                let _ = writeln!(out, "  ... and {more} more");
            }
        }
        if !self.conflicts.is_empty() {
            let _ = writeln!(
                out,
                "{} conflict(s) (those people were not changed):",
                self.conflicts.len()
            );
            for c in &self.conflicts {
                let _ = writeln!(out, "  {c}");
            }
        }
        if self.problems.warning_count > 0 {
            let _ = writeln!(out, "{} warning(s):", self.problems.warning_count);
            for p in &self.problems.warnings {
                let _ = writeln!(out, "  {p}");
            }
            for (kind, n) in &self.problems.suppressed {
                let _ = writeln!(out, "  ... and {n} more {kind}");
            }
        }
        out
    }
}
