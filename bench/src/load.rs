//! Fixed-endpoint loads: C workers send the same request back to back for a fixed
//! duration (after a short warm-up that is not counted). Bounded in time and in count.

use crate::App;
use crate::stats::{Summary, micros, summarize};
use std::time::{Duration, Instant};

/// Warm-up before counting (connections opened, caches filled).
const WARMUP: Duration = Duration::from_millis(500);
/// Upper bound on requests per worker per load, whatever the duration.
const MAX_PER_WORKER: usize = 5_000_000;

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub name: String,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub secs: f64,
    pub rps: f64,
    pub latency: Summary,
}

#[derive(Clone)]
enum Req {
    Get {
        url: String,
        bearer: Option<String>,
    },
    Introspect {
        url: String,
        client_id: String,
        secret: String,
        token: String,
    },
}

impl Req {
    async fn once(&self, http: &reqwest::Client) -> Result<(), String> {
        let resp = match self {
            Req::Get { url, bearer } => {
                let mut r = http.get(url);
                if let Some(b) = bearer {
                    r = r.bearer_auth(b);
                }
                r.send().await
            }
            Req::Introspect {
                url,
                client_id,
                secret,
                token,
            } => {
                http.post(url)
                    .basic_auth(client_id, Some(secret))
                    .form(&[("token", token.as_str())])
                    .send()
                    .await
            }
        }
        .map_err(|e| format!("{e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("{e}"))?;
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        if matches!(self, Req::Introspect { .. })
            && !body.windows(13).any(|w| w == b"\"active\":true")
        {
            return Err("token inactive".into());
        }
        Ok(())
    }
}

async fn run(http: &reqwest::Client, name: &str, req: Req, dur: Duration, c: usize) -> LoadResult {
    eprintln!(
        "load {name}: {c} connections, {:.1} s ...",
        dur.as_secs_f64()
    );
    let start = Instant::now();
    let count_from = start + WARMUP;
    let end = count_from + dur;
    let mut tasks = Vec::new();
    for _ in 0..c {
        let http = http.clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            for _ in 0..MAX_PER_WORKER {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let r = req.once(&http).await;
                if t < count_from {
                    continue;
                }
                match r {
                    Ok(()) => lat.push(micros(t.elapsed())),
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(e);
                        }
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        if let Ok((l, e, f)) = t.await {
            lat.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
    }
    let secs = Instant::now()
        .min(end)
        .saturating_duration_since(count_from)
        .as_secs_f64()
        .max(1e-3);
    let ok = lat.len();
    LoadResult {
        name: name.to_owned(),
        ok,
        errors,
        first_error,
        secs,
        rps: ok as f64 / secs,
        latency: summarize(&mut lat),
    }
}

pub async fn run_get(
    http: &reqwest::Client,
    name: &str,
    url: &str,
    bearer: Option<&str>,
    dur: Duration,
    c: usize,
) -> LoadResult {
    run(
        http,
        name,
        Req::Get {
            url: url.to_owned(),
            bearer: bearer.map(str::to_owned),
        },
        dur,
        c,
    )
    .await
}

pub async fn run_introspect(
    http: &reqwest::Client,
    hr: &str,
    app: &App,
    token: &str,
    dur: Duration,
    c: usize,
) -> LoadResult {
    run(
        http,
        &format!("introspection ({})", app.alg),
        Req::Introspect {
            url: format!("{hr}/oauth2/introspect"),
            client_id: app.client_id.clone(),
            secret: app.secret.clone(),
            token: token.to_owned(),
        },
        dur,
        c,
    )
    .await
}
