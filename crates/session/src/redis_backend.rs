//! The Redis backend, for several Homeroom instances sharing one store. It owns one
//! [`ConnectionManager`] (a multiplexed connection that reconnects by itself) and the key
//! prefix; it never holds state of its own, so any number of instances can point at the
//! same Redis and see the same keys.
//!
//! Every operation is one atomic Redis command or one Lua script:
//! `put` = `SET EX`, `put_if_absent` = `SET NX EX`, `take` = `GETDEL` (Redis >= 6.2),
//! `delete` = `DEL`, `incr` = `INCRBY` then `EXPIRE` when the key has no TTL yet (script),
//! `set_add` = `SADD` + `EXPIRE` (script), `set_members` = `SMEMBERS`, `set_remove` = `SREM`, `ping` = `PING`.
//!
//! Errors: connection problems become [`StoreError::Unavailable`] and type mismatches
//! (`WRONGTYPE`, a counter that is not an integer) become [`StoreError::Corrupt`]. The
//! connection URL's password never appears in an error or in `Debug` output.

use crate::coherent::{Coherent, FeedTarget};
use crate::{KvBackend, SharedStamp, SharedValue, StoreError};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use std::sync::Arc;
use std::time::Duration;

/// Time allowed for one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one command's response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection attempts before a command fails with `Unavailable`.
const RECONNECT_RETRIES: usize = 3;

/// GCRA with Redis's own clock on KEYS[1..n] in order (one `TIME`), stopping at the first
/// limited key. Each key holds its theoretical arrival time (ms); ARGV[2i-1], ARGV[2i] are
/// key i's emission interval and tolerance (ms). A single `gcra` is this with one key. Returns
/// {0, 0} when every key allowed, {i, retry_after_ms} for the first limited key i (1-based).
/// One round trip for all of a request's buckets (the keys share no hash slot requirement
/// because Homeroom uses one Redis, not a cluster).
const GCRA_CHAIN_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {i, tat - now - tolerance}
  end
  local new_tat = tat + interval
  redis.call('SET', KEYS[i], new_tat, 'PX', math.max(new_tat - now, 1))
end
return {0, 0}
";

/// `INCRBY`, then `EXPIRE` only when the key carries no TTL (i.e. it was just created):
/// later increments never extend the window. One script, so atomic across instances.
const INCR_SCRIPT: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) == -1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return v
";

/// `SADD` and (re)set the set's TTL in one atomic step.
const SET_ADD_SCRIPT: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
";

/// `PUBLISH` the key's name on the deletion channel and `DEL` the key, atomically (no other
/// command runs in between, and subscribers get the message only after the script). The
/// announcement goes first so that a user denied `PUBLISH` by an ACL has deleted nothing when
/// the script fails (see `delete_announced`).
const DELETE_ANNOUNCED_SCRIPT: &str = r"
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('DEL', KEYS[1])
";

/// A [`KvBackend`] on Redis. Cheap to clone: clones share the multiplexed connection and
/// the local cache of write-once keys with its deletion feed (see `crate::coherent`).
#[derive(Clone)]
pub struct RedisBackend {
    /// The shared multiplexed connection; it reconnects in the background after a failure.
    conn: ConnectionManager,
    /// Prepended to every key (tenant or test isolation). May be empty.
    prefix: String,
    /// The URL with its password replaced by `***`, for `Debug` and errors.
    redacted_url: String,
    /// The password of the URL (if any), scrubbed from error texts.
    password: Option<String>,
    incr_script: Script,
    gcra_chain_script: Script,
    set_add_script: Script,
    delete_announced_script: Script,
    /// The channel deletions are announced on (names the prefix and the database).
    channel: String,
    /// The local read cache of write-once keys; `None` when the URL is not plain TCP.
    coherent: Option<Arc<Coherent>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.redacted_url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisBackend {
    /// Connects to `redis://[user:password@]host:port[/db]` with no key prefix.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_prefix(url, "").await
    }

    /// Connects and prefixes every key with `prefix` (e.g. `"homeroom:"`), so several
    /// deployments or test runs can share one Redis without seeing each other's keys.
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let (redacted_url, password) = redact_url(url);
        let scrub = |msg: String| scrub_secret(msg, password.as_deref());
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::BadUrl(format!("{redacted_url}: {}", scrub(e.to_string()))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot connect to {redacted_url}: {}",
                    scrub(e.to_string())
                ))
            })?;
        let info = client.get_connection_info();
        let settings = info.redis_settings();
        let channel = format!("{prefix}homeroom:deleted:db{}", settings.db());
        let coherent = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Some(Arc::new(Coherent::start(FeedTarget {
                addr: (host.clone(), *port),
                username: settings.username().map(str::to_owned),
                password: settings.password().map(str::to_owned),
                channel: channel.clone(),
                client_name: format!(
                    "homeroom-feed-{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                ),
            }))),
            _ => None,
        };
        let backend = Self {
            conn,
            prefix: prefix.to_owned(),
            redacted_url,
            password,
            incr_script: Script::new(INCR_SCRIPT),
            gcra_chain_script: Script::new(GCRA_CHAIN_SCRIPT),
            set_add_script: Script::new(SET_ADD_SCRIPT),
            delete_announced_script: Script::new(DELETE_ANNOUNCED_SCRIPT),
            channel,
            coherent,
        };
        backend.ping().await?;
        Ok(backend)
    }

    /// The key prefix of this backend.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the local cache of write-once keys is in use (its deletion feed is
    /// subscribed). Reads go to Redis while it is not.
    pub fn cache_is_live(&self) -> bool {
        self.coherent.as_ref().is_some_and(|c| c.is_live())
    }

    /// Waits up to `limit` for the deletion feed to be subscribed; returns whether it is.
    pub async fn wait_for_cache(&self, limit: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + limit;
        while !self.cache_is_live() && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.cache_is_live()
    }

    /// Entries in the local cache of write-once keys.
    pub fn cached_entries(&self) -> usize {
        self.coherent.as_ref().map_or(0, |c| c.len())
    }

    /// The `CLIENT SETNAME` of the deletion-feed connection (as `CLIENT LIST` shows it).
    pub fn feed_client_name(&self) -> Option<&str> {
        self.coherent.as_ref().map(|c| c.client_name())
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn err(&self, e: RedisError) -> StoreError {
        let msg = scrub_secret(e.to_string(), self.password.as_deref());
        match e.kind() {
            ErrorKind::UnexpectedReturnType
            | ErrorKind::Parse
            | ErrorKind::Extension
            | ErrorKind::Server(ServerErrorKind::ResponseError) => StoreError::Corrupt(msg),
            _ => StoreError::Unavailable(format!("{}: {msg}", self.redacted_url)),
        }
    }
}

/// Returns the URL with any password replaced by `***`, and the password itself.
fn redact_url(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_owned(), None);
    };
    let userinfo = &authority[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, password),
        // `redis://secret@host` puts the password in the user part.
        None => ("", userinfo),
    };
    if password.is_empty() {
        return (url.to_owned(), None);
    }
    let redacted = format!("{}://{user}:***@{}", &url[..scheme_end], &rest[at + 1..]);
    (redacted, Some(password.to_owned()))
}

fn scrub_secret(msg: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && msg.contains(s) => msg.replace(s, "***"),
        _ => msg,
    }
}

fn ttl(ttl_secs: u64) -> u64 {
    ttl_secs.max(1)
}

#[async_trait]
impl KvBackend for RedisBackend {
    async fn put(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("EX")
            .arg(ttl(ttl_secs))
            .exec_async(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        // `SET NX` answers OK when it stored, nil when the key existed.
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(ttl(ttl_secs))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("GETDEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed > 0)
    }

    async fn incr(&self, key: &str, by: i64, ttl_secs: u64) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        self.incr_script
            .key(self.key(key))
            .arg(by)
            .arg(ttl(ttl_secs))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn set_add(&self, key: &str, member: &str, ttl_secs: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .set_add_script
            .key(self.key(key))
            .arg(member)
            .arg(ttl(ttl_secs))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SMEMBERS")
            .arg(self.key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = redis::cmd("SREM")
            .arg(self.key(key))
            .arg(member)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(removed > 0)
    }

    async fn gcra(
        &self,
        key: &str,
        interval_ms: u64,
        burst: u64,
    ) -> Result<crate::Gcra, StoreError> {
        let step = crate::GcraStep {
            key: key.to_owned(),
            interval_ms,
            burst,
        };
        Ok(match self.gcra_chain(std::slice::from_ref(&step)).await? {
            None => crate::Gcra::Allowed,
            Some((_, retry_after_ms)) => crate::Gcra::Limited { retry_after_ms },
        })
    }

    async fn gcra_chain(
        &self,
        steps: &[crate::GcraStep],
    ) -> Result<Option<(usize, u64)>, StoreError> {
        if steps.is_empty() {
            return Ok(None);
        }
        let mut inv = self.gcra_chain_script.prepare_invoke();
        for s in steps {
            inv.key(self.key(&s.key))
                .arg(s.interval_ms)
                .arg(s.interval_ms.saturating_mul(s.burst));
        }
        let mut conn = self.conn.clone();
        let (index, retry): (i64, i64) =
            inv.invoke_async(&mut conn).await.map_err(|e| self.err(e))?;
        Ok(usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .map(|i| (i, u64::try_from(retry).unwrap_or(0))))
    }

    async fn delete_announced(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = match self
            .delete_announced_script
            .key(self.key(key))
            .arg(&self.channel)
            .arg(key)
            .invoke_async(&mut conn)
            .await
        {
            Ok(n) => n,
            // Redis refused the script (an ACL without PUBLISH or scripting): the deletion
            // must still happen. No instance can hold a coherent cache then (the feed needs
            // the same channel), except one allowed SUBSCRIBE but not PUBLISH, whose copy
            // lives 5 s at most.
            Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => {
                tracing::warn!(
                    error = %scrub_secret(e.to_string(), self.password.as_deref()),
                    "could not announce a deletion; deleting without announcing"
                );
                return self.delete(key).await;
            }
            Err(e) => return Err(self.err(e)),
        };
        if let Some(c) = &self.coherent {
            c.forget(key);
        }
        // Redis flushes its output buffers at the end of each event-loop turn, this reply
        // possibly before the announcement to the subscribers. A second round trip is served
        // in a later turn, after that flush: once it returns, the announcement sits in every
        // subscriber's socket and the next read there honours it.
        self.ping().await?;
        Ok(removed > 0)
    }

    fn get_shared(&self, key: &str) -> Option<SharedValue> {
        self.coherent.as_ref()?.get(key)
    }

    fn shared_stamp(&self) -> SharedStamp {
        self.coherent
            .as_ref()
            .map_or(SharedStamp(None), |c| c.stamp())
    }

    fn keep_shared(&self, key: &str, value: SharedValue, stamp: SharedStamp) {
        if let Some(c) = &self.coherent {
            c.insert(key, value, stamp);
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            ("redis://127.0.0.1:6379".to_owned(), None)
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            (
                "redis://user:***@host:6379/0".to_owned(),
                Some("s3cret".to_owned())
            )
        );
        assert_eq!(
            redact_url("redis://:pw@host"),
            ("redis://:***@host".to_owned(), Some("pw".to_owned()))
        );
        assert_eq!(
            scrub_secret("bad pw here".into(), Some("pw")),
            "bad *** here"
        );
    }

    #[tokio::test]
    async fn unreachable_redis_is_unavailable_without_the_password() {
        // Port 1 on loopback: nothing listens there.
        let err = RedisBackend::connect("redis://user:hunter2@127.0.0.1:1/0")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
