//! Durable data behind sqlx: tenants, providers, apps (downstream clients), accounts and
//! their provider links, signing keys and audit events, with migrations. SQLite by
//! default (a file), PostgreSQL by URL, through one code path (`sqlx::Any`) and one set of
//! portable migrations (`migrations/`, run at [`Directory::connect`]).
//!
//! Modules: [`records`] (the row types), `db` (the [`Directory`] handle, connecting,
//! migrations), one module per area adding methods to [`Directory`] (`tenants`,
//! `providers`, `apps`, `accounts`, `keys`, `audit`, `local`, `classroom`, `family`), and [`audit_writer`] (the
//! non-blocking, batching [`AuditWriter`]).
//!
//! This crate never speaks HTTP and never decides policy.

mod accounts;
mod apps;
mod audit;
pub mod audit_writer;
pub mod badges;
pub mod classroom;
mod codec;
mod db;
mod error;
pub mod family;
mod keys;
pub mod local;
mod providers;
pub mod records;
pub mod roster;
mod tenants;

pub use audit::{AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT};
pub use audit_writer::AuditWriter;
pub use codec::normalise_email;
pub use db::{Backend, Directory};
pub use error::DirectoryError;
pub use family::{
    CodeUse, Family, FamilyInvitation, FamilyStudent, Guardian, GuardianAccess, GuardianRole,
    InviteUse, Membership, ParentCode,
};
pub use local::{
    AttemptClaim, Invitation, LinkUse, LocalCredential, LocalPolicy, MailStatus, NewMail,
    OutboxMail, PasswordReset,
};
pub use records::*;
pub use roster::{
    AccountUpdate, RosterChanges, RosterClass, RosterEnrollment, RosterImport, RosterOrg,
    RosterRole, RosterSnapshot, RosterUser, RosterUserStatus,
};

/// Opens the directory at `url`; same as [`Directory::connect`].
pub async fn connect(url: &str) -> Result<Directory, DirectoryError> {
    Directory::connect(url).await
}
