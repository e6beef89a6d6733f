//! A local read cache for records that are written once and only ever deleted (token
//! families), kept coherent across instances by deletion announcements on a Redis channel.
//!
//! Why: introspection, userinfo and every refresh look up the token family, which is what
//! makes a revocation take effect. Without a cache each lookup is a Redis round trip; with
//! it, a repeated lookup is a map read plus one non-blocking `recv` on the feed socket.
//!
//! How it stays correct:
//! - A deletion goes through [`crate::KvBackend::delete_announced`]: on Redis one script
//!   deletes the key and `PUBLISH`es it, atomically, then a `PING` round trip. Redis writes
//!   its pending output at the end of each event-loop turn, so when the `PING` is answered
//!   the announcement has been written to every subscriber's socket.
//! - Before answering from the cache, [`Coherent::get`] drains the feed socket without
//!   waiting (a real `recv`, not tokio's cached readiness), so an announcement that reached
//!   this host before the request is honoured by the request.
//! - The cache is used only while the subscription is up. When the feed connection drops
//!   (or cannot be made) every entry is discarded and reads go to Redis until a new
//!   subscription is confirmed; announcements missed meanwhile cannot leave a stale entry.
//! - A read that raced with a deletion or a reconnection is not cached (a version counter
//!   taken before the read must be unchanged when the value is stored).
//! - Entries live at most [`MAX_AGE`] whatever happens, bounding any staleness from a
//!   deletion that bypassed the announcement (a manual `DEL`, an older Homeroom).
//!
//! The feed speaks RESP2 on its own plain TCP connection (`AUTH` when the URL has a
//! password, `CLIENT SETNAME`, `SUBSCRIBE`); only the frames a subscribed connection can
//! receive are parsed ([`parse_frame`]).

use crate::{SharedStamp as Stamp, SharedValue as Value};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

/// The longest an entry is served, whatever the feed says.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Entries kept at most (a family is a few hundred bytes).
const CAPACITY: usize = 50_000;
/// How often the feed task wakes without traffic (expired entries are swept then).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Wait between failed feed connection attempts.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Time allowed to connect and subscribe.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest bulk string or array accepted from the feed (announcements are short keys).
const MAX_BULK: usize = 64 * 1024;
const MAX_ARRAY: usize = 16;

/// Where and how the feed connects.
#[derive(Clone)]
pub(crate) struct FeedTarget {
    pub addr: (String, u16),
    pub username: Option<String>,
    pub password: Option<String>,
    /// The channel announcements are published on (prefix and database in its name).
    pub channel: String,
    /// `CLIENT SETNAME` of the feed connection (unique per process and backend).
    pub client_name: String,
}

struct Entry {
    value: Value,
    at: Instant,
}

struct Map {
    entries: HashMap<String, Entry>,
    /// Bumped on every deletion seen and on every feed up/down transition.
    version: u64,
}

/// The subscribed socket and the bytes read from it that do not yet form a frame.
struct Link {
    sock: Arc<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

struct Inner {
    map: Mutex<Map>,
    live: AtomicBool,
    link: Mutex<Option<Link>>,
}

/// The cache and its feed; shared by the clones of one Redis backend.
pub(crate) struct Coherent {
    inner: Arc<Inner>,
    client_name: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Coherent {
    /// Starts the feed task on the current tokio runtime. The cache serves nothing until
    /// the subscription is confirmed.
    pub fn start(target: FeedTarget) -> Self {
        let inner = Arc::new(Inner {
            map: Mutex::new(Map {
                entries: HashMap::new(),
                version: 0,
            }),
            live: AtomicBool::new(false),
            link: Mutex::new(None),
        });
        let client_name = target.client_name.clone();
        tokio::spawn(feed(Arc::downgrade(&inner), target));
        Self { inner, client_name }
    }

    /// The feed connection's `CLIENT SETNAME`.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// Whether the subscription is up (the cache is in use).
    pub fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::Acquire)
    }

    /// The cached value of `key`, after taking in every announcement that has reached the
    /// socket. `None`: not cached, too old, or the feed is down.
    pub fn get(&self, key: &str) -> Option<Value> {
        if !self.is_live() {
            return None;
        }
        self.inner.drain();
        let map = lock(&self.inner.map);
        if !self.is_live() {
            return None;
        }
        map.entries
            .get(key)
            .filter(|e| e.at.elapsed() < MAX_AGE)
            .map(|e| e.value.clone())
    }

    /// Taken before reading `key` from Redis; the value read may be cached only if nothing
    /// was deleted and the feed did not bounce in between.
    pub fn stamp(&self) -> Stamp {
        if !self.is_live() {
            return Stamp(None);
        }
        Stamp(Some(lock(&self.inner.map).version))
    }

    /// Caches `value` read from Redis after `stamp` was taken (see [`Coherent::stamp`]).
    pub fn insert(&self, key: &str, value: Value, stamp: Stamp) {
        let Stamp(Some(version)) = stamp else {
            return;
        };
        let mut map = lock(&self.inner.map);
        if map.version != version || !self.is_live() {
            return;
        }
        if map.entries.len() >= CAPACITY {
            map.entries.retain(|_, e| e.at.elapsed() < MAX_AGE);
            if map.entries.len() >= CAPACITY {
                return;
            }
        }
        map.entries.insert(
            key.to_owned(),
            Entry {
                value,
                at: Instant::now(),
            },
        );
    }

    /// Forgets `key` here at once (this instance deleted it; the others hear it from the feed).
    pub fn forget(&self, key: &str) {
        self.inner.forget(key);
    }

    /// Entries currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner.map).entries.len()
    }
}

impl Inner {
    fn forget(&self, key: &str) {
        let mut map = lock(&self.map);
        map.entries.remove(key);
        map.version = map.version.wrapping_add(1);
    }

    /// The feed is up: start from an empty cache.
    fn up(&self, link: Link) {
        let mut slot = lock(&self.link);
        self.reset();
        *slot = Some(link);
        self.live.store(true, Ordering::Release);
    }

    /// Empties the cache and bumps the version (reads begun before must not be kept).
    fn reset(&self) {
        let mut map = lock(&self.map);
        map.entries.clear();
        map.version = map.version.wrapping_add(1);
    }

    /// The feed is down: nothing cached may be trusted any more.
    fn down(&self, slot: &mut Option<Link>) {
        self.live.store(false, Ordering::Release);
        *slot = None;
        self.reset();
    }

    fn sweep(&self) {
        lock(&self.map)
            .entries
            .retain(|_, e| e.at.elapsed() < MAX_AGE);
    }

    /// Reads whatever the socket holds, without waiting, and applies each announcement.
    fn drain(&self) {
        let mut slot = lock(&self.link);
        let Some(link) = slot.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let mut failed = false;
        // A real `recv` (tokio's `try_read` would trust its cached readiness, which lags
        // until the reactor has run).
        let sock = socket2::SockRef::from(link.sock.as_ref());
        let mut reader: &socket2::Socket = &sock;
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => link.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let mut consumed = 0;
        loop {
            match parse_frame(&link.buf[consumed..]) {
                Ok(Some((frame, used))) => {
                    consumed += used;
                    if let Some(key) = announcement(&frame) {
                        self.forget(&key);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        link.buf.drain(..consumed);
        if failed {
            self.down(&mut slot);
        }
    }
}

/// The key of a `message` frame; `None` for anything else (subscribe confirmations).
fn announcement(frame: &Frame) -> Option<String> {
    let Frame::Array(items) = frame else {
        return None;
    };
    match items.as_slice() {
        [Frame::Bulk(kind), _, Frame::Bulk(payload)] if kind.as_slice() == b"message" => {
            String::from_utf8(payload.clone()).ok()
        }
        _ => None,
    }
}

/// The feed task: connect, subscribe, then wait for announcements (draining them into the
/// cache) until the connection fails; then start over. Ends when the backend is dropped.
async fn feed(weak: Weak<Inner>, target: FeedTarget) {
    let mut warned = false;
    loop {
        if weak.strong_count() == 0 {
            return;
        }
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, subscribe(&target)).await {
            Ok(Ok(link)) => {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if warned {
                    tracing::info!(channel = %target.channel, "family cache feed is back");
                    warned = false;
                }
                inner.up(link);
            }
            Ok(Err(e)) => {
                if !warned {
                    tracing::warn!(error = %e, "family cache feed unavailable: reading from Redis");
                    warned = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
            Err(_) => {
                if !warned {
                    tracing::warn!("family cache feed: handshake timed out; reading from Redis");
                    warned = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
        }
        let mut swept = Instant::now();
        loop {
            let sock = {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                // Expired entries go once a second, busy feed or not.
                if swept.elapsed() >= SWEEP_EVERY {
                    inner.sweep();
                    swept = Instant::now();
                }
                let slot = lock(&inner.link);
                match slot.as_ref() {
                    Some(l) => l.sock.clone(),
                    None => break,
                }
            };
            match tokio::time::timeout(SWEEP_EVERY, sock.readable()).await {
                Ok(Ok(())) => {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    // Drained with raw reads, then reported as "would block" so that tokio
                    // clears the readiness it saw (not any that arrived since).
                    let _ = sock.try_io(Interest::READABLE, || {
                        inner.drain();
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
                Ok(Err(_)) => {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let mut slot = lock(&inner.link);
                    inner.down(&mut slot);
                }
                // Quiet for a second: loop round to sweep (and to notice a dropped backend).
                Err(_) => {}
            }
        }
        if !warned {
            tracing::warn!("family cache feed lost: reading from Redis until it is back");
            warned = true;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Opens the feed connection: `AUTH` (if any), `CLIENT SETNAME`, `SUBSCRIBE`. Errors never
/// contain the password.
async fn subscribe(t: &FeedTarget) -> Result<Link, String> {
    let mut stream = tokio::net::TcpStream::connect((t.addr.0.as_str(), t.addr.1))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", t.addr.0, t.addr.1))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    if let Some(pw) = &t.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(u) = &t.username {
            args.push(u.as_bytes());
        }
        args.push(pw.as_bytes());
        let reply = request(&mut stream, &mut buf, &args).await?;
        if let Frame::Error(e) = reply {
            return Err(format!("AUTH refused: {}", e.replace(pw.as_str(), "***")));
        }
    }
    let reply = request(
        &mut stream,
        &mut buf,
        &[b"CLIENT", b"SETNAME", t.client_name.as_bytes()],
    )
    .await?;
    if let Frame::Error(e) = reply {
        return Err(format!("CLIENT SETNAME refused: {e}"));
    }
    let reply = request(&mut stream, &mut buf, &[b"SUBSCRIBE", t.channel.as_bytes()]).await?;
    match &reply {
        Frame::Array(items) if matches!(items.first(), Some(Frame::Bulk(k)) if k.as_slice() == b"subscribe") =>
            {}
        other => return Err(format!("SUBSCRIBE answered {other:?}")),
    }
    Ok(Link {
        sock: Arc::new(stream),
        buf,
    })
}

/// Sends one command and reads one reply frame; bytes after it stay in `buf`.
async fn request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    args: &[&[u8]],
) -> Result<Frame, String> {
    stream
        .write_all(&encode(args))
        .await
        .map_err(|e| e.to_string())?;
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((frame, used)) = parse_frame(buf).map_err(|e| e.to_string())? {
            buf.drain(..used);
            return Ok(frame);
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A RESP2 frame, as far as a subscribed connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Frame>),
}

/// A frame that cannot be RESP2 (or exceeds the size limits).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed frame from the Redis feed: {0}")]
pub(crate) struct FrameError(&'static str);

/// Parses one frame from the start of `buf`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((frame, bytes_used)))` otherwise.
pub(crate) fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_BULK {
            return Err(FrameError("line too long"));
        }
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..line_end].split_first() else {
        return Err(FrameError("empty line"));
    };
    let after = line_end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || -> Result<i64, FrameError> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(FrameError("bad number"))
    };
    match kind {
        b'+' => Ok(Some((Frame::Simple(text()), after))),
        b'-' => Ok(Some((Frame::Error(text()), after))),
        b':' => Ok(Some((Frame::Int(number()?), after))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Frame::Nil, after)));
            }
            let len = usize::try_from(len).map_err(|_| FrameError("bad length"))?;
            if len > MAX_BULK {
                return Err(FrameError("bulk string too long"));
            }
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(FrameError("bulk string not terminated"));
            }
            Ok(Some((Frame::Bulk(buf[after..end].to_vec()), end + 2)))
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Frame::Nil, after)));
            }
            let n = usize::try_from(n).map_err(|_| FrameError("bad length"))?;
            if n > MAX_ARRAY {
                return Err(FrameError("array too long"));
            }
            let mut items = Vec::with_capacity(n);
            let mut at = after;
            for _ in 0..n {
                match parse_frame(&buf[at..])? {
                    Some((f, used)) => {
                        items.push(f);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(items), at)))
        }
        _ => Err(FrameError("unknown type byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache whose feed is taken as subscribed, with no socket and no task: the cache's
    /// own rules, apart from Redis.
    fn live_cache() -> Coherent {
        let inner = Arc::new(Inner {
            map: Mutex::new(Map {
                entries: HashMap::new(),
                version: 0,
            }),
            live: AtomicBool::new(true),
            link: Mutex::new(None),
        });
        Coherent {
            inner,
            client_name: "test".into(),
        }
    }

    fn value(s: &str) -> Value {
        Arc::new(s.to_owned())
    }

    #[test]
    fn a_read_that_raced_a_deletion_or_a_reconnect_is_not_kept() {
        let c = live_cache();
        let stamp = c.stamp();
        c.insert("fam:a", value("a"), stamp);
        assert!(c.get("fam:a").is_some());
        // A deletion (of any key) between the stamp and the insert: not kept.
        let stamp = c.stamp();
        c.forget("fam:other");
        c.insert("fam:b", value("b"), stamp);
        assert!(c.get("fam:b").is_none());
        // The feed went down and came back in between: not kept, and the old entry is gone.
        let stamp = c.stamp();
        c.inner.down(&mut lock(&c.inner.link));
        assert!(
            c.get("fam:a").is_none(),
            "nothing is served while the feed is down"
        );
        c.inner.live.store(true, Ordering::Release);
        c.inner.reset();
        c.insert("fam:c", value("c"), stamp);
        assert!(c.get("fam:c").is_none());
        assert!(c.get("fam:a").is_none());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn nothing_is_kept_while_the_feed_is_down() {
        let c = live_cache();
        c.inner.down(&mut lock(&c.inner.link));
        c.insert("fam:a", value("a"), c.stamp());
        assert_eq!(c.len(), 0);
        assert!(c.get("fam:a").is_none());
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity() {
        let c = live_cache();
        for i in 0..CAPACITY + 10 {
            c.insert(&format!("fam:{i}"), value("v"), c.stamp());
        }
        assert_eq!(c.len(), CAPACITY);
        assert!(c.get(&format!("fam:{}", CAPACITY + 5)).is_none());
        assert!(c.get("fam:0").is_some());
    }

    fn message(channel: &str, payload: &str) -> Vec<u8> {
        encode(&[b"message", channel.as_bytes(), payload.as_bytes()])
    }

    #[test]
    fn parses_every_reply_a_subscribed_connection_gets() {
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchan\r\n:1\r\n";
        let (f, used) = parse_frame(confirm).unwrap().unwrap();
        assert_eq!(used, confirm.len());
        assert_eq!(
            f,
            Frame::Array(vec![
                Frame::Bulk(b"subscribe".to_vec()),
                Frame::Bulk(b"chan".to_vec()),
                Frame::Int(1)
            ])
        );
        assert_eq!(announcement(&f), None);
        let m = message("chan", "fam:01J");
        let (f, used) = parse_frame(&m).unwrap().unwrap();
        assert_eq!(used, m.len());
        assert_eq!(announcement(&f).as_deref(), Some("fam:01J"));
        assert_eq!(
            parse_frame(b"+OK\r\n").unwrap(),
            Some((Frame::Simple("OK".into()), 5))
        );
        assert_eq!(
            parse_frame(b"-WRONGPASS no\r\n").unwrap(),
            Some((Frame::Error("WRONGPASS no".into()), 15))
        );
        assert_eq!(parse_frame(b"$-1\r\n").unwrap(), Some((Frame::Nil, 5)));
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let mut two = message("c", "fam:a");
        two.extend(message("c", "fam:bb"));
        let first_len = message("c", "fam:a").len();
        for cut in 0..first_len {
            assert_eq!(parse_frame(&two[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (f, used) = parse_frame(&two).unwrap().unwrap();
        assert_eq!(used, first_len);
        assert_eq!(announcement(&f).as_deref(), Some("fam:a"));
        let (f, _) = parse_frame(&two[used..]).unwrap().unwrap();
        assert_eq!(announcement(&f).as_deref(), Some("fam:bb"));
    }

    #[test]
    fn garbage_and_oversized_frames_are_errors() {
        assert!(parse_frame(b"?what\r\n").is_err());
        assert!(parse_frame(b":x1\r\n").is_err());
        assert!(parse_frame(b"$3\r\nabcd\r\n").is_err());
        assert!(parse_frame(format!("${}\r\n", MAX_BULK + 1).as_bytes()).is_err());
        assert!(parse_frame(format!("*{}\r\n", MAX_ARRAY + 1).as_bytes()).is_err());
        assert!(parse_frame(&vec![b'a'; MAX_BULK + 1]).is_err());
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SUBSCRIBE", b"ch"]),
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n".to_vec()
        );
    }
}
