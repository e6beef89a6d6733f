//! One student's full sign-in, and the surge of N of them at a fixed concurrency.
//!
//! A student is a browser with its own cookie jar ([`Jar`]); all students share one HTTP
//! client so connections are reused (as a school's NAT and a browser's keep-alive would),
//! which keeps the load generator cheap. Redirects are followed by hand so each hop is
//! timed and checked.

use crate::stats::{Summary, micros, summarize};
use crate::{APP_REDIRECT, App, Args, DOMAIN};
use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Per-request timeout: a stuck request is an error, never a hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirect hops before the app's redirect URI is reached (authorize -> upstream -> callback -> app).
const MAX_HOPS: usize = 8;

pub fn client(pool: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

pub struct Ctx {
    pub http: reqwest::Client,
    pub hr: String,
    pub sandbox: String,
}

/// A tiny cookie jar for Homeroom's origin: name=value pairs, deletions honoured.
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String)>,
}

impl Jar {
    fn absorb(&mut self, headers: &reqwest::header::HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            let mut parts = s.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let expired = parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("max-age=-")
            });
            self.cookies.retain(|(n, _)| n != name);
            if !expired && !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

pub fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // Uniqueness is all the flow needs; fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf = t.to_le_bytes().to_vec();
    }
    URL_SAFE_NO_PAD.encode(buf)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Steps of one login, timed separately.
pub const STEPS: [&str; 5] = ["authorize", "upstream", "callback", "token", "userinfo"];

struct Login {
    total: Duration,
    steps: [Duration; 5],
    access_token: String,
}

fn jwt_part(token: &str, i: usize) -> Option<serde_json::Value> {
    let part = token.split('.').nth(i)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

async fn login(ctx: &Ctx, app: &App, student: usize) -> Result<Login, String> {
    let t0 = Instant::now();
    let state = random_b64(16);
    let nonce = random_b64(16);
    let verifier = random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut next = format!(
        "{}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile%20email&state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256&login_hint={}",
        ctx.hr,
        enc(&app.client_id),
        enc(APP_REDIRECT),
        enc(&format!("student{student}@{DOMAIN}"))
    );
    let mut jar = Jar::default();
    let mut steps = [Duration::ZERO; 5];
    let mut landed = None;
    for _ in 0..MAX_HOPS {
        let to_hr = next.starts_with(&ctx.hr);
        let step = if !to_hr {
            1
        } else if next.contains("/callback/") {
            2
        } else {
            0
        };
        let mut req = ctx.http.get(&next);
        if to_hr && let Some(c) = jar.header() {
            req = req.header(COOKIE, c);
        }
        let th = Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{}: {}", STEPS[step], kind_of(&e)))?;
        let status = resp.status();
        if to_hr {
            jar.absorb(resp.headers());
        }
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reference = resp
            .headers()
            .get("x-homeroom-ref")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let _ = resp.bytes().await;
        steps[step] += th.elapsed();
        let Some(loc) = loc.filter(|_| status.is_redirection()) else {
            return Err(format!(
                "{}: HTTP {}{}",
                STEPS[step],
                status.as_u16(),
                reference.map(|r| format!(" (ref {r})")).unwrap_or_default()
            ));
        };
        let abs = url::Url::parse(&next)
            .and_then(|base| base.join(&loc))
            .map_err(|_| format!("{}: bad Location", STEPS[step]))?;
        if abs.as_str().starts_with(APP_REDIRECT) {
            landed = Some(abs);
            break;
        }
        if !(abs.as_str().starts_with(&ctx.hr) || abs.as_str().starts_with(&ctx.sandbox)) {
            return Err(format!("{}: redirect off loopback targets", STEPS[step]));
        }
        next = abs.into();
    }
    let Some(landed) = landed else {
        return Err("redirect loop: app never reached".into());
    };
    let q: BTreeMap<String, String> = landed.query_pairs().into_owned().collect();
    if let Some(e) = q.get("error") {
        return Err(format!("callback: error={e}"));
    }
    if q.get("state") != Some(&state) {
        return Err("callback: state mismatch".into());
    }
    if q.get("iss") != Some(&ctx.hr) {
        return Err("callback: iss mismatch".into());
    }
    let Some(code) = q.get("code") else {
        return Err("callback: no code".into());
    };

    let th = Instant::now();
    let resp = ctx
        .http
        .post(format!("{}/oauth2/token", ctx.hr))
        .basic_auth(&app.client_id, Some(&app.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .map_err(|e| format!("token: {}", kind_of(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("token: {}", kind_of(&e)))?;
    steps[3] = th.elapsed();
    if !status.is_success() {
        return Err(format!("token: HTTP {}", status.as_u16()));
    }
    let tr: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| "token: not JSON".to_owned())?;
    let (Some(at), Some(idt)) = (tr["access_token"].as_str(), tr["id_token"].as_str()) else {
        return Err("token: no access_token/id_token".into());
    };
    // Claims checks only (the generator does not verify signatures, to stay cheap).
    let h = jwt_part(idt, 0).ok_or("id_token: bad header")?;
    let c = jwt_part(idt, 1).ok_or("id_token: bad payload")?;
    if h["alg"] != app.alg {
        return Err(format!("id_token: alg {} (expected {})", h["alg"], app.alg));
    }
    let aud_ok = c["aud"].as_str() == Some(app.client_id.as_str())
        || c["aud"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(app.client_id.as_str())));
    if c["nonce"].as_str() != Some(nonce.as_str())
        || !aud_ok
        || c["iss"].as_str() != Some(ctx.hr.as_str())
    {
        return Err("id_token: nonce/aud/iss mismatch".into());
    }

    let th = Instant::now();
    let resp = ctx
        .http
        .get(format!("{}/oauth2/userinfo", ctx.hr))
        .bearer_auth(at)
        .send()
        .await
        .map_err(|e| format!("userinfo: {}", kind_of(&e)))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("userinfo: {}", kind_of(&e)))?;
    steps[4] = th.elapsed();
    if !status.is_success() {
        return Err(format!("userinfo: HTTP {}", status.as_u16()));
    }
    let ui: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| "userinfo: not JSON".to_owned())?;
    if ui["sub"].as_str().is_none_or(str::is_empty) || ui["sub"] != c["sub"] {
        return Err("userinfo: sub missing or not the ID token's".into());
    }
    Ok(Login {
        total: t0.elapsed(),
        steps,
        access_token: at.to_owned(),
    })
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request error"
    }
}

/// Everything measured in one surge.
#[derive(Debug, Default)]
pub struct SurgeResult {
    pub alg: String,
    pub students: usize,
    pub concurrency: usize,
    pub ok: usize,
    pub errors: usize,
    pub error_kinds: BTreeMap<String, usize>,
    pub wall: Duration,
    pub logins_per_sec: f64,
    pub latency: Summary,
    pub steps: Vec<(String, Summary)>,
    pub rss_peak_kb: u64,
    pub hwm_kb: u64,
    pub rss_before_kb: u64,
    /// CPU milliseconds per successful login: homeroom, sandbox, bench, redis, whole machine.
    pub cpu_ms_per_login: Vec<(String, f64)>,
    pub machine_busy_pct: f64,
    pub redis: crate::procs::RedisFigures,
    pub sample_token: Option<String>,
}

pub async fn surge(
    ctx: Arc<Ctx>,
    env: &crate::procs::Env,
    app: &App,
    first_student: usize,
    args: &Args,
) -> Result<SurgeResult> {
    let n = args.students;
    let redis_before = env.redis_snapshot().await;
    let cpu_before = env.cpu_snapshot();
    let rss_before = crate::status_kb(env.homeroom_pid, "VmRSS:").unwrap_or(0);
    let sampler = env.rss_sampler();
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_surge_secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.min(n) {
        let ctx = ctx.clone();
        let next = next.clone();
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut steps: [Vec<u32>; 5] = Default::default();
            let mut errs: BTreeMap<String, usize> = BTreeMap::new();
            let mut token = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    break;
                }
                match login(&ctx, &app, first_student + i).await {
                    Ok(l) => {
                        lat.push(micros(l.total));
                        for (k, d) in l.steps.iter().enumerate() {
                            steps[k].push(micros(*d));
                        }
                        if token.is_none() {
                            token = Some(l.access_token);
                        }
                    }
                    Err(e) => *errs.entry(e).or_default() += 1,
                }
            }
            (lat, steps, errs, token)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut steps: [Vec<u32>; 5] = Default::default();
    let mut error_kinds = BTreeMap::new();
    let mut sample_token = None;
    for t in tasks {
        let (l, s, e, tok) = t.await?;
        lat.extend(l);
        for (k, v) in s.into_iter().enumerate() {
            steps[k].extend(v);
        }
        for (k, v) in e {
            *error_kinds.entry(k).or_default() += v;
        }
        if sample_token.is_none() {
            sample_token = tok;
        }
    }
    let wall = t0.elapsed();
    let rss_peak_kb = sampler.stop().await;
    let cpu = env.cpu_since(&cpu_before);
    let redis_after = env.redis_snapshot().await;
    let ok = lat.len();
    let errors: usize = error_kinds.values().sum();
    let not_started = n - ok - errors;
    if not_started > 0 {
        error_kinds.insert(
            format!(
                "not started: --max-surge-secs {} reached",
                args.max_surge_secs
            ),
            not_started,
        );
    }
    let per = |ticks: u64| {
        if ok == 0 {
            0.0
        } else {
            ticks as f64 * 1000.0 / env.clk_tck as f64 / ok as f64
        }
    };
    let cpu_ms_per_login = cpu.iter().map(|(k, t)| (k.clone(), per(*t))).collect();
    let redis = env.redis_figures(&redis_before, &redis_after, ok).await;
    Ok(SurgeResult {
        alg: app.alg.to_owned(),
        students: n,
        concurrency: args.concurrency,
        ok,
        errors: errors + not_started,
        error_kinds,
        wall,
        logins_per_sec: ok as f64 / wall.as_secs_f64(),
        latency: summarize(&mut lat),
        steps: STEPS
            .iter()
            .zip(steps.iter_mut())
            .map(|(name, v)| ((*name).to_owned(), summarize(v)))
            .collect(),
        rss_peak_kb,
        hwm_kb: crate::status_kb(env.homeroom_pid, "VmHWM:").unwrap_or(0),
        rss_before_kb: rss_before,
        cpu_ms_per_login,
        machine_busy_pct: env.machine_busy_pct_since(&cpu_before),
        redis,
        sample_token,
    })
}
