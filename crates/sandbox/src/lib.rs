//! Upstream emulators for the demo and the tests. Nothing in `providers` knows this crate
//! exists: the adapters talk to it over HTTP on loopback exactly as they would to the real
//! upstream.
//!
//! - [`idp`]: an OpenID Connect IdP ([`OidcIdp`]) with a generic, a Google and an Entra
//!   flavour, test knobs ([`Tamper`]) and per-path request counters.
//! - [`keys`]: its RSA signing keys ([`SandboxKeys`]).
//! - [`users`]: the people of the "Demo District" ([`demo_district_users`]) and the same
//!   people at the school portals ([`demo_clever_district`], [`demo_classlink_tenant`],
//!   [`demo_gg4l_district`]).
//! - [`clever`], [`classlink`], [`gg4l`]: the school-portal emulators ([`CleverIdp`],
//!   [`ClassLinkIdp`], [`Gg4lIdp`]) with their wire formats, quirks, test knobs
//!   ([`PortalTamper`]) and portal pages whose tiles launch apps without `state`.
//! - [`portal`]: what the three portal emulators share (codes, tokens, pages, tamper).
//! - `saml` (cargo feature `saml`): a SAML 2.0 IdP emulator with its own signing key,
//!   SP- and IdP-initiated signed Responses.

pub mod classlink;
pub mod clever;
pub mod gg4l;
pub mod idp;
pub mod keys;
pub mod portal;
#[cfg(feature = "saml")]
pub mod saml;
pub mod users;

pub use classlink::{CLASSLINK_OTHER_TENANT_ID, ClassLinkIdp, ClassLinkIdpConfig};
pub use clever::{CLEVER_OTHER_DISTRICT_ID, CleverIdp, CleverIdpConfig};
pub use gg4l::{GG4L_OTHER_DISTRICT_ID, GG4L_OTHER_ORG_ID, Gg4lIdp, Gg4lIdpConfig};
pub use idp::{Flavour, OidcIdp, OidcIdpConfig, SandboxClient, ServerGuard, Tamper};
pub use keys::SandboxKeys;
pub use portal::{PortalTamper, UNKNOWN_ROLE};
pub use users::{
    DEMO_CLASSLINK_TENANT_ID, DEMO_CLEVER_DISTRICT_ID, DEMO_DOMAIN, DEMO_GG4L_DISTRICT_ID,
    DEMO_GG4L_ORG_ID, DEMO_SCHOOL_ID, DEMO_TENANT_ID, PortalUser, SandboxUser,
    demo_classlink_tenant, demo_clever_district, demo_district_users, demo_gg4l_district,
};

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
