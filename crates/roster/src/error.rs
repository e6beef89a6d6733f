//! Errors that stop an import before it can produce a report: the directory failed, or
//! the tenant does not exist. Everything wrong with the package itself is a
//! [`crate::Problem`] in the report instead.

use homeroom_directory::DirectoryError;

/// An import that could not run (as opposed to a package that failed validation, which
/// is an [`crate::ImportReport`] with status `failed`).
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The tenant named on the command line is not in the directory.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// Reading the roster state or applying the changes failed; nothing was written.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}
