#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SAML against a real third-party IdP: PyPI `pysaml2` (tests/saml/idp.py, started here on
//! 127.0.0.1 through tests/saml/idp.sh, which creates its venv under target/ on first use).
//! SP- and IdP-initiated logins through the broker, then hostile variants of genuine
//! pysaml2 responses, each refused with its own catalogue code. Skipped (with a message)
//! when the IdP cannot start outside CI; a failure when `CI=true`.

mod common;
use base64::Engine as _;
use common::*;
use homeroom_core::{ProviderId, TenantId};
use homeroom_directory::ProviderRecord;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Idp {
    child: Child,
    base: String,
    run: tempfile::TempDir,
}

impl Drop for Idp {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_idp() -> Option<Idp> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/saml/idp.sh");
    let log = std::fs::File::create(run.path().join("idp.log")).unwrap();
    let child = Command::new("bash")
        .arg(script)
        .env("SAML_IDP_PORT", port.to_string())
        .env("SAML_IDP_RUN", run.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn();
    let Ok(child) = child else {
        return skip("cannot run bash tests/saml/idp.sh");
    };
    let idp = Idp {
        child,
        base: format!("http://127.0.0.1:{port}"),
        run,
    };
    // The first run creates the venv (pip install pysaml2): allow a few minutes.
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{}/idp/metadata", idp.base)).send().await
            && r.status().is_success()
        {
            return Some(idp);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = std::fs::read_to_string(idp.run.path().join("idp.log")).unwrap_or_default();
    skip(&format!("pysaml2 IdP did not start:\n{log}"))
}

fn skip<T>(why: &str) -> Option<T> {
    if in_ci() {
        panic!("{why}");
    }
    eprintln!("SKIP pysaml2 interop: {why}");
    None
}

const P: &str = "pysaml";

async fn register(h: &Harness, idp: &Idp) {
    h.state
        .directory
        .upsert_provider(&ProviderRecord {
            id: ProviderId::new(P),
            tenant: TenantId::new("t1"),
            kind: "saml".into(),
            display_name: "pysaml2 IdP".into(),
            enabled: true,
            config: serde_json::json!({
                "idp_metadata_url": format!("{}/idp/metadata", idp.base),
                "allow_idp_initiated": true,
                "relay_state_apps": [APP],
            }),
        })
        .await
        .unwrap();
    let http = homeroom_providers::http::HttpClient::with_defaults().unwrap();
    let failures = h
        .state
        .providers
        .reload(
            &h.state.directory,
            &http,
            std::sync::Arc::new(h.clock.clone()),
        )
        .await
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    // Register our SP metadata at the IdP (it re-reads the directory for unknown SPs).
    let md = reqwest::get(format!("{}/saml/{P}/metadata", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(
        idp.run.path().join("sp-metadata.d").join("homeroom.xml"),
        md,
    )
    .unwrap();
}

fn hidden(html: &str, name: &str) -> Option<String> {
    let i = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[i..];
    let v = rest.find("value=\"")? + "value=\"".len();
    let end = rest[v..].find('"')?;
    Some(
        rest[v..v + end]
            .replace("&#x2B;", "+")
            .replace("&#x3D;", "=")
            .replace("&amp;", "&"),
    )
}

/// SP-initiated: start at Homeroom, sign in at pysaml2 as alice; returns the SAMLResponse
/// (base64) and RelayState the IdP posts back, without posting them.
async fn sp_login(b: &reqwest::Client, h: &Harness) -> (String, String) {
    let r = b
        .get(format!("{}/login/start?provider={P}", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    let to_idp = location(&r);
    let idp_http = reqwest::Client::new();
    let form = idp_http
        .get(&to_idp)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = hidden(&form, "key").unwrap_or_else(|| panic!("no login form: {form}"));
    let login_url = {
        let u = url::Url::parse(&to_idp).unwrap();
        format!(
            "{}://{}/idp/login",
            u.scheme(),
            u.host_str().unwrap().to_owned() + &format!(":{}", u.port().unwrap())
        )
    };
    let posted = idp_http
        .post(login_url)
        .form(&[
            ("key", key.as_str()),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let saml = hidden(&posted, "SAMLResponse").unwrap_or_else(|| panic!("no response: {posted}"));
    let relay = hidden(&posted, "RelayState").unwrap_or_default();
    (saml, relay)
}

async fn post(b: &reqwest::Client, h: &Harness, saml: &str, relay: &str) -> reqwest::Response {
    b.post(format!("{}/saml/{P}/acs", h.base))
        .form(&[("SAMLResponse", saml), ("RelayState", relay)])
        .send()
        .await
        .unwrap()
}

async fn post_and_continue(
    b: &reqwest::Client,
    h: &Harness,
    saml: &str,
    relay: &str,
) -> reqwest::Response {
    let r = post(b, h, saml, relay).await;
    if r.status().as_u16() != 303 {
        return r;
    }
    b.get(format!("{}{}", h.base, location(&r)))
        .send()
        .await
        .unwrap()
}

fn decode(b64: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}
fn encode(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

/// (start, end) of the first element whose qualified name ends with `:{local}`.
fn element(xml: &str, local: &str) -> (usize, usize) {
    let open = xml.find(&format!(":{local} ")).unwrap();
    let start = xml[..open].rfind('<').unwrap();
    let prefix = &xml[start + 1..open];
    let close = format!("</{prefix}:{local}>");
    let end = xml[start..].find(&close).unwrap() + start + close.len();
    (start, end)
}

fn strip_signatures(mut xml: String) -> String {
    while xml.contains(":Signature ") || xml.contains(":Signature>") {
        let open = xml
            .find(":Signature ")
            .or_else(|| xml.find(":Signature>"))
            .unwrap();
        let start = xml[..open].rfind('<').unwrap();
        let prefix = xml[start + 1..open].to_owned();
        let close = format!("</{prefix}:Signature>");
        let end = xml[start..].find(&close).unwrap() + start + close.len();
        xml.replace_range(start..end, "");
    }
    xml
}

#[tokio::test]
async fn pysaml2_sp_and_idp_initiated_and_hostile_variants() {
    let Some(idp) = start_idp().await else { return };
    let h = harness().await;
    register(&h, &idp).await;

    // ---- SP-initiated, with hostile variants of the genuine response first ----
    let b = browser();
    let (saml, relay) = sp_login(&b, &h).await;
    let xml = decode(&saml);
    let (a0, a1) = element(&xml, "Assertion");
    let assertion = xml[a0..a1].to_owned();
    let forged = strip_signatures(assertion.clone()).replace(">alice<", ">bob<");
    let mut cases: Vec<(String, &str)> = vec![
        (strip_signatures(xml.clone()), "saml.signature_missing"),
        (
            format!("{}{}{}", &xml[..a1], forged, &xml[a1..]),
            "saml.multiple_assertions",
        ),
        (
            format!("{}{}{}", &xml[..a0], forged, &xml[a0..]),
            "saml.multiple_assertions",
        ),
        (
            format!(
                "<!DOCTYPE r [<!ENTITY x SYSTEM \"http://127.0.0.1:9/xxe\">]>{}",
                xml.trim_start_matches(|c| c != '<')
                    .split_once("?>")
                    .map(|(_, r)| r.to_owned())
                    .filter(|_| xml.trim_start().starts_with("<?xml"))
                    .unwrap_or_else(|| xml.clone())
            ),
            "saml.dtd_forbidden",
        ),
    ];
    // A tampered attribute value (mail) after signing.
    if xml.contains("alice@example.test") {
        cases.push((
            xml.replace("alice@example.test", "bob@example.test"),
            "saml.signature_invalid",
        ));
    }
    for (bad, want) in cases {
        let r = post(&b, &h, &encode(&bad), &relay).await;
        let (_, code, _) = page_code(r).await;
        assert_eq!(code, want, "{bad}");
    }
    // The genuine response signs in; posting it again is a replay.
    let r = post_and_continue(&b, &h, &saml, &relay).await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let r = post(&browser(), &h, &saml, &relay).await;
    assert_eq!(page_code(r).await.1, "saml.replay");

    // ---- IdP-initiated (unsolicited), RelayState = an allowlisted app alias ----
    let sp_entity = format!("{}/saml/{P}/metadata", h.base);
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("sp", sp_entity.as_str()),
            ("user", "alice"),
            ("relay_state", APP),
        ])
        .finish();
    let page = reqwest::get(format!("{}/idp/unsolicited?{q}", idp.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unsolicited = hidden(&page, "SAMLResponse").unwrap_or_else(|| panic!("{page}"));
    assert!(!decode(&unsolicited).contains("InResponseTo"));
    let b2 = browser();
    let r = post(&b2, &h, &unsolicited, "https://evil.example/").await;
    assert_eq!(page_code(r).await.1, "saml.relaystate_not_allowed");
    let r = post_and_continue(&b2, &h, &unsolicited, APP).await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let r = post(&browser(), &h, &unsolicited, APP).await;
    assert_eq!(page_code(r).await.1, "saml.replay");
}
