//! Problems found in a package: where (file, line, column) and why. Errors make the
//! whole import fail before anything is written; warnings are reported and the import
//! goes on. Warnings of one kind in one file are capped (the rest are only counted) so a
//! 100,000-row file with the same deviation on every row gives a readable report.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The package is refused; nothing is written.
    Error,
    /// Reported; the import goes on.
    Warning,
}

/// One problem in a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub severity: Severity,
    /// File name inside the package (`users.csv`), or the package path itself.
    pub file: String,
    /// 1-based line (the header is line 1) where the row starts; `None` for whole-file
    /// problems and for rows already stored in the directory.
    pub line: Option<u64>,
    /// Column name as the spec spells it (`orgSourcedIds`), when one column is at fault.
    pub column: Option<String>,
    /// Stable machine-readable kind: `missing_column`, `missing_value`, `bad_value`,
    /// `malformed_row`, `duplicate_id`, `broken_reference`, `manifest`, `package`, ...
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(col) = &self.column {
            write!(f, " [{col}]")?;
        }
        write!(f, ": {} ({})", self.reason, self.code)
    }
}

/// Warnings kept per (file, code); further ones are counted in [`Problems::suppressed`].
pub const WARNINGS_KEPT_PER_KIND: usize = 20;
/// Errors kept in all; further ones are counted.
pub const ERRORS_KEPT: usize = 1_000;

/// Collects the problems of one import.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Problems {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// Total errors found (may exceed `errors.len()`).
    pub error_count: usize,
    /// Total warnings found.
    pub warning_count: usize,
    /// Warnings left out of `warnings`, by `file: code`.
    pub suppressed: BTreeMap<String, usize>,
    #[serde(skip)]
    kept_per_kind: BTreeMap<(String, String), usize>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn has_errors(&self) -> bool {
        self.error_count > 0
    }

    /// Records an error.
    pub fn error(
        &mut self,
        file: &str,
        line: Option<u64>,
        column: Option<&str>,
        code: &str,
        reason: impl Into<String>,
    ) {
        self.error_count += 1;
        if self.errors.len() < ERRORS_KEPT {
            self.errors.push(Problem {
                severity: Severity::Error,
                file: file.to_owned(),
                line,
                column: column.map(str::to_owned),
                code: code.to_owned(),
                reason: reason.into(),
            });
        }
    }

    /// Records a warning.
    pub fn warn(
        &mut self,
        file: &str,
        line: Option<u64>,
        column: Option<&str>,
        code: &str,
        reason: impl Into<String>,
    ) {
        self.warning_count += 1;
        let kept = self
            .kept_per_kind
            .entry((file.to_owned(), code.to_owned()))
            .or_insert(0);
        if *kept < WARNINGS_KEPT_PER_KIND {
            *kept += 1;
            self.warnings.push(Problem {
                severity: Severity::Warning,
                file: file.to_owned(),
                line,
                column: column.map(str::to_owned),
                code: code.to_owned(),
                reason: reason.into(),
            });
        } else {
            *self
                .suppressed
                .entry(format!("{file}: {code}"))
                .or_insert(0) += 1;
        }
    }

    /// The first error at this file/line/column, for tests and callers that look one up.
    pub fn find(&self, file: &str, line: Option<u64>, column: Option<&str>) -> Option<&Problem> {
        self.errors
            .iter()
            .find(|p| p.file == file && p.line == line && p.column.as_deref() == column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_capped_per_kind_and_counted() {
        let mut p = Problems::new();
        for i in 0..(WARNINGS_KEPT_PER_KIND as u64 + 5) {
            p.warn(
                "users.csv",
                Some(i + 2),
                Some("dateLastModified"),
                "date_format",
                "x",
            );
        }
        p.warn("orgs.csv", Some(2), None, "date_format", "x");
        assert_eq!(p.warnings.len(), WARNINGS_KEPT_PER_KIND + 1);
        assert_eq!(p.warning_count, WARNINGS_KEPT_PER_KIND + 6);
        assert_eq!(p.suppressed.get("users.csv: date_format"), Some(&5));
        assert!(!p.has_errors());
    }

    #[test]
    fn errors_display_with_location() {
        let mut p = Problems::new();
        p.error(
            "users.csv",
            Some(7),
            Some("role"),
            "bad_value",
            "unknown role \"wizard\"",
        );
        assert!(p.has_errors());
        assert_eq!(
            p.errors[0].to_string(),
            "error: users.csv:7 [role]: unknown role \"wizard\" (bad_value)"
        );
        assert!(p.find("users.csv", Some(7), Some("role")).is_some());
    }
}
