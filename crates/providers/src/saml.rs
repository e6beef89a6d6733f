//! SAML 2.0 Web Browser SSO as a service provider (`kind = "saml"`, cargo feature `saml`),
//! on `samael` 0.0.22 with libxmlsec1 for XML signatures.
//!
//! This module owns the whole protocol side of a SAML login:
//! - **IdP metadata** from a URL (fetched lazily through [`HttpClient`] and cached), a file or
//!   inline XML; metadata without a signing certificate is refused (samael would then skip
//!   signature verification altogether);
//! - **SP metadata** (entity ID, ACS by HTTP-POST, NameID format) and the **AuthnRequest** by
//!   Redirect binding, whose `ID` the pipeline mints (at least 128 random bits);
//! - **Response validation**: the raw message is pre-screened before any XML library sees
//!   it (size cap, base64, UTF-8, any `<!DOCTYPE` refused, one `samlp:Response` root, depth
//!   and element caps, exactly one `saml:Assertion` anywhere and no encrypted content, every
//!   `ds:Signature` an enveloped signature of the Response or the assertion with exactly one
//!   reference to its parent's `ID`, SHA-256+ algorithms and no `#WithComments`), then
//!   xmlsec verifies every signature against the metadata's certificates and reduces the
//!   document to the signed content only; the assertion that is consumed is read from that
//!   reduced document and must be the one the verified reference names (no signature
//!   wrapping). Then: status, Destination, Issuer, InResponseTo (checked on every
//!   SP-initiated response, absent on IdP-initiated ones), IssueInstant, Conditions
//!   NotBefore/NotOnOrAfter with at most 3 minutes of skew, a required AudienceRestriction
//!   naming us, a bearer SubjectConfirmation with Recipient and NotOnOrAfter, and an
//!   AuthnStatement;
//! - **attribute mapping** with presets (generic eduPerson/OID names, ClassLink, GG4L) and
//!   the `claims` / `roles` overrides of the portal adapters, plus an optional tenant check.
//!
//! Values are read by our own namespace-aware parser (quick-xml, no entity expansion);
//! element text is the concatenation of all its text, so a comment inside `NameID` can
//! never truncate it (SAML-04). The replay cache of assertion IDs belongs to the broker's
//! pipeline: [`SamlLogin::finish`] returns the assertion ID and how long to remember it.

use crate::classlink::CLASSLINK_ROLE_PRESET;
use crate::config::{ConfigProblem, ProviderSettings, check_ids, check_url, parse_kind};
use crate::gg4l::GG4L_ROLE_PRESET;
use crate::http::HttpClient;
use crate::portal::{
    AttributeMap, ClaimOverrides, MappedAttributes, RoleMap, SourceKeys, check_allowed, id_list,
    identity_from,
};
use crate::{
    Provider, ProviderError, ProviderKind, SamlAssertion, SamlBegin, SamlEnvelope, SamlLogin,
    SpEndpoints,
};
use async_trait::async_trait;
use base64::Engine as _;
use homeroom_core::{Clock, LoginError, ProviderId, Role};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use samael::metadata::{
    EntityDescriptor, EntityDescriptorType, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING,
    IndexedEndpoint, SpSsoDescriptor,
};
use samael::service_provider::ServiceProvider;
use samael::traits::ToXml;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Namespaces.
pub const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// NameID formats.
pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
pub const NAMEID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
pub const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
pub const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";

/// Signature algorithms accepted (RSA / ECDSA with SHA-256 or stronger).
pub const SIGNATURE_ALGORITHMS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
/// Digest algorithms accepted.
pub const DIGEST_ALGORITHMS: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
/// Canonicalisations accepted (never `#WithComments`).
pub const C14N_ALGORITHMS: &[&str] = &[
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
];
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const XMLSEC_ALLOWED: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Largest clock skew an admin may configure (3 minutes).
pub const MAX_SKEW_SECS: u64 = 180;
/// An assertion issued longer ago than this (plus skew) is refused as expired.
pub const MAX_ASSERTION_AGE_SECS: i64 = 300;
/// Default cap on a decoded SAML Response.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Cap on IdP metadata.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;
/// Cached metadata fetched from a URL is re-fetched after this many seconds.
pub const METADATA_MAX_AGE_SECS: i64 = 24 * 3600;
/// Nesting depth and element count caps of the pre-screen parser.
const MAX_DEPTH: usize = 48;
const MAX_ELEMENTS: usize = 5000;

/// Attribute-name presets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamlPreset {
    /// eduPerson / X.500 OID names (and their friendly names), Entra claim URIs.
    #[default]
    Generic,
    /// ClassLink SAML Console names (`Email`, `Role`, `TenantId`, `OR:userSourcedId`, ...).
    #[serde(rename = "classlink")]
    ClassLink,
    /// GG4L (its OAuth claim names: `email`, `type`, `district`, `guid`, ...).
    Gg4l,
}

/// Configuration of a SAML provider (`kind = "saml"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// IdP metadata URL (https; http only on loopback). Fetched on first use, cached a day.
    #[serde(default)]
    pub idp_metadata_url: Option<String>,
    /// IdP metadata file path.
    #[serde(default)]
    pub idp_metadata_file: Option<String>,
    /// IdP metadata XML, inline.
    #[serde(default)]
    pub idp_metadata_xml: Option<String>,
    /// Which IdP of an `EntitiesDescriptor` (required when the metadata has several).
    #[serde(default)]
    pub idp_entity_id: Option<String>,
    /// Our SP entity ID when the IdP registered another one than
    /// `{public_url}/saml/{provider}/metadata`.
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    /// Attribute-name preset: `generic`, `classlink` or `gg4l`.
    #[serde(default)]
    pub preset: SamlPreset,
    /// NameID format asked for in the AuthnRequest (default persistent).
    #[serde(default = "default_name_id_format")]
    pub name_id_format: String,
    /// Read the stable subject from this attribute instead of the NameID.
    #[serde(default)]
    pub subject_attribute: Option<String>,
    /// Accept unsolicited (IdP-initiated) responses, always with the replay cache.
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// App aliases (client ids) an unsolicited response's RelayState may name.
    #[serde(default)]
    pub relay_state_apps: Vec<String>,
    /// Allowed tenant ids (required for the ClassLink and GG4L presets).
    #[serde(default, deserialize_with = "id_list")]
    pub tenant_ids: Vec<String>,
    /// Attribute(s) carrying the tenant id, instead of the preset's.
    #[serde(default)]
    pub tenant_attribute: Option<SourceKeys>,
    /// Refuse logins without an email attribute.
    #[serde(default)]
    pub require_email: bool,
    /// Whether the IdP is authoritative for email addresses (default false).
    #[serde(default)]
    pub trust_email: bool,
    /// Always ask the IdP for a fresh sign-in (`ForceAuthn`).
    #[serde(default)]
    pub force_authn: bool,
    /// Attribute-name overrides (see the portal adapters' `claims`).
    #[serde(default)]
    pub claims: ClaimOverrides,
    /// Role-value overrides (upstream value -> Homeroom role).
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Allowed clock skew, seconds (at most 180).
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Largest decoded SAML Response accepted, bytes.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// Timeout of the metadata fetch, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_name_id_format() -> String {
    NAMEID_PERSISTENT.into()
}
fn default_skew() -> u64 {
    120
}
fn default_max_response() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}
fn default_timeout() -> u64 {
    5
}

/// The config keys of `kind = "saml"`.
pub const SAML_KEYS: &[&str] = &[
    "idp_metadata_url",
    "idp_metadata_file",
    "idp_metadata_xml",
    "idp_entity_id",
    "sp_entity_id",
    "preset",
    "name_id_format",
    "subject_attribute",
    "allow_idp_initiated",
    "relay_state_apps",
    "tenant_ids",
    "tenant_attribute",
    "require_email",
    "trust_email",
    "force_authn",
    "claims",
    "roles",
    "clock_skew_secs",
    "max_response_bytes",
    "timeout_secs",
];

const NAME_ID_FORMATS: &[&str] = &[
    NAMEID_PERSISTENT,
    NAMEID_TRANSIENT,
    NAMEID_EMAIL,
    NAMEID_UNSPECIFIED,
];

fn check_saml(c: &SamlConfig) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    let sources = [
        c.idp_metadata_url.is_some(),
        c.idp_metadata_file.is_some(),
        c.idp_metadata_xml.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        p.push(ConfigProblem::new(
            "idp_metadata_url",
            "set exactly one of idp_metadata_url, idp_metadata_file, idp_metadata_xml",
        ));
    }
    check_url(&mut p, "idp_metadata_url", c.idp_metadata_url.as_deref());
    for (key, v) in [
        ("idp_entity_id", &c.idp_entity_id),
        ("sp_entity_id", &c.sp_entity_id),
        ("subject_attribute", &c.subject_attribute),
        ("idp_metadata_file", &c.idp_metadata_file),
    ] {
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            p.push(ConfigProblem::new(key, "must not be empty"));
        }
    }
    if !NAME_ID_FORMATS.contains(&c.name_id_format.as_str()) {
        p.push(ConfigProblem::new(
            "name_id_format",
            format!("must be one of {}", NAME_ID_FORMATS.join(", ")),
        ));
    } else if c.name_id_format == NAMEID_TRANSIENT && c.subject_attribute.is_none() {
        p.push(ConfigProblem::new(
            "name_id_format",
            "a transient NameID changes at every login: use persistent, or set subject_attribute",
        ));
    }
    if c.clock_skew_secs > MAX_SKEW_SECS {
        p.push(ConfigProblem::new("clock_skew_secs", "at most 180 seconds"));
    }
    if !(4096..=1024 * 1024).contains(&c.max_response_bytes) {
        p.push(ConfigProblem::new(
            "max_response_bytes",
            "between 4096 and 1048576 bytes",
        ));
    }
    if !(1..=60).contains(&c.timeout_secs) {
        p.push(ConfigProblem::new(
            "timeout_secs",
            "between 1 and 60 seconds",
        ));
    }
    if !c.relay_state_apps.is_empty() && !c.allow_idp_initiated {
        p.push(ConfigProblem::new(
            "relay_state_apps",
            "only used with allow_idp_initiated = true",
        ));
    }
    for (i, a) in c.relay_state_apps.iter().enumerate() {
        if !is_alias(a) {
            p.push(ConfigProblem::new(
                format!("relay_state_apps[{i}]"),
                "must be an app alias (client id), never a URL",
            ));
        }
    }
    let tenant_required = matches!(c.preset, SamlPreset::ClassLink | SamlPreset::Gg4l);
    check_ids(&mut p, "tenant_ids", &c.tenant_ids, tenant_required);
    p
}

/// An app alias: 1-128 characters of `[A-Za-z0-9._-]`.
pub fn is_alias(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses and checks a SAML provider config; inline or file metadata is loaded and must
/// carry a signing certificate.
pub fn validate_config(
    config: &Value,
) -> Result<(SamlConfig, Option<IdpMetadata>), Vec<ConfigProblem>> {
    let c = parse_kind::<SamlConfig>(config, SAML_KEYS, &[], check_saml)?;
    let meta = match (&c.idp_metadata_xml, &c.idp_metadata_file) {
        (Some(xml), _) => Some(
            IdpMetadata::parse(xml, c.idp_entity_id.as_deref())
                .map_err(|r| vec![ConfigProblem::new("idp_metadata_xml", r)])?,
        ),
        (None, Some(path)) => {
            let xml = std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigProblem::new(
                    "idp_metadata_file",
                    format!("cannot read {path}: {e}"),
                )]
            })?;
            Some(
                IdpMetadata::parse(&xml, c.idp_entity_id.as_deref())
                    .map_err(|r| vec![ConfigProblem::new("idp_metadata_file", r)])?,
            )
        }
        (None, None) => None,
    };
    Ok((c, meta))
}

/// What Homeroom uses of an IdP's metadata.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    /// The IdP's entity ID: assertions' `Issuer` must equal it.
    pub entity_id: String,
    /// SingleSignOnService location for the HTTP-Redirect binding.
    pub sso_redirect: String,
    /// Signing certificates (DER), the only trust anchors.
    pub certs: Vec<CertificateDer>,
    descriptor: EntityDescriptor,
}

impl IdpMetadata {
    /// Parses IdP metadata (an `EntityDescriptor` or an `EntitiesDescriptor`). Refuses a
    /// DOCTYPE, metadata without a signing certificate, or without an HTTP-Redirect SSO
    /// endpoint on an acceptable URL.
    pub fn parse(xml: &str, wanted: Option<&str>) -> Result<Self, String> {
        if xml.len() > MAX_METADATA_BYTES {
            return Err("metadata larger than 1 MiB".into());
        }
        if has_dtd(xml) {
            return Err("metadata contains a DOCTYPE; refused".into());
        }
        let parsed: EntityDescriptorType = match xml.parse::<EntityDescriptor>() {
            Ok(d) if d.entity_id.is_some() => EntityDescriptorType::EntityDescriptor(d),
            _ => xml
                .parse::<EntityDescriptorType>()
                .map_err(|e| format!("not SAML metadata: {e}"))?,
        };
        let idps: Vec<&EntityDescriptor> = parsed
            .iter()
            .filter(|d| {
                d.idp_sso_descriptors
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
            })
            .filter(|d| wanted.is_none_or(|w| d.entity_id.as_deref() == Some(w)))
            .collect();
        let d = match idps.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(match wanted {
                    Some(w) => format!("no IdP with entity ID {w:?} in the metadata"),
                    None => "the metadata describes no IdP (IDPSSODescriptor)".into(),
                });
            }
            _ => return Err("the metadata describes several IdPs: set idp_entity_id".into()),
        };
        let entity_id = d
            .entity_id
            .clone()
            .filter(|e| !e.trim().is_empty())
            .ok_or("the IdP has no entityID")?;
        let sp = ServiceProvider {
            idp_metadata: d.clone(),
            ..ServiceProvider::default()
        };
        let sso_redirect = sp
            .sso_binding_location(HTTP_REDIRECT_BINDING)
            .ok_or("the IdP has no SingleSignOnService for the HTTP-Redirect binding")?;
        crate::config::is_acceptable_url(&sso_redirect)
            .map_err(|r| format!("SingleSignOnService {sso_redirect:?}: {r}"))?;
        let certs = sp
            .idp_signing_certs()
            .map_err(|e| format!("unreadable signing certificate: {e}"))?
            .unwrap_or_default();
        let certs: Vec<CertificateDer> = certs
            .into_iter()
            .filter(|c| !c.der_data().is_empty())
            .collect();
        if certs.is_empty() {
            return Err(
                "the IdP metadata has no signing certificate (KeyDescriptor use=\"signing\"): responses could not be verified"
                    .into(),
            );
        }
        Ok(Self {
            entity_id,
            sso_redirect,
            certs,
            descriptor: d,
        })
    }
}

/// What an IdP signing certificate says of itself. SAML trusts the key in the metadata,
/// not the certificate's dates, so an expired certificate still verifies; but IdPs replace
/// certificates around their expiry, and the day they switch, sign-ins fail until the
/// metadata is refreshed. IT wants to know that day in advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDates {
    /// The subject's common name, or `(no common name)`.
    pub subject: String,
    /// SHA-256 of the DER, its first 8 bytes in hex (colon-separated): tells certificates apart.
    pub fingerprint: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// `notAfter` as the certificate writes it (`Jan  2 00:00:00 2027 GMT`).
    pub not_after_text: String,
}

/// Reads a DER certificate's subject, fingerprint and `notAfter`.
pub fn cert_dates(der: &[u8]) -> Result<CertDates, String> {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::X509;
    let x = X509::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let epoch = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch
        .diff(x.not_after())
        .map_err(|e| format!("unreadable notAfter: {e}"))?;
    let subject = x
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| "(no common name)".to_owned());
    let digest = x
        .digest(MessageDigest::sha256())
        .map_err(|e| e.to_string())?;
    let fingerprint = digest
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertDates {
        subject,
        fingerprint,
        not_after: i64::from(d.days) * 86_400 + i64::from(d.secs),
        not_after_text: x.not_after().to_string(),
    })
}

impl IdpMetadata {
    /// [`cert_dates`] of each signing certificate, in metadata order.
    pub fn cert_dates(&self) -> Vec<Result<CertDates, String>> {
        self.certs
            .iter()
            .map(|c| cert_dates(c.der_data()))
            .collect()
    }
}

/// Where the metadata comes from.
enum MetadataSource {
    Fixed(Arc<IdpMetadata>),
    Url {
        url: String,
        cache: RwLock<Option<(Arc<IdpMetadata>, i64)>>,
    },
}

/// Attribute names per field, plus the tenant attribute.
struct Mapping {
    attrs: AttributeMap,
    tenant: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn preset_mapping(p: SamlPreset) -> Mapping {
    match p {
        SamlPreset::Generic => Mapping {
            attrs: AttributeMap::preset(
                &[
                    "urn:oid:0.9.2342.19200300.100.1.3",
                    "mail",
                    "email",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                ],
                &[
                    "urn:oid:2.16.840.1.113730.3.1.241",
                    "displayName",
                    "http://schemas.microsoft.com/identity/claims/displayname",
                ],
                &[
                    "urn:oid:2.5.4.42",
                    "givenName",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
                ],
                &[
                    "urn:oid:2.5.4.4",
                    "sn",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
                ],
                &["urn:oid:0.9.2342.19200300.100.1.1", "uid"],
                &[
                    "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
                    "eduPersonAffiliation",
                    "role",
                ],
                &["school"],
                &["grade"],
                &["sourcedId"],
            ),
            tenant: Vec::new(),
        },
        SamlPreset::ClassLink => Mapping {
            attrs: AttributeMap::preset(
                &["Email", "OR:userEmail", "email"],
                &["Full Name", "FullName", "DisplayName"],
                &["Given Name", "GivenName", "FirstName"],
                &["Family Name", "FamilyName", "LastName"],
                &["Login id", "LoginId", "Login ID"],
                &["Role"],
                &["Building ID", "BuildingId", "OR:userOrgId"],
                &["OR:userGrade", "Grade"],
                &["OR:userSourcedId", "SourcedId"],
            ),
            tenant: names(&["TenantId", "Tenant ID"]),
        },
        SamlPreset::Gg4l => Mapping {
            attrs: AttributeMap::preset(
                &["email", "Email"],
                &["name"],
                &["first_name", "given_name", "firstName"],
                &["last_name", "family_name", "lastName"],
                &["username"],
                &["type", "roles", "role"],
                &["school"],
                &["grade"],
                &["sourcedId", "sourced_id"],
            ),
            tenant: names(&["district", "org_id"]),
        },
    }
}

const GENERIC_ROLE_PRESET: &[(&str, Role)] = &[
    ("student", Role::Student),
    ("faculty", Role::Teacher),
    ("teacher", Role::Teacher),
    ("staff", Role::Staff),
    ("employee", Role::Staff),
];

/// A SAML 2.0 upstream.
pub struct SamlProvider {
    id: ProviderId,
    name: String,
    config: SamlConfig,
    metadata: MetadataSource,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    mapping: Mapping,
    roles: RoleMap,
}

impl std::fmt::Debug for SamlProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlProvider")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SamlProvider {
    /// Builds from settings; never touches the network (URL metadata is fetched on first use).
    pub fn build(
        settings: &ProviderSettings,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let (config, meta) = validate_config(&settings.config)?;
        let metadata = match (meta, &config.idp_metadata_url) {
            (Some(m), _) => MetadataSource::Fixed(Arc::new(m)),
            (None, Some(url)) => MetadataSource::Url {
                url: url.clone(),
                cache: RwLock::new(None),
            },
            (None, None) => {
                return Err(vec![ConfigProblem::new(
                    "idp_metadata_url",
                    "no IdP metadata source",
                )]);
            }
        };
        let mut mapping = preset_mapping(config.preset);
        mapping.attrs = mapping.attrs.with_overrides(&config.claims);
        if let Some(t) = &config.tenant_attribute {
            mapping.tenant = match t.clone() {
                SourceKeys::One(s) => vec![s],
                SourceKeys::Many(v) => v,
            }
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        }
        if !config.tenant_ids.is_empty() && mapping.tenant.is_empty() {
            return Err(vec![ConfigProblem::new(
                "tenant_attribute",
                "tenant_ids is set but no attribute carries the tenant id",
            )]);
        }
        let preset_roles = match config.preset {
            SamlPreset::Generic => GENERIC_ROLE_PRESET,
            SamlPreset::ClassLink => CLASSLINK_ROLE_PRESET,
            SamlPreset::Gg4l => GG4L_ROLE_PRESET,
        };
        let roles = RoleMap::new(preset_roles, &config.roles);
        Ok(Self {
            id: settings.id.clone(),
            name: settings.display_name.clone(),
            http: http.with_timeout(Duration::from_secs(config.timeout_secs)),
            config,
            metadata,
            clock,
            mapping,
            roles,
        })
    }

    fn err(&self, error: LoginError, detail: impl Into<String>) -> ProviderError {
        ProviderError::new(error, detail)
    }

    fn entity_id(&self, sp: &SpEndpoints) -> String {
        self.config
            .sp_entity_id
            .clone()
            .unwrap_or_else(|| sp.entity_id.clone())
    }

    /// The IdP metadata in force (fetched from the URL when needed).
    pub async fn idp_metadata(&self) -> Result<Arc<IdpMetadata>, ProviderError> {
        let (url, cache) = match &self.metadata {
            MetadataSource::Fixed(m) => return Ok(m.clone()),
            MetadataSource::Url { url, cache } => (url, cache),
        };
        let now = self.clock.now();
        let cached = match cache.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some((m, at)) = &cached
            && now - at < METADATA_MAX_AGE_SECS
        {
            return Ok(m.clone());
        }
        let fetched = async {
            let resp = self
                .http
                .with_max_body(MAX_METADATA_BYTES)
                .get(url, None)
                .await
                .map_err(|e| e.into_provider_error(&self.name))?;
            if !resp.is_success() {
                return Err(self.err(
                    LoginError::UpstreamUnavailable {
                        provider: self.name.clone(),
                    },
                    format!("IdP metadata {url} answered HTTP {}", resp.status),
                ));
            }
            let xml = String::from_utf8(resp.body).map_err(|_| {
                self.err(
                    LoginError::UpstreamUnavailable {
                        provider: self.name.clone(),
                    },
                    "IdP metadata is not UTF-8",
                )
            })?;
            IdpMetadata::parse(&xml, self.config.idp_entity_id.as_deref()).map_err(|r| {
                self.err(
                    LoginError::UpstreamUnavailable {
                        provider: self.name.clone(),
                    },
                    format!("IdP metadata {url} refused: {r}"),
                )
            })
        }
        .await;
        match fetched {
            Ok(m) => {
                let m = Arc::new(m);
                match cache.write() {
                    Ok(mut g) => *g = Some((m.clone(), now)),
                    Err(p) => *p.into_inner() = Some((m.clone(), now)),
                }
                Ok(m)
            }
            // Keep serving stale metadata when a refresh fails.
            Err(e) => match cached {
                Some((m, _)) => {
                    tracing::warn!(provider = %self.id, detail = %e.detail, "IdP metadata refresh failed; using the cached copy");
                    Ok(m)
                }
                None => Err(e),
            },
        }
    }

    /// Decodes and pre-screens a POSTed `SAMLResponse` into our element tree.
    pub fn decode(&self, saml_response: &str) -> Result<(String, Element), ProviderError> {
        decode_response(saml_response, self.config.max_response_bytes)
            .map_err(|(error, detail)| self.err(error, detail))
    }

    fn skew(&self) -> i64 {
        i64::try_from(self.config.clock_skew_secs.min(MAX_SKEW_SECS)).unwrap_or(180)
    }

    /// The whole verification of a response; see the module docs.
    fn verify(
        &self,
        saml_response: &str,
        expected: Option<&str>,
        meta: &IdpMetadata,
        sp: &SpEndpoints,
    ) -> Result<SamlAssertion, ProviderError> {
        let v = Verifier {
            idp: meta,
            entity_id: self.entity_id(sp),
            acs_url: sp.acs_url.clone(),
            now: self.clock.now(),
            skew: self.skew(),
            provider_name: &self.name,
            max_bytes: self.config.max_response_bytes,
        };
        let verified = v
            .verify(saml_response, expected)
            .map_err(|(error, detail)| self.err(error, detail))?;
        self.identity(verified)
    }

    fn identity(&self, v: Verified) -> Result<SamlAssertion, ProviderError> {
        let attrs = &v.attributes;
        let first = |names: &[String]| -> Option<String> {
            names.iter().find_map(|n| {
                attrs
                    .get(n)
                    .and_then(|vals| vals.iter().find(|s| !s.trim().is_empty()))
                    .map(|s| s.trim().to_owned())
            })
        };
        let all = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .map(|n| {
                    attrs
                        .get(n)
                        .map(|vals| {
                            vals.iter()
                                .filter(|s| !s.trim().is_empty())
                                .map(|s| s.trim().to_owned())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .find(|v| !v.is_empty())
                .unwrap_or_default()
        };
        let m = &self.mapping.attrs;
        let mapped = MappedAttributes {
            email: first(&m.email),
            name: first(&m.name),
            given_name: first(&m.given_name),
            family_name: first(&m.family_name),
            username: first(&m.username),
            roles: all(&m.role),
            school: first(&m.school),
            grade: first(&m.grade),
            sourced_id: first(&m.sourced_id),
        };
        let subject = match &self.config.subject_attribute {
            Some(a) => first(std::slice::from_ref(a)),
            None => {
                if v.name_id_format.as_deref() == Some(NAMEID_TRANSIENT) {
                    return Err(self.err(
                        LoginError::SubjectInvalid,
                        "the IdP sent a transient NameID, which is not a stable subject (set subject_attribute or have the IdP send a persistent NameID)",
                    ));
                }
                v.name_id.clone()
            }
        };
        let Some(subject) = subject.filter(|s| !s.trim().is_empty() && s.len() <= 512) else {
            return Err(self.err(
                LoginError::SubjectInvalid,
                "the assertion has no usable subject (NameID or subject_attribute)",
            ));
        };
        let tenant = if self.config.tenant_ids.is_empty() {
            first(&self.mapping.tenant)
        } else {
            let t = first(&self.mapping.tenant);
            check_allowed(t.as_deref(), &self.config.tenant_ids, "tenant")?;
            t
        };
        if self.config.require_email && mapped.email.is_none() {
            return Err(self.err(
                LoginError::EmailMissing {
                    provider: self.name.clone(),
                },
                "no email attribute in the assertion and this provider requires one",
            ));
        }
        let roles = if mapped.roles.is_empty() {
            Vec::new()
        } else {
            self.roles.resolve(&mapped.roles, "role")?
        };
        let attr_json: Map<String, Value> = v
            .attributes
            .iter()
            .map(|(k, vals)| (k.clone(), json!(vals)))
            .collect();
        let source = json!({
            "issuer": v.issuer,
            "name_id": v.name_id,
            "name_id_format": v.name_id_format,
            "assertion_id": v.assertion_id,
            "in_response_to": v.in_response_to,
            "attributes": attr_json,
        });
        let mut identity = identity_from(
            &self.id,
            subject.trim().to_owned(),
            &mapped,
            roles,
            tenant,
            &source,
        );
        identity.email_verified = self.config.trust_email && identity.email.is_some();
        Ok(SamlAssertion {
            identity,
            assertion_id: v.assertion_id,
            issuer: v.issuer,
            not_on_or_after: v.not_on_or_after + self.skew(),
            session_not_on_or_after: v.session_not_on_or_after,
        })
    }
}

impl Provider for SamlProvider {
    fn id(&self) -> &ProviderId {
        &self.id
    }
    fn kind(&self) -> ProviderKind {
        ProviderKind::Saml
    }
    fn display_name(&self) -> &str {
        &self.name
    }
    fn expected_issuer(&self) -> Option<String> {
        match &self.metadata {
            MetadataSource::Fixed(m) => Some(m.entity_id.clone()),
            MetadataSource::Url { .. } => None,
        }
    }
    fn as_saml(&self) -> Option<&dyn SamlLogin> {
        Some(self)
    }
}

#[async_trait]
impl SamlLogin for SamlProvider {
    async fn sp_metadata(&self, sp: &SpEndpoints) -> Result<String, ProviderError> {
        sp_metadata_xml(
            &self.entity_id(sp),
            &sp.acs_url,
            &self.config.name_id_format,
        )
        .map_err(|e| self.err(LoginError::Internal, e))
    }

    async fn begin(&self, req: &SamlBegin) -> Result<url::Url, ProviderError> {
        // ≥ 128 random bits, as an NCName: the pipeline mints `_` + 32 base64url bytes.
        if req.request_id.len() < 23
            || req.request_id.len() > 128
            || !req
                .request_id
                .starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
            || !req
                .request_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(self.err(
                LoginError::Internal,
                "AuthnRequest id must be an NCName with at least 128 random bits",
            ));
        }
        let meta = self.idp_metadata().await?;
        let sp = ServiceProvider {
            entity_id: Some(self.entity_id(&req.sp)),
            acs_url: Some(req.sp.acs_url.clone()),
            idp_metadata: meta.descriptor.clone(),
            authn_name_id_format: Some(self.config.name_id_format.clone()),
            force_authn: self.config.force_authn || req.force_authn,
            ..ServiceProvider::default()
        };
        let url = (|| -> Result<String, String> {
            let mut authn = sp
                .make_authentication_request(&meta.sso_redirect)
                .map_err(|e| e.to_string())?;
            authn.id = req.request_id.clone();
            let url = authn
                .redirect(&req.relay_state)
                .map_err(|e| e.to_string())?
                .ok_or("AuthnRequest without destination")?;
            Ok(url.to_string())
        })()
        .map_err(|e| self.err(LoginError::Internal, format!("AuthnRequest: {e}")))?;
        url::Url::parse(&url).map_err(|e| self.err(LoginError::Internal, e.to_string()))
    }

    fn inspect(&self, saml_response: &str) -> Result<SamlEnvelope, ProviderError> {
        let (_, root) = self.decode(saml_response)?;
        let issuer = root
            .child(NS_SAML, "Issuer")
            .map(|i| i.text.trim().to_owned())
            .or_else(|| {
                root.child(NS_SAML, "Assertion")
                    .and_then(|a| a.child(NS_SAML, "Issuer"))
                    .map(|i| i.text.trim().to_owned())
            });
        Ok(SamlEnvelope {
            in_response_to: root
                .attr("InResponseTo")
                .map(str::to_owned)
                .filter(|s| !s.is_empty()),
            issuer,
        })
    }

    async fn finish(
        &self,
        saml_response: &str,
        expected_in_response_to: Option<&str>,
        sp: &SpEndpoints,
    ) -> Result<SamlAssertion, ProviderError> {
        let meta = self.idp_metadata().await?;
        self.verify(saml_response, expected_in_response_to, &meta, sp)
    }

    fn allows_idp_initiated(&self) -> bool {
        self.config.allow_idp_initiated
    }

    fn relay_state_apps(&self) -> &[String] {
        &self.config.relay_state_apps
    }
}

/// SP metadata for an entity ID and ACS URL.
pub fn sp_metadata_xml(
    entity_id: &str,
    acs_url: &str,
    name_id_format: &str,
) -> Result<String, String> {
    let ed = EntityDescriptor {
        entity_id: Some(entity_id.to_owned()),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some(NS_SAMLP.to_owned()),
            authn_requests_signed: Some(false),
            want_assertions_signed: Some(true),
            name_id_formats: Some(vec![name_id_format.to_owned()]),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.to_owned(),
                location: acs_url.to_owned(),
                response_location: None,
                index: 0,
                is_default: Some(true),
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    ed.to_string().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// The element tree and the pre-screen.

/// One XML element as our parser saw it: namespace URI, local name, attributes (namespace
/// URI, local name, value; namespace declarations left out), child elements, and the
/// concatenation of all its direct text (comments skipped, so never truncated by one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// An unqualified attribute.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, n, _)| ns.is_empty() && n == local)
            .map(|(_, _, v)| v.as_str())
    }
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }
    /// The first child element with this name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }
    /// Every element of the subtree (this one included) with its parent.
    pub fn walk<'a>(
        &'a self,
        parent: Option<&'a Element>,
        out: &mut Vec<(&'a Element, Option<&'a Element>)>,
    ) {
        out.push((self, parent));
        for c in &self.children {
            c.walk(Some(self), out);
        }
    }
}

type Refused = (LoginError, String);

fn invalid(reason: impl Into<String>) -> Refused {
    let reason = reason.into();
    (
        LoginError::SamlMessageInvalid {
            reason: reason.clone(),
        },
        reason,
    )
}

/// Whether a text contains a DOCTYPE or entity declaration (case-insensitive).
pub fn has_dtd(xml: &str) -> bool {
    let lower = xml.to_ascii_lowercase();
    lower.contains("<!doctype") || lower.contains("<!entity")
}

/// Base64 → UTF-8 → DTD check → element tree with a `samlp:Response` root.
fn decode_response(b64: &str, max_bytes: usize) -> Result<(String, Element), Refused> {
    if b64.len() > max_bytes / 3 * 4 + 1024 {
        return Err(invalid(format!(
            "SAMLResponse larger than {max_bytes} bytes"
        )));
    }
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| invalid("SAMLResponse is not valid base64"))?;
    if bytes.len() > max_bytes {
        return Err(invalid(format!(
            "SAMLResponse larger than {max_bytes} bytes"
        )));
    }
    let xml = String::from_utf8(bytes).map_err(|_| invalid("SAMLResponse is not UTF-8 XML"))?;
    let root = parse_xml(&xml)?;
    if !root.is(NS_SAMLP, "Response") {
        return Err(invalid(format!(
            "root element is {{{}}}{}, not samlp:Response",
            root.ns, root.name
        )));
    }
    Ok((xml, root))
}

fn owned_ns(r: ResolveResult<'_>) -> Result<String, Refused> {
    match r {
        ResolveResult::Bound(ns) => {
            String::from_utf8(ns.0.to_vec()).map_err(|_| invalid("namespace URI is not UTF-8"))
        }
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(p) => Err(invalid(format!(
            "undeclared namespace prefix {:?}",
            String::from_utf8_lossy(&p)
        ))),
    }
}

/// Parses an XML document strictly into an [`Element`] tree: UTF-8 only, no DOCTYPE, no
/// processing instructions, bounded depth and size, one root, matched end tags.
pub fn parse_xml(xml: &str) -> Result<Element, Refused> {
    if has_dtd(xml) {
        return Err((
            LoginError::SamlDtdForbidden,
            "the message contains a DOCTYPE or ENTITY declaration".into(),
        ));
    }
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let (res, ev) = reader
            .read_resolved_event()
            .map_err(|e| invalid(format!("malformed XML: {e}")))?;
        match ev {
            Event::Start(_) | Event::Empty(_) => {
                let ns = owned_ns(res)?;
                let (e, empty) = match ev {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    _ => return Err(invalid("parser state")),
                };
                if root.is_some() && stack.is_empty() {
                    return Err(invalid("more than one root element"));
                }
                count += 1;
                if count > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(invalid("XML too large or too deeply nested"));
                }
                let name = std::str::from_utf8(e.local_name().into_inner())
                    .map_err(|_| invalid("element name is not UTF-8"))?
                    .to_owned();
                let mut el = Element {
                    ns,
                    name,
                    ..Element::default()
                };
                for a in e.attributes() {
                    let a = a.map_err(|e| invalid(format!("malformed attribute: {e}")))?;
                    if a.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ares, local) = reader.resolve_attribute(a.key);
                    let ans = owned_ns(ares)?;
                    let local = std::str::from_utf8(local.into_inner())
                        .map_err(|_| invalid("attribute name is not UTF-8"))?
                        .to_owned();
                    let value = a
                        .unescape_value()
                        .map_err(|e| invalid(format!("bad attribute value: {e}")))?
                        .into_owned();
                    el.attrs.push((ans, local, value));
                }
                if empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| invalid("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| invalid(format!("bad text or entity reference: {e}")))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(invalid("text outside the root element")),
                }
            }
            Event::CData(c) => {
                let s = std::str::from_utf8(&c).map_err(|_| invalid("CDATA is not UTF-8"))?;
                match stack.last_mut() {
                    Some(top) => top.text.push_str(s),
                    None => return Err(invalid("CDATA outside the root element")),
                }
            }
            Event::Comment(_) => {}
            Event::Decl(d) => {
                if root.is_some() || !stack.is_empty() {
                    return Err(invalid("XML declaration in the wrong place"));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| invalid("bad encoding declaration"))?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(invalid("only UTF-8 XML is accepted"));
                    }
                }
            }
            Event::PI(_) => return Err(invalid("processing instructions are not allowed")),
            Event::DocType(_) => {
                return Err((
                    LoginError::SamlDtdForbidden,
                    "the message contains a DOCTYPE".into(),
                ));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(invalid("unclosed element"));
    }
    root.ok_or_else(|| invalid("no root element"))
}

/// Parses an xs:dateTime (UTC, `Z` or offset) into unix seconds.
fn parse_instant(s: &str) -> Result<i64, Refused> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            invalid(format!(
                "bad dateTime {:?}",
                s.chars().take(40).collect::<String>()
            ))
        })
}

// ---------------------------------------------------------------------------------------
// Verification.

struct Verifier<'a> {
    idp: &'a IdpMetadata,
    entity_id: String,
    acs_url: String,
    now: i64,
    skew: i64,
    provider_name: &'a str,
    max_bytes: usize,
}

/// What a verified assertion said.
struct Verified {
    assertion_id: String,
    issuer: String,
    name_id: Option<String>,
    name_id_format: Option<String>,
    in_response_to: Option<String>,
    not_on_or_after: i64,
    session_not_on_or_after: Option<i64>,
    /// Attribute name (and friendly name) -> values, full text.
    attributes: BTreeMap<String, Vec<String>>,
}

fn sig_invalid(detail: impl Into<String>) -> Refused {
    (LoginError::SamlSignatureInvalid, detail.into())
}

fn algorithm(detail: &str, uri: &str) -> Refused {
    (
        LoginError::SamlAlgorithmNotAllowed {
            algorithm: uri.chars().take(200).collect(),
        },
        format!("{detail} {uri:?} is not allowed"),
    )
}

impl Verifier<'_> {
    fn verify(&self, b64: &str, expected: Option<&str>) -> Result<Verified, Refused> {
        let (xml, root) = decode_response(b64, self.max_bytes)?;
        // Status first: a refusal from the IdP usually carries no assertion.
        let status = root
            .child(NS_SAMLP, "Status")
            .ok_or_else(|| invalid("Response has no Status"))?;
        let code = status
            .child(NS_SAMLP, "StatusCode")
            .and_then(|c| c.attr("Value"))
            .unwrap_or("");
        if code != STATUS_SUCCESS {
            let sub = status
                .child(NS_SAMLP, "StatusCode")
                .and_then(|c| c.child(NS_SAMLP, "StatusCode"))
                .and_then(|c| c.attr("Value"))
                .unwrap_or("");
            let message = status
                .child(NS_SAMLP, "StatusMessage")
                .map(|m| m.text.trim().chars().take(300).collect::<String>())
                .unwrap_or_default();
            let shown = if sub.is_empty() {
                code.to_owned()
            } else {
                format!("{code} / {sub}")
            };
            return Err((
                LoginError::SamlIdpStatus {
                    provider: self.provider_name.to_owned(),
                    status: shown.chars().take(300).collect(),
                    message: message.clone(),
                },
                format!("IdP status {shown}: {message}"),
            ));
        }
        let assertion_id = self.check_shape(&root)?;
        // xmlsec: every signature must verify against the metadata's certificates; the
        // document is reduced to the signed content only.
        let reduced = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            &xml,
            &self.idp.certs,
            ReduceMode::ValidateAndMarkNoAncestors,
            Some(XMLSEC_ALLOWED),
        )
        .map_err(|e| sig_invalid(format!("xmlsec refused the signature: {e}")))?;
        let reduced_root = parse_xml(&reduced)
            .map_err(|(_, d)| sig_invalid(format!("reduced document unreadable: {d}")))?;
        let (assertion, signed_response) = if reduced_root.is(NS_SAML, "Assertion") {
            (&reduced_root, None)
        } else if reduced_root.is(NS_SAMLP, "Response") {
            let mut found = reduced_root.children_named(NS_SAML, "Assertion");
            match (found.next(), found.next()) {
                (Some(a), None) => (a, Some(&reduced_root)),
                _ => {
                    return Err(sig_invalid(
                        "the signed Response does not contain exactly one assertion",
                    ));
                }
            }
        } else {
            return Err(sig_invalid(
                "the signature covers neither the Response nor the assertion",
            ));
        };
        let mut all = Vec::new();
        reduced_root.walk(None, &mut all);
        if all
            .iter()
            .filter(|(e, _)| e.is(NS_SAML, "Assertion"))
            .count()
            != 1
        {
            return Err((
                LoginError::SamlMultipleAssertions,
                "the signed content holds more than one assertion".into(),
            ));
        }
        if assertion.attr("ID") != Some(assertion_id.as_str()) {
            return Err(sig_invalid(
                "the verified assertion is not the assertion in the message",
            ));
        }
        // The envelope: signed when the Response signature verified, else the raw one.
        let envelope = signed_response.unwrap_or(&root);
        self.check_envelope(envelope, signed_response.is_some(), expected)?;
        self.check_assertion(assertion, expected)
    }

    /// Shape rules on the raw message; returns the one assertion's ID.
    fn check_shape(&self, root: &Element) -> Result<String, Refused> {
        let mut all = Vec::new();
        root.walk(None, &mut all);
        if all.iter().any(|(e, _)| {
            e.ns == NS_SAML
                && matches!(
                    e.name.as_str(),
                    "EncryptedAssertion" | "EncryptedID" | "EncryptedAttribute"
                )
        }) {
            return Err((
                LoginError::SamlEncryptionNotAllowed,
                "the Response carries encrypted SAML content".into(),
            ));
        }
        let assertions: Vec<&(&Element, Option<&Element>)> = all
            .iter()
            .filter(|(e, _)| e.is(NS_SAML, "Assertion"))
            .collect();
        let (assertion, parent) = match assertions.as_slice() {
            [] => return Err(invalid("the Response carries no assertion")),
            [one] => (one.0, one.1),
            many => {
                return Err((
                    LoginError::SamlMultipleAssertions,
                    format!("the Response carries {} assertions", many.len()),
                ));
            }
        };
        if !parent.is_some_and(|p| std::ptr::eq(p, root)) {
            return Err(sig_invalid(
                "the assertion is not a direct child of the Response",
            ));
        }
        let assertion_id = assertion
            .attr("ID")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the assertion has no ID"))?
            .to_owned();
        let sigs: Vec<&(&Element, Option<&Element>)> = all
            .iter()
            .filter(|(e, _)| e.is(NS_DS, "Signature"))
            .collect();
        if sigs.is_empty() {
            return Err((
                LoginError::SamlSignatureMissing,
                "neither the Response nor the assertion is signed".into(),
            ));
        }
        if all.iter().any(|(e, _)| e.is(NS_DS, "Object")) {
            return Err(sig_invalid("ds:Object inside a signature"));
        }
        let mut covers_assertion = false;
        for (sig, parent) in sigs {
            let Some(parent) = parent else {
                return Err(sig_invalid("signature as the document root"));
            };
            let on_root = std::ptr::eq(*parent, root);
            let on_assertion = std::ptr::eq(*parent, assertion);
            if !on_root && !on_assertion {
                return Err(sig_invalid(format!(
                    "signature inside {{{}}}{}, not an enveloped signature of the Response or the assertion",
                    parent.ns, parent.name
                )));
            }
            if parent.children_named(NS_DS, "Signature").count() != 1 {
                return Err(sig_invalid("more than one signature on one element"));
            }
            let parent_id = parent
                .attr("ID")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| sig_invalid("signed element without ID"))?;
            let mut infos = sig.children_named(NS_DS, "SignedInfo");
            let (Some(info), None) = (infos.next(), infos.next()) else {
                return Err(sig_invalid("a signature must have exactly one SignedInfo"));
            };
            let c14n = info
                .child(NS_DS, "CanonicalizationMethod")
                .and_then(|c| c.attr("Algorithm"))
                .unwrap_or("");
            if !C14N_ALGORITHMS.contains(&c14n) {
                return Err(algorithm("canonicalisation", c14n));
            }
            let method = info
                .child(NS_DS, "SignatureMethod")
                .and_then(|c| c.attr("Algorithm"))
                .unwrap_or("");
            if !SIGNATURE_ALGORITHMS.contains(&method) {
                return Err(algorithm("signature method", method));
            }
            let mut refs = info.children_named(NS_DS, "Reference");
            let (Some(reference), None) = (refs.next(), refs.next()) else {
                return Err(sig_invalid("a signature must have exactly one Reference"));
            };
            if reference.attr("URI") != Some(format!("#{parent_id}").as_str()) {
                return Err(sig_invalid(
                    "the signature's Reference does not point at the element that contains it",
                ));
            }
            if let Some(transforms) = reference.child(NS_DS, "Transforms") {
                for t in transforms.children_named(NS_DS, "Transform") {
                    let a = t.attr("Algorithm").unwrap_or("");
                    if a != ENVELOPED && !C14N_ALGORITHMS.contains(&a) {
                        return Err(algorithm("transform", a));
                    }
                }
            }
            let digest = reference
                .child(NS_DS, "DigestMethod")
                .and_then(|c| c.attr("Algorithm"))
                .unwrap_or("");
            if !DIGEST_ALGORITHMS.contains(&digest) {
                return Err(algorithm("digest", digest));
            }
            covers_assertion |= on_root || on_assertion;
        }
        if !covers_assertion {
            return Err((
                LoginError::SamlSignatureMissing,
                "no signature covers the assertion".into(),
            ));
        }
        Ok(assertion_id)
    }

    fn check_envelope(
        &self,
        env: &Element,
        signed: bool,
        expected: Option<&str>,
    ) -> Result<(), Refused> {
        if env.attr("Version") != Some("2.0") {
            return Err(invalid("Response Version is not 2.0"));
        }
        match env.attr("Destination") {
            Some(d) if d == self.acs_url => {}
            Some(d) => {
                return Err((
                    LoginError::SamlDestinationInvalid,
                    format!("Destination {d:?} is not our ACS {:?}", self.acs_url),
                ));
            }
            None if signed => {
                return Err((
                    LoginError::SamlDestinationInvalid,
                    "a signed Response must name its Destination".into(),
                ));
            }
            None => {}
        }
        if let Some(issuer) = env.child(NS_SAML, "Issuer") {
            let i = issuer.text.trim();
            if i != self.idp.entity_id {
                return Err((
                    LoginError::SamlIssuerInvalid,
                    format!("Response Issuer {i:?} is not {:?}", self.idp.entity_id),
                ));
            }
        }
        let irt = env.attr("InResponseTo").filter(|s| !s.is_empty());
        match (expected, irt) {
            (Some(e), Some(got)) if homeroom_core::crypto::ct_eq(e.as_bytes(), got.as_bytes()) => {
                Ok(())
            }
            (Some(_), Some(_)) => Err((
                LoginError::SamlInResponseToInvalid,
                "Response InResponseTo does not match our request".into(),
            )),
            (Some(_), None) => Err((
                LoginError::SamlInResponseToInvalid,
                "an SP-initiated Response must carry InResponseTo".into(),
            )),
            (None, Some(_)) => Err((
                LoginError::SamlInResponseToInvalid,
                "a Response with InResponseTo was presented as unsolicited".into(),
            )),
            (None, None) => Ok(()),
        }
    }

    fn not_after(&self, label: &str, t: i64) -> Result<(), Refused> {
        if t <= self.now - self.skew {
            return Err((
                LoginError::SamlExpired,
                format!(
                    "{label} {t} is past (now {}, skew {} s)",
                    self.now, self.skew
                ),
            ));
        }
        Ok(())
    }

    fn not_before(&self, label: &str, t: i64) -> Result<(), Refused> {
        if t > self.now + self.skew {
            return Err((
                LoginError::SamlNotYetValid,
                format!(
                    "{label} {t} is in the future (now {}, skew {} s)",
                    self.now, self.skew
                ),
            ));
        }
        Ok(())
    }

    fn check_assertion(&self, a: &Element, expected: Option<&str>) -> Result<Verified, Refused> {
        if a.attr("Version") != Some("2.0") {
            return Err(invalid("Assertion Version is not 2.0"));
        }
        let assertion_id = a.attr("ID").unwrap_or_default().to_owned();
        let issuer = a
            .child(NS_SAML, "Issuer")
            .map(|i| i.text.trim().to_owned())
            .unwrap_or_default();
        if issuer != self.idp.entity_id {
            return Err((
                LoginError::SamlIssuerInvalid,
                format!(
                    "assertion Issuer {issuer:?} is not {:?}",
                    self.idp.entity_id
                ),
            ));
        }
        let issued = parse_instant(a.attr("IssueInstant").unwrap_or(""))?;
        self.not_before("IssueInstant", issued)?;
        self.not_after("IssueInstant + max age", issued + MAX_ASSERTION_AGE_SECS)?;
        // Conditions and audience (required).
        let conditions = a.child(NS_SAML, "Conditions").ok_or((
            LoginError::SamlAudienceInvalid,
            "the assertion has no Conditions/AudienceRestriction".to_owned(),
        ))?;
        let mut cond_not_after = None;
        if let Some(nb) = conditions.attr("NotBefore") {
            self.not_before("Conditions NotBefore", parse_instant(nb)?)?;
        }
        if let Some(na) = conditions.attr("NotOnOrAfter") {
            let t = parse_instant(na)?;
            self.not_after("Conditions NotOnOrAfter", t)?;
            cond_not_after = Some(t);
        }
        let restrictions: Vec<&Element> = conditions
            .children_named(NS_SAML, "AudienceRestriction")
            .collect();
        if restrictions.is_empty() {
            return Err((
                LoginError::SamlAudienceInvalid,
                "the assertion has no AudienceRestriction".into(),
            ));
        }
        for r in restrictions {
            if !r
                .children_named(NS_SAML, "Audience")
                .any(|au| au.text.trim() == self.entity_id)
            {
                let got: Vec<String> = r
                    .children_named(NS_SAML, "Audience")
                    .map(|au| au.text.trim().to_owned())
                    .collect();
                return Err((
                    LoginError::SamlAudienceInvalid,
                    format!(
                        "AudienceRestriction {got:?} does not name {:?}",
                        self.entity_id
                    ),
                ));
            }
        }
        // Subject and bearer confirmation.
        let subject = a
            .child(NS_SAML, "Subject")
            .ok_or_else(|| invalid("the assertion has no Subject"))?;
        let name_id = subject.child(NS_SAML, "NameID");
        let bearers: Vec<&Element> = subject
            .children_named(NS_SAML, "SubjectConfirmation")
            .filter(|c| c.attr("Method") == Some(CM_BEARER))
            .collect();
        if bearers.is_empty() {
            return Err(invalid("no bearer SubjectConfirmation"));
        }
        let mut first_err = None;
        let mut confirmed = None;
        for b in bearers {
            match self.check_bearer(b, expected) {
                Ok(t) => {
                    confirmed = Some(t);
                    break;
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        let scd_not_after = match (confirmed, first_err) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(e),
            (None, None) => return Err(invalid("no bearer SubjectConfirmation")),
        };
        // AuthnStatement.
        let authn = a
            .child(NS_SAML, "AuthnStatement")
            .ok_or_else(|| invalid("the assertion has no AuthnStatement"))?;
        let session_not_on_or_after = match authn.attr("SessionNotOnOrAfter") {
            Some(s) => {
                let t = parse_instant(s)?;
                self.not_after("SessionNotOnOrAfter", t)?;
                Some(t)
            }
            None => None,
        };
        let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for stmt in a.children_named(NS_SAML, "AttributeStatement") {
            for at in stmt.children_named(NS_SAML, "Attribute") {
                let values: Vec<String> = at
                    .children_named(NS_SAML, "AttributeValue")
                    .map(|v| v.text.trim().to_owned())
                    .collect();
                for key in [at.attr("Name"), at.attr("FriendlyName")]
                    .into_iter()
                    .flatten()
                {
                    if !key.is_empty() {
                        attributes
                            .entry(key.to_owned())
                            .or_default()
                            .extend(values.iter().cloned());
                    }
                }
            }
        }
        Ok(Verified {
            assertion_id,
            issuer,
            name_id: name_id.map(|n| n.text.trim().to_owned()),
            name_id_format: name_id.and_then(|n| n.attr("Format")).map(str::to_owned),
            in_response_to: expected.map(str::to_owned),
            not_on_or_after: cond_not_after.map_or(scd_not_after, |c| c.min(scd_not_after)),
            session_not_on_or_after,
            attributes,
        })
    }

    /// One bearer confirmation; its NotOnOrAfter when it holds.
    fn check_bearer(&self, b: &Element, expected: Option<&str>) -> Result<i64, Refused> {
        let data = b
            .child(NS_SAML, "SubjectConfirmationData")
            .ok_or_else(|| invalid("bearer SubjectConfirmation without SubjectConfirmationData"))?;
        match data.attr("Recipient") {
            Some(r) if r == self.acs_url => {}
            other => {
                return Err((
                    LoginError::SamlRecipientInvalid,
                    format!("Recipient {other:?} is not our ACS {:?}", self.acs_url),
                ));
            }
        }
        let na = data
            .attr("NotOnOrAfter")
            .ok_or_else(|| invalid("bearer SubjectConfirmationData without NotOnOrAfter"))?;
        let na = parse_instant(na)?;
        self.not_after("SubjectConfirmationData NotOnOrAfter", na)?;
        if let Some(nb) = data.attr("NotBefore") {
            self.not_before("SubjectConfirmationData NotBefore", parse_instant(nb)?)?;
        }
        let irt = data.attr("InResponseTo").filter(|s| !s.is_empty());
        match (expected, irt) {
            (Some(e), Some(got)) if homeroom_core::crypto::ct_eq(e.as_bytes(), got.as_bytes()) => {}
            (None, None) => {}
            (Some(_), _) => {
                return Err((
                    LoginError::SamlInResponseToInvalid,
                    "SubjectConfirmationData InResponseTo does not match our request".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    LoginError::SamlInResponseToInvalid,
                    "an assertion answering a request was presented as unsolicited".into(),
                ));
            }
        }
        Ok(na)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn comments_never_truncate_text() {
        let root = parse_xml(
            r#"<r xmlns:s="urn:oasis:names:tc:SAML:2.0:assertion"><s:NameID>student1@district.test<!---->.evil.test</s:NameID></r>"#,
        )
        .unwrap();
        assert_eq!(root.children[0].text, "student1@district.test.evil.test");
        assert_eq!(root.children[0].ns, NS_SAML);
    }

    #[test]
    fn dtd_and_entities_refused_before_parsing() {
        let (e, _) = parse_xml(r#"<!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>"#).unwrap_err();
        assert_eq!(e.code(), "saml.dtd_forbidden");
        let (e, _) = decode_response(&b64("<!doctype r><r/>"), 4096).unwrap_err();
        assert_eq!(e.code(), "saml.dtd_forbidden");
        let (e, _) = parse_xml("<r>&unknown;</r>").unwrap_err();
        assert_eq!(e.code(), "saml.message_invalid");
    }

    #[test]
    fn malformed_and_oversized_refused() {
        for bad in [
            "not base64 !!!".to_owned(),
            b64("<a><b></a>"),
            b64("<a/><b/>"),
            b64("<?pi x?><a/>"),
            b64(r#"<?xml version="1.0" encoding="UTF-16"?><a/>"#),
            b64("<x:a/>"),
            b64(&"<a>".repeat(100)),
            b64("<Response/>"),
        ] {
            let (e, _) = decode_response(&bad, 4096).unwrap_err();
            assert_eq!(e.code(), "saml.message_invalid", "{bad}");
        }
        let big = b64(&format!("<a>{}</a>", "x".repeat(10_000)));
        let (e, _) = decode_response(&big, 4096).unwrap_err();
        assert_eq!(e.code(), "saml.message_invalid");
    }

    #[test]
    fn config_problems_name_their_keys() {
        let paths = |v: Value| -> Vec<String> {
            match validate_config(&v) {
                Ok(_) => vec![],
                Err(p) => p.into_iter().map(|p| p.path).collect(),
            }
        };
        assert_eq!(paths(json!({})), vec!["idp_metadata_url"]);
        assert_eq!(
            paths(json!({"idp_metadata_url": "http://idp.example/md"})),
            vec!["idp_metadata_url"]
        );
        assert!(paths(json!({"idp_metadata_url": "https://idp.example/md"})).is_empty());
        let mut p = paths(json!({
            "idp_metadata_url": "https://idp.example/md",
            "clock_skew_secs": 600,
            "relay_state_apps": ["https://evil.example/"],
            "name_id_format": "urn:x",
            "preset": "classlink",
        }));
        p.sort();
        assert_eq!(
            p,
            vec![
                "clock_skew_secs",
                "name_id_format",
                "relay_state_apps",
                "relay_state_apps[0]",
                "tenant_ids"
            ]
        );
        assert_eq!(
            paths(json!({"idp_metadata_url": "https://i.example", "bogus": 1})),
            vec!["bogus"]
        );
        assert_eq!(
            paths(
                json!({"idp_metadata_xml": "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"x\"/>"})
            ),
            vec!["idp_metadata_xml"]
        );
    }

    #[test]
    fn certificate_dates_are_read_from_the_certificate() {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509, X509NameBuilder};
        let key = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "idp.district.example")
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(1_700_000_000).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(1_893_456_000).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let der = b.build().to_der().unwrap();
        let d = cert_dates(&der).unwrap();
        assert_eq!(d.not_after, 1_893_456_000);
        assert_eq!(d.subject, "idp.district.example");
        assert_eq!(d.fingerprint.len(), 8 * 3 - 1);
        assert!(d.not_after_text.contains("2030"), "{}", d.not_after_text);
        assert!(cert_dates(b"not a certificate").is_err());
    }

    #[test]
    fn metadata_without_signing_certificate_is_refused() {
        let md = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example/md"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#;
        let err = IdpMetadata::parse(md, None).unwrap_err();
        assert!(err.contains("no signing certificate"), "{err}");
        let err = IdpMetadata::parse(&format!("<!DOCTYPE x>{md}"), None).unwrap_err();
        assert!(err.contains("DOCTYPE"));
    }

    #[test]
    fn sp_metadata_names_entity_and_acs() {
        let xml = sp_metadata_xml(
            "http://127.0.0.1:1/saml/p/metadata",
            "http://127.0.0.1:1/saml/p/acs",
            NAMEID_PERSISTENT,
        )
        .unwrap();
        assert!(xml.contains("entityID=\"http://127.0.0.1:1/saml/p/metadata\""));
        assert!(xml.contains("http://127.0.0.1:1/saml/p/acs"));
        assert!(xml.contains(HTTP_POST_BINDING));
        assert!(!has_dtd(&xml));
    }

    #[test]
    fn aliases() {
        assert!(is_alias("demo-app"));
        for bad in ["", "https://x", "//evil", "/\\evil", "a b", "a?b"] {
            assert!(!is_alias(bad), "{bad}");
        }
    }
}
