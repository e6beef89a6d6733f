//! The provider boundary: one [`Provider`] trait that says which capabilities an upstream
//! has, small capability traits ([`RedirectLogin`] for OIDC/OAuth2 redirects), and one
//! module per upstream kind. Every adapter validates its protocol (signature, issuer,
//! audience, nonce, expiry, `hd`, `tid`, ...) and returns one normalised
//! [`UpstreamIdentity`] keyed by the provider's stable subject.
//!
//! Modules: [`oidc`] (the OIDC engine and generic adapter), [`google`], [`microsoft`],
//! the school portals [`clever`], [`classlink`] and [`gg4l`] (with their shared attribute
//! mapping and role vocabulary in [`portal`]), [`config`] and [`http`]. Portal launches
//! (a code pushed to the callback without `state`) are never redeemed by an adapter: the
//! broker restarts them through [`RedirectLogin::begin`].
//!
//! Adapters never decide policy, never touch sessions or storage, never render pages and
//! never throttle: the broker's pipeline owns protocol state (it mints `state`, `nonce` and
//! the PKCE verifier and hands them in) and everything else.

pub mod classlink;
pub mod clever;
pub mod config;
pub mod gg4l;
pub mod google;
pub mod http;
pub mod microsoft;
pub mod oidc;
pub mod portal;
#[cfg(feature = "saml")]
pub mod saml;

use async_trait::async_trait;
use homeroom_core::{LoginError, ProviderId, UpstreamIdentity};
use std::sync::Arc;

pub use config::{ConfigProblem, ProviderSettings, build, validate};

/// Which kind of upstream a provider is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Oidc,
    Google,
    Microsoft,
    /// Clever (OAuth 2.0 + `/v3.0` identity API, or Clever's OIDC mode).
    Clever,
    /// ClassLink (OAuth 2.0 + OIDC ID token + `/v2/my/info`).
    #[serde(rename = "classlink")]
    ClassLink,
    /// GG4L School Passport (OAuth 2.0 + signed `auth_token`).
    Gg4l,
    /// SAML 2.0 Web Browser SSO (any IdP; presets for ClassLink and GG4L attribute names).
    /// Built only with the `saml` cargo feature.
    Saml,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "oidc" => Some(Self::Oidc),
            "google" => Some(Self::Google),
            "microsoft" => Some(Self::Microsoft),
            "clever" => Some(Self::Clever),
            "classlink" => Some(Self::ClassLink),
            "gg4l" => Some(Self::Gg4l),
            "saml" => Some(Self::Saml),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Google => "google",
            Self::Microsoft => "microsoft",
            Self::Clever => "clever",
            Self::ClassLink => "classlink",
            Self::Gg4l => "gg4l",
            Self::Saml => "saml",
        }
    }
}

/// A refusal from an adapter: the catalogue entry plus a private detail for the trace
/// (never shown to the student, never containing secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}: {detail}")]
pub struct ProviderError {
    pub error: LoginError,
    pub detail: String,
}

impl ProviderError {
    pub fn new(error: LoginError, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
        }
    }
}

/// A configured upstream. Registered once; the pipeline asks what it can do.
pub trait Provider: Send + Sync {
    fn id(&self) -> &ProviderId;
    fn kind(&self) -> ProviderKind;
    fn display_name(&self) -> &str;
    /// The issuer this provider's responses must name (RFC 9207 `iss` on callbacks),
    /// when known without a network call.
    fn expected_issuer(&self) -> Option<String> {
        None
    }
    fn as_redirect(&self) -> Option<&dyn RedirectLogin> {
        None
    }
    /// SAML 2.0 Web Browser SSO (AuthnRequest by Redirect, Response by POST).
    fn as_saml(&self) -> Option<&dyn SamlLogin> {
        None
    }
}

/// Homeroom's endpoints as a SAML service provider for one provider, computed by the broker
/// from its public URL (`/saml/{provider}/metadata` is the default entity ID).
#[derive(Debug, Clone)]
pub struct SpEndpoints {
    /// The default SP entity ID (a provider may override it in its config).
    pub entity_id: String,
    /// The AssertionConsumerService URL (HTTP-POST binding).
    pub acs_url: String,
}

/// What the pipeline hands a SAML adapter to start an SP-initiated login.
#[derive(Debug, Clone)]
pub struct SamlBegin {
    /// The AuthnRequest `ID`, minted by the pipeline (at least 128 random bits, an NCName).
    pub request_id: String,
    /// The RelayState to send (the pipeline's hop key; never a URL).
    pub relay_state: String,
    pub sp: SpEndpoints,
    /// Ask the IdP for a fresh sign-in (`ForceAuthn`), e.g. for `prompt=login`.
    pub force_authn: bool,
}

/// What a POSTed SAML Response claims before anything is verified: only for finding the
/// pending request it answers. Never trust these values.
#[derive(Debug, Clone, Default)]
pub struct SamlEnvelope {
    /// The Response's `InResponseTo`; `None` for an unsolicited (IdP-initiated) response.
    pub in_response_to: Option<String>,
    /// The Response's (or assertion's) `Issuer`.
    pub issuer: Option<String>,
}

/// A verified SAML login: the identity, plus what the pipeline needs for its replay cache.
#[derive(Debug, Clone)]
pub struct SamlAssertion {
    pub identity: UpstreamIdentity,
    /// The consumed assertion's `ID` (single use).
    pub assertion_id: String,
    /// The IdP entity ID that issued it.
    pub issuer: String,
    /// Unix time until which the assertion could be replayed (its bearer
    /// `SubjectConfirmationData/@NotOnOrAfter`, capped by `Conditions/@NotOnOrAfter`), plus
    /// the allowed clock skew: keep the assertion id at least this long.
    pub not_on_or_after: i64,
    /// `AuthnStatement/@SessionNotOnOrAfter`, when the IdP limits the session.
    pub session_not_on_or_after: Option<i64>,
}

/// SAML 2.0 Web Browser SSO as a service provider.
#[async_trait]
pub trait SamlLogin: Send + Sync {
    /// This provider's SP metadata (entity ID, ACS by HTTP-POST, NameID format).
    async fn sp_metadata(&self, sp: &SpEndpoints) -> Result<String, ProviderError>;
    /// The Redirect-binding URL of an AuthnRequest with the pipeline's id and RelayState.
    async fn begin(&self, req: &SamlBegin) -> Result<url::Url, ProviderError>;
    /// Decodes and pre-screens a POSTed `SAMLResponse` (size, base64, UTF-8, no DTD, one
    /// `samlp:Response` root) and reports its unverified envelope.
    fn inspect(&self, saml_response: &str) -> Result<SamlEnvelope, ProviderError>;
    /// Verifies a POSTed `SAMLResponse` completely. `expected_in_response_to` is the id of
    /// the AuthnRequest the pipeline sent (SP-initiated) or `None` (IdP-initiated: then no
    /// `InResponseTo` may appear anywhere). The replay cache is the pipeline's.
    async fn finish(
        &self,
        saml_response: &str,
        expected_in_response_to: Option<&str>,
        sp: &SpEndpoints,
    ) -> Result<SamlAssertion, ProviderError>;
    /// Whether unsolicited (IdP-initiated) responses are accepted for this provider.
    fn allows_idp_initiated(&self) -> bool;
    /// App aliases (client ids) an unsolicited response's RelayState may name.
    fn relay_state_apps(&self) -> &[String];
}

/// What the pipeline hands an adapter to start a redirect login.
#[derive(Debug, Clone)]
pub struct BeginLogin {
    /// Minted by the pipeline; the adapter only places it in the URL.
    pub state: String,
    pub nonce: String,
    /// PKCE S256 challenge of the verifier the pipeline keeps.
    pub pkce_challenge: String,
    /// Homeroom's callback URL for this provider.
    pub redirect_uri: String,
    /// Upstream `prompt` (`select_account` for "use a different account", `login`, `none`).
    pub prompt: Option<String>,
    pub login_hint: Option<String>,
}

/// The query parameters of the upstream's return to Homeroom's callback.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    /// RFC 9207 issuer identification.
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The parts of the flow state the adapter needs to finish.
#[derive(Debug, Clone)]
pub struct UpstreamFlow {
    pub nonce: String,
    pub pkce_verifier: String,
    pub redirect_uri: String,
}

/// OIDC / OAuth2 authorization-code login with a browser redirect.
#[async_trait]
pub trait RedirectLogin: Send + Sync {
    /// The URL to send the browser to.
    async fn begin(&self, req: &BeginLogin) -> Result<url::Url, ProviderError>;
    /// Validates the return (code exchange, ID token, claims) and normalises the identity.
    /// The pipeline has already matched `state`; the adapter checks everything else.
    async fn finish(
        &self,
        cb: &Callback,
        flow: &UpstreamFlow,
    ) -> Result<UpstreamIdentity, ProviderError>;
}

/// Shared handle to a built provider.
pub type DynProvider = Arc<dyn Provider>;
