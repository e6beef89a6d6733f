//! Upstream emulators for the demo and the tests. Nothing in `providers` knows this crate
//! exists: the adapters talk to it over HTTP on loopback exactly as they would to the real
//! upstream.
//!
//! - [`idp`]: an OpenID Connect IdP ([`OidcIdp`]) with a generic, a Google and an Entra
//!   flavour, test knobs ([`Tamper`]) and per-path request counters.
//! - [`keys`]: its RSA signing keys ([`SandboxKeys`]).
//! - [`users`]: the people of the "Demo District" ([`demo_district_users`]).

pub mod idp;
pub mod keys;
pub mod users;

pub use idp::{Flavour, OidcIdp, OidcIdpConfig, SandboxClient, ServerGuard, Tamper};
pub use keys::SandboxKeys;
pub use users::{DEMO_DOMAIN, DEMO_TENANT_ID, SandboxUser, demo_district_users};

/// Errors setting up the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Key generation or parsing failed.
    #[error("sandbox key: {0}")]
    Key(String),
    /// Binding or serving the listener failed.
    #[error("sandbox listener: {0}")]
    Io(#[from] std::io::Error),
}
