//! A SAML 2.0 IdP emulator (cargo feature `saml`) for the demo and the tests.
//!
//! It has its own RSA signing key (PEM, kept by the caller) and a self-signed certificate,
//! publishes metadata (`/metadata`, signing `KeyDescriptor`, SSO by HTTP-Redirect at
//! `/sso`), answers an SP-initiated AuthnRequest with a user picker and then a signed
//! Response (assertion signed, RSA-SHA256, exclusive c14n) POSTed to the SP's ACS, and
//! sends unsolicited (IdP-initiated) Responses from its portal page (`/portal`), whose
//! tiles carry an app alias as RelayState. Signing uses libxmlsec1 through `samael`.
//!
//! [`ResponseSpec`], [`SamlIdp::response_xml`] and [`sign`] are public so tests can build
//! exactly the Response they need, hostile ones included (sign, then tamper).

use crate::{SandboxError, SandboxUser};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider};
use samael::idp::{CertificateParams, IdentityProvider};
use std::collections::HashMap;
use std::io::Read;
use std::str::FromStr;
use std::sync::Arc;

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct SamlIdpConfig {
    /// Where the IdP is mounted (`{issuer}/sandbox/saml`); its entity ID is `{base}/metadata`.
    pub base_url: String,
    /// The one SP it serves: entity ID and ACS URL.
    pub sp_entity_id: String,
    pub acs_url: String,
    /// The people it signs in.
    pub users: Vec<SandboxUser>,
    /// RSA private key, PKCS#8 or PKCS#1 PEM.
    pub key_pem: String,
    /// App aliases offered as portal tiles (IdP-initiated, RelayState = alias).
    pub portal_apps: Vec<String>,
}

struct Inner {
    config: SamlIdpConfig,
    key_der: Vec<u8>,
    cert: CertificateDer,
}

/// The emulator. Cheap to clone.
#[derive(Clone)]
pub struct SamlIdp {
    inner: Arc<Inner>,
}

/// Everything a Response says; tests change fields to build hostile variants.
#[derive(Debug, Clone)]
pub struct ResponseSpec {
    pub response_id: String,
    pub assertion_id: String,
    pub issuer: String,
    /// The assertion's issuer when it differs from the Response's.
    pub assertion_issuer: Option<String>,
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    pub name_id: String,
    pub name_id_format: String,
    pub recipient: String,
    /// Audiences of the one AudienceRestriction; empty: no AudienceRestriction.
    pub audiences: Vec<String>,
    pub issue_instant: i64,
    pub not_before: i64,
    pub not_on_or_after: i64,
    pub confirmation_not_on_or_after: i64,
    pub status: String,
    pub attributes: Vec<(String, Vec<String>)>,
    pub sign_assertion: bool,
    pub sign_response: bool,
    pub signature_method: String,
    pub digest_method: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn instant(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn random_id() -> String {
    let mut b = [0u8; 20];
    let _ = getrandom_fill(&mut b);
    format!(
        "_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn getrandom_fill(b: &mut [u8]) -> Result<(), ()> {
    use rsa::rand_core::RngCore;
    rsa::rand_core::OsRng.try_fill_bytes(b).map_err(|_| ())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl ResponseSpec {
    /// A valid Response for `name_id` to the SP, issued now, assertion signed.
    pub fn new(
        issuer: &str,
        sp_entity_id: &str,
        acs_url: &str,
        name_id: &str,
        in_response_to: Option<&str>,
    ) -> Self {
        let t = now();
        Self {
            response_id: random_id(),
            assertion_id: random_id(),
            issuer: issuer.to_owned(),
            assertion_issuer: None,
            destination: Some(acs_url.to_owned()),
            in_response_to: in_response_to.map(str::to_owned),
            name_id: name_id.to_owned(),
            name_id_format: PERSISTENT.to_owned(),
            recipient: acs_url.to_owned(),
            audiences: vec![sp_entity_id.to_owned()],
            issue_instant: t,
            not_before: t - 5,
            not_on_or_after: t + 300,
            confirmation_not_on_or_after: t + 300,
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".into(),
            attributes: Vec::new(),
            sign_assertion: true,
            sign_response: false,
            signature_method: RSA_SHA256.into(),
            digest_method: SHA256.into(),
        }
    }

    /// Adds an attribute (name, values).
    pub fn attr(mut self, name: &str, values: &[&str]) -> Self {
        self.attributes.push((
            name.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        ));
        self
    }

    fn signature_template(&self, id: &str, cert: &CertificateDer) -> String {
        format!(
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/><ds:SignatureMethod Algorithm=\"{}\"/><ds:Reference URI=\"#{id}\"><ds:Transforms><ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/><ds:Transform Algorithm=\"{EXC_C14N}\"/></ds:Transforms><ds:DigestMethod Algorithm=\"{}\"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
            esc(&self.signature_method),
            esc(&self.digest_method),
            STANDARD.encode(cert.der_data())
        )
    }

    /// The assertion element, with a signature template when `sign_assertion`.
    pub fn assertion_xml(&self, cert: &CertificateDer) -> String {
        let issuer = self.assertion_issuer.as_deref().unwrap_or(&self.issuer);
        let irt = self
            .in_response_to
            .as_deref()
            .map(|i| format!(" InResponseTo=\"{}\"", esc(i)))
            .unwrap_or_default();
        let sig = if self.sign_assertion {
            self.signature_template(&self.assertion_id, cert)
        } else {
            String::new()
        };
        let audience = if self.audiences.is_empty() {
            String::new()
        } else {
            format!(
                "<saml:AudienceRestriction>{}</saml:AudienceRestriction>",
                self.audiences
                    .iter()
                    .map(|a| format!("<saml:Audience>{}</saml:Audience>", esc(a)))
                    .collect::<String>()
            )
        };
        let attrs: String = self
            .attributes
            .iter()
            .map(|(n, vals)| {
                format!(
                    "<saml:Attribute Name=\"{}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:basic\">{}</saml:Attribute>",
                    esc(n),
                    vals.iter()
                        .map(|v| format!("<saml:AttributeValue>{}</saml:AttributeValue>", esc(v)))
                        .collect::<String>()
                )
            })
            .collect();
        format!(
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{ii}\"><saml:Issuer>{iss}</saml:Issuer>{sig}<saml:Subject><saml:NameID Format=\"{fmt}\">{nid}</saml:NameID><saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData NotOnOrAfter=\"{scd}\" Recipient=\"{rcp}\"{irt}/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore=\"{nb}\" NotOnOrAfter=\"{noa}\">{audience}</saml:Conditions><saml:AuthnStatement AuthnInstant=\"{ii}\" SessionIndex=\"{id}\"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement>{attrs}</saml:AttributeStatement></saml:Assertion>",
            id = esc(&self.assertion_id),
            ii = instant(self.issue_instant),
            iss = esc(issuer),
            fmt = esc(&self.name_id_format),
            nid = esc(&self.name_id),
            scd = instant(self.confirmation_not_on_or_after),
            rcp = esc(&self.recipient),
            nb = instant(self.not_before),
            noa = instant(self.not_on_or_after),
        )
    }

    /// The whole Response around `assertion` (an XML fragment), with a signature template
    /// when `sign_response`.
    pub fn response_xml(&self, assertion: &str, cert: &CertificateDer) -> String {
        let dest = self
            .destination
            .as_deref()
            .map(|d| format!(" Destination=\"{}\"", esc(d)))
            .unwrap_or_default();
        let irt = self
            .in_response_to
            .as_deref()
            .map(|i| format!(" InResponseTo=\"{}\"", esc(i)))
            .unwrap_or_default();
        let sig = if self.sign_response {
            self.signature_template(&self.response_id, cert)
        } else {
            String::new()
        };
        format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\"{dest}{irt}><saml:Issuer>{}</saml:Issuer>{sig}<samlp:Status><samlp:StatusCode Value=\"{}\"/></samlp:Status>{assertion}</samlp:Response>",
            esc(&self.response_id),
            instant(self.issue_instant),
            esc(&self.issuer),
            esc(&self.status),
        )
    }
}

/// Signs the first signature template of `xml` with a DER private key (libxmlsec1).
pub fn sign(xml: &str, key_der: &[u8]) -> Result<String, SandboxError> {
    let signed = Crypto::sign_xml(xml, key_der).map_err(|e| SandboxError::Key(e.to_string()))?;
    // libxml adds an XML declaration; fragments are re-embedded, so drop it.
    let trimmed = signed.trim_start();
    Ok(
        match trimmed
            .strip_prefix("<?xml")
            .and_then(|r| r.split_once("?>"))
        {
            Some((_, rest)) => rest.trim_start().to_owned(),
            None => trimmed.to_owned(),
        },
    )
}

impl SamlIdp {
    /// Loads the key and makes a self-signed certificate for it.
    pub fn new(config: SamlIdpConfig) -> Result<Self, SandboxError> {
        let key = RsaPrivateKey::from_pkcs8_pem(&config.key_pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&config.key_pem))
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| SandboxError::Key(e.to_string()))?
            .as_bytes()
            .to_vec();
        let idp = IdentityProvider::from_rsa_private_key_der(&der)
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        let cert = idp
            .create_certificate(&CertificateParams {
                common_name: "Homeroom sandbox SAML IdP",
                issuer_name: "Homeroom sandbox SAML IdP",
                days_until_expiration: 3650,
            })
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                key_der: der,
                cert,
            }),
        })
    }

    /// The IdP's entity ID (`{base}/metadata`).
    pub fn entity_id(&self) -> String {
        format!("{}/metadata", self.inner.config.base_url)
    }

    /// The signing certificate as PEM (for testers crafting their own responses).
    pub fn certificate_pem(&self) -> String {
        let b64 = STANDARD.encode(self.inner.cert.der_data());
        let lines: Vec<String> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    /// The IdP metadata (signing certificate, SSO by HTTP-Redirect).
    pub fn metadata_xml(&self) -> String {
        format!(
            "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\" entityID=\"{}\"><md:IDPSSODescriptor protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\" WantAuthnRequestsSigned=\"false\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:NameIDFormat>{PERSISTENT}</md:NameIDFormat><md:SingleSignOnService Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect\" Location=\"{}/sso\"/></md:IDPSSODescriptor></md:EntityDescriptor>",
            esc(&self.entity_id()),
            STANDARD.encode(self.inner.cert.der_data()),
            esc(&self.inner.config.base_url)
        )
    }

    /// A spec for a valid response to the configured SP.
    pub fn spec(&self, name_id: &str, in_response_to: Option<&str>) -> ResponseSpec {
        ResponseSpec::new(
            &self.entity_id(),
            &self.inner.config.sp_entity_id,
            &self.inner.config.acs_url,
            name_id,
            in_response_to,
        )
    }

    /// The signed Response XML for a spec (assertion signed first, then the Response).
    pub fn response_xml(&self, spec: &ResponseSpec) -> Result<String, SandboxError> {
        let cert = &self.inner.cert;
        let mut assertion = spec.assertion_xml(cert);
        if spec.sign_assertion {
            assertion = sign(&assertion, &self.inner.key_der)?;
        }
        let xml = spec.response_xml(&assertion, cert);
        if spec.sign_response {
            sign(&xml, &self.inner.key_der)
        } else {
            Ok(xml)
        }
    }

    /// Signs any document's first signature template with this IdP's key.
    pub fn sign(&self, xml: &str) -> Result<String, SandboxError> {
        sign(xml, &self.inner.key_der)
    }

    /// The certificate (DER).
    pub fn certificate(&self) -> &CertificateDer {
        &self.inner.cert
    }

    fn user_spec(&self, user: &SandboxUser, irt: Option<&str>) -> ResponseSpec {
        self.spec(&user.sub, irt)
            .attr("urn:oid:0.9.2342.19200300.100.1.3", &[&user.email])
            .attr("urn:oid:2.5.4.42", &[&user.given_name])
            .attr("urn:oid:2.5.4.4", &[&user.family_name])
            .attr("urn:oid:2.16.840.1.113730.3.1.241", &[&user.name])
            .attr("urn:oid:1.3.6.1.4.1.5923.1.1.1.1", &[&user.role])
    }

    /// Routes: `/metadata`, `/sso` (GET, Redirect binding), `/sso/login` (POST, picker),
    /// `/portal` (IdP-initiated tiles), `/launch` (POST, unsolicited response),
    /// `/autopost.js`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metadata", get(metadata))
            .route("/sso", get(sso))
            .route("/sso/login", post(sso_login))
            .route("/portal", get(portal))
            .route("/launch", post(launch))
            .route("/autopost.js", get(autopost_js))
            .with_state(self.clone())
    }

    fn user(&self, sub: &str) -> Option<&SandboxUser> {
        self.inner.config.users.iter().find(|u| u.sub == sub)
    }

    fn post_form(&self, spec: &ResponseSpec, relay_state: &str) -> Response {
        match self.response_xml(spec) {
            Ok(xml) => {
                let body = format!(
                    "<form method=\"post\" action=\"{}\" class=\"autopost\"><input type=\"hidden\" name=\"SAMLResponse\" value=\"{}\"><input type=\"hidden\" name=\"RelayState\" value=\"{}\"><p>Signed in at the sandbox SAML IdP.</p><button type=\"submit\">Continue</button></form><script src=\"{}/autopost.js\"></script>",
                    esc(&self.inner.config.acs_url),
                    STANDARD.encode(xml.as_bytes()),
                    esc(relay_state),
                    esc(&path_of(&self.inner.config.base_url)),
                );
                page("Sandbox SAML IdP", &body)
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
}

fn path_of(base: &str) -> String {
    url::Url::parse(base)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

fn page(title: &str, body: &str) -> Response {
    let mut r = Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><link rel=\"stylesheet\" href=\"/static/homeroom.css\"></head><body><main class=\"card\"><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    ))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn metadata(State(idp): State<SamlIdp>) -> Response {
    let mut r = idp.metadata_xml().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    r
}

async fn autopost_js() -> Response {
    let mut r = "document.querySelectorAll('form.autopost').forEach(function(f){f.submit();});"
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript"),
    );
    r
}

/// What the AuthnRequest said that matters here.
struct Request {
    id: String,
    acs: Option<String>,
    issuer: Option<String>,
}

/// Reads a Redirect-binding `SAMLRequest` (base64 of raw DEFLATE): the AuthnRequest's
/// `ID`, its AssertionConsumerServiceURL and Issuer (tests use it to answer a request).
pub fn authn_request_fields(
    saml_request: &str,
) -> Result<(String, Option<String>, Option<String>), SandboxError> {
    let r = read_authn_request(saml_request).map_err(SandboxError::Key)?;
    Ok((r.id, r.acs, r.issuer))
}

fn read_authn_request(b64: &str) -> Result<Request, String> {
    let compressed = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "SAMLRequest is not base64")?;
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(compressed.as_slice())
        .take(256 * 1024)
        .read_to_string(&mut xml)
        .map_err(|_| "SAMLRequest does not inflate")?;
    let req = samael::schema::AuthnRequest::from_str(&xml)
        .map_err(|e| format!("not an AuthnRequest: {e}"))?;
    Ok(Request {
        id: req.id.clone(),
        acs: req.assertion_consumer_service_url.clone(),
        issuer: req.issuer.and_then(|i| i.value),
    })
}

async fn sso(State(idp): State<SamlIdp>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(raw) = q.get("SAMLRequest") else {
        return (StatusCode::BAD_REQUEST, "missing SAMLRequest").into_response();
    };
    let req = match read_authn_request(raw) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let cfg = &idp.inner.config;
    if req.issuer.as_deref() != Some(cfg.sp_entity_id.as_str())
        || req.acs.as_deref().is_some_and(|a| a != cfg.acs_url)
    {
        return (
            StatusCode::BAD_REQUEST,
            "unknown SP (issuer or ACS URL not registered at the sandbox IdP)",
        )
            .into_response();
    }
    let relay = q.get("RelayState").cloned().unwrap_or_default();
    let buttons: String = cfg
        .users
        .iter()
        .map(|u| {
            format!(
                "<form method=\"post\" action=\"{}/sso/login\"><input type=\"hidden\" name=\"request_id\" value=\"{}\"><input type=\"hidden\" name=\"RelayState\" value=\"{}\"><input type=\"hidden\" name=\"user\" value=\"{}\"><button type=\"submit\">{} ({})</button></form>",
                esc(&path_of(&cfg.base_url)),
                esc(&req.id),
                esc(&relay),
                esc(&u.sub),
                esc(&u.name),
                esc(&u.role)
            )
        })
        .collect();
    page(
        "Sandbox SAML IdP: who are you?",
        &format!("<p>Pick a Demo District person.</p>{buttons}"),
    )
}

async fn sso_login(State(idp): State<SamlIdp>, Form(f): Form<HashMap<String, String>>) -> Response {
    let (Some(id), Some(user)) = (f.get("request_id"), f.get("user").and_then(|u| idp.user(u)))
    else {
        return (StatusCode::BAD_REQUEST, "unknown user or request").into_response();
    };
    let spec = idp.user_spec(user, Some(id));
    idp.post_form(&spec, f.get("RelayState").map(String::as_str).unwrap_or(""))
}

async fn portal(State(idp): State<SamlIdp>) -> Response {
    let cfg = &idp.inner.config;
    let mut tiles = String::new();
    for u in &cfg.users {
        for app in &cfg.portal_apps {
            tiles.push_str(&format!(
                "<form method=\"post\" action=\"{}/launch\"><input type=\"hidden\" name=\"user\" value=\"{}\"><input type=\"hidden\" name=\"app\" value=\"{}\"><button type=\"submit\">{} → {}</button></form>",
                esc(&path_of(&cfg.base_url)),
                esc(&u.sub),
                esc(app),
                esc(&u.name),
                esc(app)
            ));
        }
    }
    page(
        "Sandbox SAML portal",
        &format!(
            "<p>Each tile sends an IdP-initiated SAML Response (RelayState = the app alias).</p>{tiles}"
        ),
    )
}

async fn launch(State(idp): State<SamlIdp>, Form(f): Form<HashMap<String, String>>) -> Response {
    let Some(user) = f.get("user").and_then(|u| idp.user(u)) else {
        return (StatusCode::BAD_REQUEST, "unknown user").into_response();
    };
    let spec = idp.user_spec(user, None);
    idp.post_form(&spec, f.get("app").map(String::as_str).unwrap_or(""))
}
