//! OneRoster 1.1 / 1.2 CSV import: a package (zip or folder) is read, every file parsed
//! and validated, the result planned against the tenant's stored roster, and the changes
//! applied to the directory in one transaction — or, on any error, not at all.
//!
//! Pipeline (one module each): [`source`] (zip/folder, manifest location, ignored files)
//! → [`manifest`] (version, bulk/delta/absent per file) → [`table`] (CSV rows with
//! tolerant headers) → [`parse`] (typed rows, per-row checks) → [`plan`] (references,
//! conflicts, the difference to write) → [`import`] (orchestration, logging). Problems
//! carry file, line, column and reason ([`problem`]); the outcome is an
//! [`ImportReport`] ([`report`]).
//!
//! Roster data lives in the directory's `roster_*` tables; each roster person drives one
//! Homeroom account (role, names, roster-confirmed email, status). Bulk users files
//! deactivate (archive) the rostered accounts they no longer list; a failed import never
//! deactivates anyone.

pub mod error;
pub mod import;
pub mod manifest;
pub mod parse;
pub mod plan;
pub mod problem;
pub mod report;
pub mod source;
pub mod table;
pub mod values;

pub use error::RosterError;
pub use import::{ImportOptions, Progress, ProgressFn, import_path, import_zip_bytes};
pub use manifest::{FileMode, Version};
pub use plan::{Conflict, Counts, KindCounts, UserCounts, UserRef};
pub use problem::{Problem, Problems, Severity};
pub use report::{FileReport, ImportReport, ImportStatus, Summary};
