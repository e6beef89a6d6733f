//! Homeroom's shared domain: identifiers, roles, the normalised upstream identity,
//! the error catalogue every refusal comes from, the clock and the small crypto helpers
//! (randomness, hashing, constant-time comparison) that every other crate uses.
//!
//! This crate performs no I/O beyond asking the OS for random bytes.

pub mod clock;
pub mod crypto;
pub mod error;
pub mod identity;
pub mod ids;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{LoginError, OAuthErrorCode};
pub use identity::{Role, UpstreamIdentity};
pub use ids::{AccountId, ClientId, ProviderId, RefId, TenantId};
