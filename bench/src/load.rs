//! Fixed-endpoint loads: C workers send the same request back to back for a fixed
//! duration (after a short warm-up that is not counted). Bounded in time and in count.

use crate::App;
use crate::procs::Env;
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
    /// CPU microseconds per request (warm-up included on both sides of the division) of the
    /// processes that did work: the server, Redis, PostgreSQL, this generator.
    pub cpu_us_per_req: Vec<(String, f64)>,
}

/// One prepared request: the bytes sent on every iteration, and what an answer must hold.
#[derive(Clone)]
struct Req {
    /// `host:port` to connect to.
    addr: String,
    /// The whole HTTP/1.1 request, built once.
    bytes: Vec<u8>,
    /// Introspection: the body must say `"active":true`.
    expect_active: bool,
}

impl Req {
    fn get(url: &str, bearer: Option<&str>) -> Result<Self, String> {
        let (addr, path) = split_url(url)?;
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n");
        if let Some(b) = bearer {
            head.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        head.push_str("\r\n");
        Ok(Self {
            addr,
            bytes: head.into_bytes(),
            expect_active: false,
        })
    }

    fn introspect(url: &str, client_id: &str, secret: &str, token: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let (addr, path) = split_url(url)?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(secret)
        ));
        let body = format!("token={}", form_encode(token));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Ok(Self {
            addr,
            bytes: head.into_bytes(),
            expect_active: true,
        })
    }
}

/// `http://host:port/path` -> (`host:port`, `/path`). Only plain-HTTP loopback URLs are
/// loaded here.
fn split_url(url: &str) -> Result<(String, String), String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!("{url}: only http:// is loaded"));
    }
    let host = u.host_str().ok_or_else(|| format!("{url}: no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok((format!("{host}:{port}"), path))
}

/// application/x-www-form-urlencoded (RFC 6749 appendix B for Basic credentials too).
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A keep-alive HTTP/1.1 connection that sends prepared bytes and reads one response at a
/// time: the status, `Content-Length` or chunked framing, the body. Kept minimal so that
/// the generator costs a few microseconds per request and the CPU goes to the server.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// A parsed response: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

impl Conn {
    async fn open(addr: &str) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    async fn fill(&mut self) -> Result<(), String> {
        use tokio::io::AsyncReadExt as _;
        if self.buf.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn exchange(&mut self, req: &[u8]) -> Result<Answer, String> {
        use tokio::io::AsyncWriteExt as _;
        self.stream
            .write_all(req)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "malformed status line".to_owned())?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
        let body = if chunked {
            // Read to the terminating zero-length chunk, then de-chunk.
            while find(&self.buf[head_end..], b"\r\n0\r\n\r\n").is_none()
                && !self.buf[head_end..].starts_with(b"0\r\n\r\n")
            {
                self.fill().await?;
            }
            dechunk(&self.buf[head_end..])?
        } else {
            let len = length.ok_or_else(|| "response without Content-Length".to_owned())?;
            while self.buf.len() < head_end + len {
                self.fill().await?;
            }
            self.buf[head_end..head_end + len].to_vec()
        };
        Ok(Answer {
            status,
            body,
            close,
        })
    }
}

/// Bound on one response (the largest loaded here, discovery, is a few kB).
const MAX_RESPONSE: usize = 1 << 20;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let i = find(b, b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|_| "bad chunk size")?;
        b = &b[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("short chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// One request on `conn` (opened or re-opened as needed); `Ok` for a 2xx that holds what
/// the request expects.
async fn once(conn: &mut Option<Conn>, req: &Req) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(Conn::open(&req.addr).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let answer = match c.exchange(&req.bytes).await {
        Ok(a) => a,
        Err(e) => {
            *conn = None;
            return Err(e);
        }
    };
    if answer.close {
        *conn = None;
    }
    if !(200..300).contains(&answer.status) {
        return Err(format!("HTTP {}", answer.status));
    }
    if req.expect_active && find(&answer.body, b"\"active\":true").is_none() {
        return Err("token inactive".into());
    }
    Ok(())
}

async fn run(
    env: &Env,
    name: &str,
    req: Result<Req, String>,
    dur: Duration,
    c: usize,
) -> LoadResult {
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            return LoadResult {
                name: name.to_owned(),
                first_error: Some(e),
                ..Default::default()
            };
        }
    };
    eprintln!(
        "load {name}: {c} connections, {:.1} s ...",
        dur.as_secs_f64()
    );
    let cpu_before = env.cpu_snapshot();
    let start = Instant::now();
    let count_from = start + WARMUP;
    let end = count_from + dur;
    // One current-thread runtime per core, each driving its share of the connections: no
    // work stealing or cross-thread wake-ups in the generator (about a third cheaper per
    // request than the shared multi-thread runtime).
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .clamp(1, c);
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = c / threads + usize::from(t < c % threads);
        let req = req.clone();
        handles.push(std::thread::spawn(move || {
            generator_thread(req, share, count_from, end)
        }));
    }
    let joined = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut sent = 0usize;
    for w in joined {
        lat.extend(w.lat);
        errors += w.errors;
        sent += w.sent;
        if first_error.is_none() {
            first_error = w.first_error;
        }
    }
    let secs = Instant::now()
        .min(end)
        .saturating_duration_since(count_from)
        .as_secs_f64()
        .max(1e-3);
    let ok = lat.len();
    let us_per_tick = 1e6 / env.clk_tck.max(1) as f64;
    let cpu_us_per_req = env
        .cpu_since(&cpu_before)
        .into_iter()
        .filter(|(k, t)| *t > 0 && k != "machine")
        .map(|(k, t)| (k, t as f64 * us_per_tick / sent.max(1) as f64))
        .collect();
    LoadResult {
        cpu_us_per_req,
        name: name.to_owned(),
        ok,
        errors,
        first_error,
        secs,
        rps: ok as f64 / secs,
        latency: summarize(&mut lat),
    }
}

/// What one generator thread (or connection) measured.
#[derive(Default)]
struct Worked {
    lat: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
    sent: usize,
}

/// Runs `conns` connections on a current-thread runtime until `end`.
fn generator_thread(req: Req, conns: usize, count_from: Instant, end: Instant) -> Worked {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Worked {
                errors: 1,
                first_error: Some(format!("runtime: {e}")),
                ..Default::default()
            };
        }
    };
    rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..conns {
            let req = req.clone();
            set.spawn(async move { connection(req, count_from, end).await });
        }
        let mut all = Worked::default();
        while let Some(r) = set.join_next().await {
            if let Ok(w) = r {
                all.lat.extend(w.lat);
                all.errors += w.errors;
                all.sent += w.sent;
                if all.first_error.is_none() {
                    all.first_error = w.first_error;
                }
            }
        }
        all
    })
}

/// One connection sending the request back to back until `end` (bounded in count too).
async fn connection(req: Req, count_from: Instant, end: Instant) -> Worked {
    let mut conn: Option<Conn> = None;
    let mut w = Worked::default();
    for _ in 0..MAX_PER_WORKER {
        let t = Instant::now();
        if t >= end {
            break;
        }
        let r = once(&mut conn, &req).await;
        w.sent += 1;
        if t < count_from {
            continue;
        }
        match r {
            Ok(()) => w.lat.push(micros(t.elapsed())),
            Err(e) => {
                w.errors += 1;
                if w.first_error.is_none() {
                    w.first_error = Some(e);
                }
            }
        }
    }
    w
}

pub async fn run_get(
    env: &Env,
    name: &str,
    url: &str,
    bearer: Option<&str>,
    dur: Duration,
    c: usize,
) -> LoadResult {
    run(env, name, Req::get(url, bearer), dur, c).await
}

pub async fn run_introspect(
    env: &Env,
    hr: &str,
    app: &App,
    token: &str,
    dur: Duration,
    c: usize,
) -> LoadResult {
    run(
        env,
        &format!("introspection ({})", app.alg),
        Req::introspect(
            &format!("{hr}/oauth2/introspect"),
            &app.client_id,
            &app.secret,
            token,
        ),
        dur,
        c,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_a_chunked_body() {
        let body = dechunk(b"4\r\nWiki\r\n6;x=y\r\npedia \r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"Wikipedia ");
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn prepares_an_introspection_request() {
        let r = Req::introspect(
            "http://127.0.0.1:8080/oauth2/introspect",
            "a b",
            "s:t",
            "x+y",
        )
        .unwrap();
        let text = String::from_utf8(r.bytes).unwrap();
        assert_eq!(r.addr, "127.0.0.1:8080");
        assert!(text.starts_with("POST /oauth2/introspect HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.ends_with("\r\n\r\ntoken=x%2By"));
        assert!(text.contains("Content-Length: 11\r\n"));
        assert!(Req::get("https://example.test/", None).is_err());
    }
}
