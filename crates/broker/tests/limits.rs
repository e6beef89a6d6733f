#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Rate limits and challenges: a school behind one trusted address gets in, the same
//! traffic from an untrusted address is challenged; a solved challenge passes, forged or
//! replayed passes do not; hard limits answer 429 with Retry-After; token-endpoint limits
//! are per client.

mod common;
use common::*;
use homeroom_broker::limits::work_bits;

const SCHOOL: &str = "198.51.100.7";
const UNTRUSTED: &str = "203.0.113.9";

fn tune(s: &mut homeroom_broker::Settings) {
    s.trust_forwarded_for = true;
    s.limits
        .trusted_networks
        .push("198.51.100.0/24".parse().unwrap());
    s.limits.challenge_bits = 8;
}

fn from(ip: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", ip.parse().unwrap());
    h.insert("user-agent", "Chromebook test".parse().unwrap());
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(h)
        .build()
        .unwrap()
}

/// Walks one student's sign-in; `Err(status)` when Homeroom stops it.
async fn sign_in(b: &reqwest::Client, h: &Harness, user: &str) -> Result<(), u16> {
    let (_, c) = pkce();
    let mut url = authorize_url(h, APP, Some(&c), &[("login_hint", user)]);
    for _ in 0..8 {
        let r = b.get(&url).send().await.unwrap();
        if !r.status().is_redirection() {
            return Err(r.status().as_u16());
        }
        let loc = location(&r);
        if loc.starts_with(CB) {
            return Ok(());
        }
        url = if loc.starts_with('/') {
            format!("{}{}", h.base, loc)
        } else {
            loc
        };
    }
    Err(0)
}

#[tokio::test]
async fn a_school_behind_one_trusted_address_gets_in_and_an_untrusted_one_is_challenged() {
    school_and_untrusted(
        Opts {
            tune: Some(tune),
            ..Opts::default()
        },
        UNTRUSTED,
    )
    .await;
}

/// The same through Redis, where all of a request's buckets go to the store in one script
/// (`gcra_chain`). Redis keeps its counters between runs, so the untrusted address is a
/// fresh one each time.
#[tokio::test]
async fn the_same_on_redis() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let n = ulid::Ulid::new().0;
    let ip = format!(
        "10.{}.{}.{}",
        (n >> 16) as u8,
        (n >> 8) as u8,
        (n as u8).max(1)
    );
    school_and_untrusted(
        Opts {
            tune: Some(tune),
            sessions: redis,
            ..Opts::default()
        },
        &ip,
    )
    .await;
}

async fn school_and_untrusted(opts: Opts, untrusted: &str) {
    let h = harness_with(opts).await;
    let students: Vec<String> = homeroom_sandbox::demo_district_users()
        .into_iter()
        .map(|u| u.email)
        .collect();
    // 500 sign-ins from one school address (each student its own browser).
    let mut ok = 0;
    for i in 0..500 {
        let b = from(SCHOOL);
        if sign_in(&b, &h, &students[i % students.len()]).await.is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 500, "every student behind the trusted address got in");
    // The same traffic from an untrusted address is challenged well before 500.
    let mut challenged_at = None;
    for i in 0..500 {
        let b = from(untrusted);
        if let Err(status) = sign_in(&b, &h, &students[i % students.len()]).await {
            assert_eq!(status, 429);
            challenged_at = Some(i);
            break;
        }
    }
    let at = challenged_at.expect("an untrusted address is challenged");
    assert!(at < 100, "challenged after {at} sign-ins");
    let text = reqwest::get(format!("{}/metrics", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("action=\"challenge\""),
        "challenges are counted"
    );
}

async fn challenged_page(h: &Harness, b: &reqwest::Client) -> (String, String) {
    let (_, c) = pkce();
    let url = authorize_url(h, APP, Some(&c), &[]);
    for _ in 0..200 {
        let r = b.get(&url).send().await.unwrap();
        if r.status() == 429 {
            let body = r.text().await.unwrap();
            assert!(
                body.contains("/static/challenge.js"),
                "a challenge page, not a block"
            );
            let field = |name: &str| {
                body.split(&format!("name=\"{name}\" value=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .replace("&#38;", "&")
                    .replace("&amp;", "&")
            };
            return (field("challenge"), field("back"));
        }
    }
    panic!("never challenged");
}

fn solve(challenge: &str, bits: u32) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|a| work_bits(challenge, a) >= bits)
        .unwrap()
}

#[tokio::test]
async fn a_solved_challenge_passes_and_forged_or_replayed_passes_do_not() {
    let h = harness_with(Opts {
        tune: Some(tune),
        ..Opts::default()
    })
    .await;
    let b = from(UNTRUSTED);
    let (challenge, back) = challenged_page(&h, &b).await;
    assert!(back.starts_with("/oauth2/authorize?"));
    // A wrong answer is refused.
    let wrong = (0u64..)
        .map(|n| n.to_string())
        .find(|a| work_bits(&challenge, a) < 8)
        .unwrap();
    let r = b
        .post(format!("{}/challenge", h.base))
        .form(&[
            ("challenge", challenge.as_str()),
            ("answer", wrong.as_str()),
            ("back", back.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "limit.challenge_failed");
    // The right answer earns a pass and goes back where the student was going.
    let answer = solve(&challenge, 8);
    let r = b
        .post(format!("{}/challenge", h.base))
        .form(&[
            ("challenge", challenge.as_str()),
            ("answer", answer.as_str()),
            ("back", back.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), back);
    let pass = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("hr_pass="))
        .expect("pass cookie");
    let pass_value = pass
        .trim_start_matches("hr_pass=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = b.get(format!("{}{back}", h.base)).send().await.unwrap();
    assert_ne!(
        r.status(),
        429,
        "the pass lets the browser past the soft limit"
    );
    // The same answer again (replay) is refused.
    let r = b
        .post(format!("{}/challenge", h.base))
        .form(&[
            ("challenge", challenge.as_str()),
            ("answer", answer.as_str()),
            ("back", back.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "limit.challenge_failed");
    // The pass from another network is worthless; so is a forged one.
    let plain = |ip: &str| {
        let mut hm = reqwest::header::HeaderMap::new();
        hm.insert("x-forwarded-for", ip.parse().unwrap());
        hm.insert("user-agent", "Chromebook test".parse().unwrap());
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(hm)
            .build()
            .unwrap()
    };
    let other = plain("203.0.114.9");
    // Exhaust the other network's soft budget first.
    let (_, c) = pkce();
    let url = authorize_url(&h, APP, Some(&c), &[]);
    let mut limited = false;
    for _ in 0..200 {
        if other.get(&url).send().await.unwrap().status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited);
    let r = other
        .get(&url)
        .header("cookie", format!("hr_pass={pass_value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "a pass replayed from another network is refused"
    );
    let (p, sig) = pass_value.split_once('.').unwrap();
    let forged = format!("{}x.{sig}", p);
    let same = plain(UNTRUSTED);
    let r = same
        .get(&url)
        .header("cookie", format!("hr_pass={forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "a forged pass is refused");
    // A challenge answered from another network is refused.
    let (challenge2, back2) = challenged_page(&h, &from(UNTRUSTED)).await;
    let answer2 = solve(&challenge2, 8);
    let r = other
        .post(format!("{}/challenge", h.base))
        .form(&[
            ("challenge", challenge2.as_str()),
            ("answer", answer2.as_str()),
            ("back", back2.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "limit.challenge_failed");
    // Challenges only ever send the browser back to a local path.
    let fresh = from(UNTRUSTED);
    let (challenge3, _) = challenged_page(&h, &fresh).await;
    let answer3 = solve(&challenge3, 8);
    let r = fresh
        .post(format!("{}/challenge", h.base))
        .form(&[
            ("challenge", challenge3.as_str()),
            ("answer", answer3.as_str()),
            ("back", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/");
}

#[tokio::test]
async fn over_the_hard_limit_the_answer_is_429_with_retry_after() {
    let h = harness_with(Opts {
        tune: Some(|s| {
            tune(s);
            s.limits.ip_hard = homeroom_broker::limits::Rate::new(60, 5);
        }),
        ..Opts::default()
    })
    .await;
    let b = from(UNTRUSTED);
    let (_, c) = pkce();
    let url = authorize_url(&h, APP, Some(&c), &[]);
    for _ in 0..6 {
        b.get(&url).send().await.unwrap();
    }
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (_, code, _) = page_code(r).await;
    assert_eq!(code, "limit.too_many_attempts");
    // Listed for IT, and IT can lift it.
    let listed = homeroom_broker::limits::listed(&h.state).await;
    let (_, _, key) = listed
        .iter()
        .find(|(what, _, _)| what == "blocked")
        .expect("blocked key listed")
        .clone();
    assert!(homeroom_broker::limits::lift(&h.state, &key).await);
    assert_ne!(b.get(&url).send().await.unwrap().status(), 429);
}

#[tokio::test]
async fn the_token_endpoint_is_limited_per_client_not_per_address() {
    let h = harness_with(Opts {
        tune: Some(|s| {
            tune(s);
            s.limits.client = homeroom_broker::limits::Rate::new(60, 3);
        }),
        ..Opts::default()
    })
    .await;
    let c = reqwest::Client::new();
    let post = |client: &'static str, secret: &'static str| {
        c.post(format!("{}/oauth2/token", h.base))
            .basic_auth(client, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", CB),
            ])
            .send()
    };
    for _ in 0..4 {
        assert_eq!(post(APP, APP_SECRET).await.unwrap().status(), 400);
    }
    let r = post(APP, "wrong").await.unwrap();
    assert_eq!(
        r.status(),
        429,
        "guessing secrets for a client counts against it"
    );
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        post(OTHER, OTHER_SECRET).await.unwrap().status(),
        400,
        "another client from the same address is unaffected"
    );
}

#[tokio::test]
async fn a_tenant_is_limited_across_every_address_and_other_tenants_are_not() {
    let h = harness_with(Opts {
        tune: Some(|s| {
            tune(s);
            s.limits.tenant = homeroom_broker::limits::Rate::new(60, 3);
        }),
        ..Opts::default()
    })
    .await;
    let (_, c) = pkce();
    let url = authorize_url(&h, APP, Some(&c), &[]);
    // Four trusted addresses of the school, one request each: the tenant's budget (3 + 1).
    for i in 0..4 {
        let r = from(&format!("198.51.100.{}", 10 + i))
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 429, "request {i}");
    }
    // A fifth address (untrusted, never seen before) is refused for the tenant's sake.
    let r = from(UNTRUSTED).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let (_, code, _) = page_code(r).await;
    assert_eq!(code, "limit.too_many_attempts");
    let listed = homeroom_broker::limits::listed(&h.state).await;
    assert!(
        listed.iter().any(|(what, class, key)| what == "blocked"
            && class == "tenant"
            && key == "rl:tenant:t1"),
        "{listed:?}"
    );
    // Another district's app from the same address is unaffected.
    let t2 = authorize_url(&h, "t2-app", Some(&c), &[]);
    assert_ne!(from(UNTRUSTED).get(&t2).send().await.unwrap().status(), 429);
    // IT lifts it.
    assert!(homeroom_broker::limits::lift(&h.state, "rl:tenant:t1").await);
    assert_ne!(
        from(UNTRUSTED).get(&url).send().await.unwrap().status(),
        429
    );
}
