#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Homeroom toward apps: the OIDC provider endpoints, end to end on a real listener
//! (security.md §1, OP-xx rows).

mod common;
use common::*;
use homeroom_core::RefId;

#[tokio::test]
async fn discovery_and_jwks_describe_the_provider() {
    let h = harness().await;
    let d = json(
        reqwest::get(format!("{}/.well-known/openid-configuration", h.base))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(d["issuer"], h.base);
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    let jwks = json(reqwest::get(d["jwks_uri"].as_str().unwrap()).await.unwrap()).await;
    let kinds: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"RSA") && kinds.contains(&"EC"));
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("d").is_none()),
        "no private parts"
    );
}

#[tokio::test]
async fn full_login_code_tokens_userinfo_introspection_revocation() {
    let h = harness().await;
    let b = browser();
    let (code, verifier) = login(&b, &h, APP, STUDENT).await;
    let r = redeem(&h, APP, Some(APP_SECRET), &code, &verifier).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t = json(r).await;
    let idt = t["id_token"].as_str().unwrap();
    // The ID token verifies under the published JWKS with the right claims.
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{}/oauth2/jwks", h.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(idt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[APP]);
    v.set_issuer(&[h.base.as_str()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(idt, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["email"], STUDENT);
    assert_eq!(claims["azp"], APP);
    assert!(claims["auth_time"].as_i64().is_some() && claims["sid"].as_str().is_some());
    let sub = claims["sub"].as_str().unwrap().to_owned();
    let at = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&at).unwrap().typ.as_deref(),
        Some("at+jwt")
    );
    assert!(
        t["refresh_token"].as_str().is_some(),
        "offline_access gives a refresh token"
    );

    let c = reqwest::Client::new();
    let ui = c
        .get(format!("{}/oauth2/userinfo", h.base))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    let ui = json(ui).await;
    assert_eq!(ui["sub"], sub);
    assert_eq!(ui["email"], STUDENT);
    assert_eq!(ui["name"], "Maya Chen");

    let intro = json(
        c.post(format!("{}/oauth2/introspect", h.base))
            .basic_auth(APP, Some(APP_SECRET))
            .form(&[("token", at.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["client_id"], APP);
    // Every RFC 7662 member Homeroom promises, with the token's own values.
    assert_eq!(intro["sub"], sub);
    assert_eq!(intro["token_type"], "Bearer");
    assert_eq!(intro["iss"], h.base.as_str());
    assert!(
        intro["scope"]
            .as_str()
            .unwrap()
            .split(' ')
            .any(|s| s == "openid")
    );
    assert!(intro["exp"].as_i64().unwrap() > intro["iat"].as_i64().unwrap());
    assert!(!intro["jti"].as_str().unwrap().is_empty());
    assert!(!intro["aud"].is_null());
    // Another client learns nothing about it (OP-13c).
    let other = json(
        c.post(format!("{}/oauth2/introspect", h.base))
            .basic_auth(OTHER, Some(OTHER_SECRET))
            .form(&[("token", at.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(other, serde_json::json!({"active": false}));
    // No client authentication (OP-13b).
    let anon = c
        .post(format!("{}/oauth2/introspect", h.base))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    // Revocation by another client does nothing (OP-13a); by the owner it ends the token.
    let r = c
        .post(format!("{}/oauth2/revoke", h.base))
        .basic_auth(OTHER, Some(OTHER_SECRET))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    c.post(format!("{}/oauth2/revoke", h.base))
        .basic_auth(APP, Some(APP_SECRET))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    let gone = c
        .get(format!("{}/oauth2/userinfo", h.base))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);
    assert!(
        gone.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let intro = json(
        c.post(format!("{}/oauth2/introspect", h.base))
            .basic_auth(APP, Some(APP_SECRET))
            .form(&[("token", at.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(intro["active"], false);
}

#[tokio::test]
async fn unregistered_redirect_uris_and_unknown_clients_never_redirect() {
    let h = harness().await;
    let b = browser();
    let (_, c) = pkce();
    for bad in [
        "https://evil.example/cb",
        "https://app.example.test@evil.example/cb",
        "https://app.example.test.evil.example/cb",
        "https://app.example.test/cb/../admin",
        "https://app.example.test/CB",
        "https://app.example.test/cb?next=https://evil.example",
        "https://app.example.test/cb#x",
        "https://app.example.test:443/cb",
        "https://app.example.test./cb",
    ] {
        let url = authorize_url(&h, APP, Some(&c), &[]).replace(
            &url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>(),
            &url::form_urlencoded::byte_serialize(bad.as_bytes()).collect::<String>(),
        );
        let r = b.get(&url).send().await.unwrap();
        assert!(r.headers().get("location").is_none(), "{bad} redirected");
        let (status, code, reference) = page_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "oauth.redirect_uri_mismatch"),
            "{bad}"
        );
        assert!(reference.starts_with("HR-"));
    }
    let r = b
        .get(authorize_url(&h, "nope", Some(&c), &[]))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("location").is_none());
    assert_eq!(page_code(r).await.1, "oauth.client_unknown");
}

#[tokio::test]
async fn request_errors_go_back_to_the_app_with_state() {
    let h = harness().await;
    let b = browser();
    let (_, c) = pkce();
    let cases: Vec<(String, &str)> = vec![
        (
            authorize_url(&h, APP, Some(&c), &[])
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            authorize_url(&h, APP, Some(&c), &[]).replace("response_type=code&", ""),
            "invalid_request",
        ),
        (
            authorize_url(&h, APP, Some(&c), &[]).replace("scope=openid+", "scope="),
            "invalid_scope",
        ),
        (
            authorize_url(&h, APP, Some(&c), &[("prompt", "none login")]),
            "invalid_request",
        ),
        // PKCE (OP-06): public client without a challenge, plain, method without challenge.
        (authorize_url(&h, PUBLIC, None, &[]), "invalid_request"),
        (
            authorize_url(
                &h,
                PUBLIC,
                None,
                &[("code_challenge", &c), ("code_challenge_method", "plain")],
            ),
            "invalid_request",
        ),
        (
            authorize_url(&h, PUBLIC, None, &[("code_challenge", &c)]),
            "invalid_request",
        ),
    ];
    for (url, err) in cases {
        let r = b.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 302, "{url}");
        let loc = location(&r);
        assert!(loc.starts_with(CB), "{loc}");
        assert_eq!(query_param(&loc, "error").as_deref(), Some(err), "{url}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-123"));
        assert!(query_param(&loc, "code").is_none());
    }
    // Repeated parameters are refused on Homeroom's page before the client is trusted.
    let r = b
        .get(format!(
            "{}&client_id=other",
            authorize_url(&h, APP, Some(&c), &[])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "oauth.invalid_request");
}

#[tokio::test]
async fn pkce_verifier_must_match() {
    let h = harness().await;
    let b = browser();
    let (code, _) = login(&b, &h, PUBLIC, STUDENT).await;
    let (other_verifier, _) = pkce();
    let r = redeem(&h, PUBLIC, None, &code, &other_verifier).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid_grant");
    // Missing verifier.
    let (code, _) = login(&b, &h, PUBLIC, STUDENT).await;
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
            ("client_id", PUBLIC),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["error"], "invalid_grant");
}

#[tokio::test]
async fn replayed_code_revokes_what_the_first_redemption_issued() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let t = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let at = t["access_token"].as_str().unwrap();
    let rt = t["refresh_token"].as_str().unwrap();
    let again = redeem(&h, APP, Some(APP_SECRET), &code, &v).await;
    assert_eq!(again.status(), 400);
    assert_eq!(json(again).await["error"], "invalid_grant");
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(at)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth(APP, Some(APP_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["error"], "invalid_grant");
}

#[tokio::test]
async fn codes_expire_after_sixty_seconds() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    h.clock.advance(61);
    let r = redeem(&h, APP, Some(APP_SECRET), &code, &v).await;
    assert_eq!(json(r).await["error"], "invalid_grant");
}

#[tokio::test]
async fn parallel_redemption_has_exactly_one_winner() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let futs = (0..20).map(|_| redeem(&h, APP, Some(APP_SECRET), &code, &v));
    let results = futures::future::join_all(futs).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn code_bound_to_client_and_redirect_uri() {
    let h = harness().await;
    let b = browser();
    // Minted for the public client, redeemed by a confidential one (OP-10a).
    let (code, v) = login(&b, &h, PUBLIC, STUDENT).await;
    let r = redeem(&h, APP, Some(APP_SECRET), &code, &v).await;
    assert_eq!(json(r).await["error"], "invalid_grant");
    // The code is burned by that attempt.
    let r = redeem(&h, PUBLIC, None, &code, &v).await;
    assert_eq!(json(r).await["error"], "invalid_grant");
    // Another redirect_uri at the token endpoint (OP-10b).
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth(APP, Some(APP_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "https://app.example.test/cb2"),
            ("code_verifier", v.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["error"], "invalid_grant");
}

#[tokio::test]
async fn client_authentication_failures() {
    let h = harness().await;
    let c = reqwest::Client::new();
    let url = format!("{}/oauth2/token", h.base);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "x"),
        ("redirect_uri", CB),
    ];
    let r = c
        .post(&url)
        .basic_auth(APP, Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(json(r).await["error"], "invalid_client");
    // Confidential client without authentication.
    let r = c
        .post(&url)
        .form(&[
            ("client_id", APP),
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Secret in the query string.
    let r = c
        .post(format!("{url}?client_secret={APP_SECRET}"))
        .basic_auth(APP, Some(APP_SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // client_secret_post works.
    let r = c
        .post(&url)
        .form(&[
            ("client_id", APP),
            ("client_secret", APP_SECRET),
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(r).await["error"],
        "invalid_grant",
        "authenticated, then the code is unknown"
    );
}

#[tokio::test]
async fn refresh_rotation_and_reuse_revokes_the_family() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let t = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await;
    let rt0 = t["refresh_token"].as_str().unwrap().to_owned();
    let c = reqwest::Client::new();
    let refresh =
        |rt: String, client: &'static str, secret: &'static str, scope: Option<&'static str>| {
            let c = c.clone();
            let url = format!("{}/oauth2/token", h.base);
            async move {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", rt),
                ];
                if let Some(s) = scope {
                    form.push(("scope", s.to_owned()));
                }
                c.post(url)
                    .basic_auth(client, Some(secret))
                    .form(&form)
                    .send()
                    .await
                    .unwrap()
            }
        };
    // Another client cannot use it (OP-12b), and that does not burn it.
    let r = refresh(rt0.clone(), OTHER, OTHER_SECRET, None).await;
    assert_eq!(json(r).await["error"], "invalid_grant");
    // Scope escalation (OP-12c).
    let r = refresh(
        rt0.clone(),
        APP,
        APP_SECRET,
        Some("openid profile email admin"),
    )
    .await;
    assert_eq!(json(r).await["error"], "invalid_scope");
    let r = refresh(rt0.clone(), APP, APP_SECRET, None).await;
    assert_eq!(r.status(), 200);
    let t1 = json(r).await;
    let rt1 = t1["refresh_token"].as_str().unwrap().to_owned();
    let at1 = t1["access_token"].as_str().unwrap().to_owned();
    assert_ne!(rt0, rt1);
    // Reuse of the rotated token revokes the family: RT1 and its access token die too.
    let r = refresh(rt0, APP, APP_SECRET, None).await;
    assert_eq!(json(r).await["error"], "invalid_grant");
    let r = refresh(rt1, APP, APP_SECRET, None).await;
    assert_eq!(json(r).await["error"], "invalid_grant");
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(at1)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn userinfo_refuses_query_tokens_and_altered_tokens() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let at = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo?access_token={at}", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(format!("{at}x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // An ID token is not an access token.
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let idt = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(idt)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Expired access token.
    h.clock.advance(901);
    assert_eq!(
        c.get(format!("{}/oauth2/userinfo", h.base))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn sso_session_serves_a_second_app_and_prompt_none() {
    let h = harness().await;
    let b = browser();
    // prompt=none without a session (OP-14a).
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    login(&b, &h, APP, STUDENT).await;
    let before = h.idp.requests("/authorize");
    let r = b
        .get(authorize_url(&h, OTHER, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    assert!(query_param(&loc, "code").is_some(), "{loc}");
    assert_eq!(
        h.idp.requests("/authorize"),
        before,
        "no new upstream login"
    );
    // A session of tenant t1 does not sign in to an app of tenant t2 (SES-01).
    let r = b
        .get(authorize_url(&h, "t2-app", Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    // max_age: an old sign-in is not reused silently (OP-14b).
    h.clock.advance(120);
    let r = b
        .get(authorize_url(
            &h,
            APP,
            Some(&c),
            &[("prompt", "none"), ("max_age", "60")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    // Idle timeout (SES-04).
    h.clock.advance(1801);
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
}

#[tokio::test]
async fn es256_clients_get_es256_tokens() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, ES_APP, STUDENT).await;
    let t = json(redeem(&h, ES_APP, Some(APP_SECRET), &code, &v).await).await;
    let header = jsonwebtoken::decode_header(t["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
}

#[tokio::test]
async fn logout_checks_hint_and_post_logout_uri_and_needs_confirmation_without_hint() {
    let h = harness().await;
    let b = browser();
    let (code, v) = login(&b, &h, APP, STUDENT).await;
    let idt = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let logout = |q: String| format!("{}/oauth2/logout?{q}", h.base);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    // Unregistered and altered post-logout URIs (OP-15).
    for bad in ["https://evil.example/", "https://app.example.test/bye?x=1"] {
        let r = b
            .get(logout(format!(
                "id_token_hint={}&post_logout_redirect_uri={}",
                idt,
                enc(bad)
            )))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("location").is_none());
        assert_eq!(page_code(r).await.1, "oauth.post_logout_redirect_invalid");
    }
    // A modified hint.
    let mut parts: Vec<String> = idt.split('.').map(str::to_owned).collect();
    parts[1].insert(5, 'A');
    let r = b
        .get(logout(format!("id_token_hint={}", parts.join("."))))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "oauth.id_token_hint_invalid");
    // No hint: a confirmation page, and the session survives the bare GET.
    let r = b.get(logout(String::new())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("name=\"csrf\""));
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(
        query_param(&location(&r), "code").is_some(),
        "still signed in"
    );
    // A real browser's confirmation POST (Origin: null from our no-referrer page, but
    // same-origin per Sec-Fetch-Site) is accepted; Origin: null from elsewhere is not.
    let r = b.get(logout(String::new())).send().await.unwrap();
    let page = r.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let r = b
        .post(format!("{}/oauth2/logout", h.base))
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "session.csrf");
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(
        query_param(&location(&r), "code").is_some(),
        "still signed in after the refused POST"
    );
    // POST without the CSRF token is refused.
    let r = b
        .post(format!("{}/oauth2/logout", h.base))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "session.csrf");
    // With a valid hint and registered URI: signed out, redirected with state.
    let r = b
        .get(logout(format!(
            "id_token_hint={}&post_logout_redirect_uri={}&state=bye1",
            idt,
            enc("https://app.example.test/bye")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "https://app.example.test/bye?state=bye1");
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
}

#[tokio::test]
async fn every_refusal_is_traceable_by_reference() {
    let h = harness().await;
    let b = browser();
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[]).replace("redirect_uri=", "redirect_uri=x"))
        .send()
        .await
        .unwrap();
    let (_, code, reference) = page_code(r).await;
    assert_eq!(code, "oauth.redirect_uri_mismatch");
    h.state.audit.flush().await;
    let events = h
        .state
        .directory
        .audit_for_ref(&RefId::new(reference))
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.kind == "login.refused"
            && e.code.as_deref() == Some("oauth.redirect_uri_mismatch"))
    );
}

#[tokio::test]
async fn a_cached_token_still_expires_and_is_still_revocable() {
    let h = harness().await;
    let b = browser();
    let c = reqwest::Client::new();
    for revoke in [false, true] {
        let (code, v) = login(&b, &h, APP, STUDENT).await;
        let at = json(redeem(&h, APP, Some(APP_SECRET), &code, &v).await).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        // Verified once (and cached) ...
        assert_eq!(
            c.get(format!("{}/oauth2/userinfo", h.base))
                .bearer_auth(&at)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            c.get(format!("{}/oauth2/userinfo", h.base))
                .bearer_auth(&at)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        if revoke {
            c.post(format!("{}/oauth2/revoke", h.base))
                .basic_auth(APP, Some(APP_SECRET))
                .form(&[("token", at.as_str())])
                .send()
                .await
                .unwrap();
        } else {
            h.clock.advance(901);
        }
        // ... and still refused the moment it expires or is revoked.
        assert_eq!(
            c.get(format!("{}/oauth2/userinfo", h.base))
                .bearer_auth(&at)
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "revoke={revoke}"
        );
    }
}

#[tokio::test]
async fn a_browser_logout_confirmation_with_origin_null_signs_out() {
    let h = harness().await;
    let b = browser();
    login(&b, &h, APP, STUDENT).await;
    let page = b
        .get(format!("{}/oauth2/logout", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let r = b
        .post(format!("{}/oauth2/logout", h.base))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed-out page");
    let (_, c) = pkce();
    let r = b
        .get(authorize_url(&h, APP, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
}
