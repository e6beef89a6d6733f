//! The in-process backend: one `HashMap` behind a `std::sync::Mutex`, for a single
//! Homeroom instance (and for tests). It owns every entry and the background task that
//! purges expired ones; it never talks to the network.
//!
//! Expiry: every entry carries an expiry instant. Reads treat an expired entry as absent
//! (and remove it), writes purge the whole map every [`PURGE_EVERY_OPS`] operations, and,
//! when the backend is created inside a Tokio runtime, a background task purges every
//! [`PURGE_INTERVAL`]. The task holds only a `Weak` reference to the shared state and is
//! aborted by [`PurgeTask`]'s `Drop` when the backend goes away, so it never outlives its
//! owner (mini-redis's `DbDropGuard`, simplified).
//!
//! Rate limits ([`KvBackend::gcra`]) use the `governor` crate's generic cell-rate
//! algorithm: one keyed `RateLimiter` per (interval, burst) pair, whose state store is this
//! backend's own map (so a limited key is an ordinary entry: it expires, `delete` lifts it,
//! and the purge sweeps it like any other).
//!
//! Why a `std::sync::Mutex` and not a Tokio one: nothing awaits while the lock is held and
//! every critical section is a hash-map operation, so a blocking lock is cheaper and can
//! never be held across an `.await` (the workspace denies `await_holding_lock`).

use crate::{KvBackend, StoreError};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the background task sweeps expired entries.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Writes between two full sweeps done inline (covers backends created without a runtime,
/// whose background task could not be spawned).
pub const PURGE_EVERY_OPS: u64 = 1024;

/// An in-memory [`KvBackend`]. Cheap to share behind an `Arc`; not `Clone` itself because
/// it owns the purge task (dropping the backend stops it).
pub struct MemoryBackend {
    /// The entries. The background purge task holds a `Weak` to the same `Shared`, so
    /// dropping this `Arc` (the only strong one) frees the map even if the task is mid-sleep.
    shared: Arc<Shared>,
    /// Owner of the background purge task: aborts it on drop. `None` when the backend was
    /// created outside a Tokio runtime (then purging happens inline on writes only).
    _purge: Option<PurgeTask>,
    /// One `governor` limiter per (interval ms, burst) asked for, created on first use.
    limiters: Mutex<HashMap<(u64, u64), Arc<Limiter>>>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

type Limiter = governor::RateLimiter<String, Cells, governor::clock::MonotonicClock>;

/// `governor`'s state store for one limiter: the theoretical arrival time of each key, kept
/// in the backend's map as `"{tat_nanos}@{limiter}"` (nanoseconds since the limiter's start).
/// A cell written by another limiter (the same key with other parameters) counts as absent.
struct Cells {
    shared: Arc<Shared>,
    limiter: u64,
    /// Taken just before the limiter was built: the limiter's own start, to within
    /// nanoseconds; only used to give entries their expiry (garbage collection).
    origin: std::time::Instant,
}

impl governor::state::StateStore for Cells {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<governor::nanos::Nanos>) -> Result<(T, governor::nanos::Nanos), E>,
    {
        let now = Instant::now();
        let mut state = self.shared.lock();
        state.ops_since_purge += 1;
        if state.ops_since_purge >= PURGE_EVERY_OPS {
            state.sweep(now);
        }
        let tat = match state.live(key, now) {
            Some(Entry {
                kind: Kind::Value(v),
                ..
            }) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.split_once('@'))
                .filter(|(_, id)| id.parse::<u64>().ok() == Some(self.limiter))
                .and_then(|(t, _)| t.parse::<u64>().ok())
                .map(governor::nanos::Nanos::from),
            _ => None,
        };
        let (out, new_tat) = f(tat)?;
        let new_tat = u64::from(new_tat);
        // The entry lives until its arrival time has passed (then it equals "absent").
        let due = self.origin + Duration::from_nanos(new_tat);
        let remaining = due.saturating_duration_since(std::time::Instant::now());
        let expires_at = now
            .checked_add(remaining + Duration::from_millis(1))
            .unwrap_or(now);
        state.entries.insert(
            key.clone(),
            Entry {
                kind: Kind::Value(format!("{new_tat}@{}", self.limiter).into_bytes()),
                expires_at,
            },
        );
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Writes since the last full sweep.
    ops_since_purge: u64,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    expires_at: Instant,
}

/// Values and sets are separate kinds of entries, as in Redis: using one as the other is
/// an error (Redis says `WRONGTYPE`), reported as [`StoreError::Corrupt`].
#[derive(Debug)]
enum Kind {
    /// A byte string; counters are byte strings holding a decimal integer (as in Redis,
    /// so `get` of a counter returns its digits).
    Value(Vec<u8>),
    Set(HashSet<String>),
}

/// Drop guard of the purge task: the task is aborted when the backend is dropped.
#[derive(Debug)]
struct PurgeTask(JoinHandle<()>);

impl Drop for PurgeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty store. Inside a Tokio runtime this also spawns the purge task (owned by the
    /// returned value); outside one, expired entries are purged lazily and on writes.
    pub fn new() -> Self {
        let shared = Arc::new(Shared::default());
        let purge = tokio::runtime::Handle::try_current()
            .ok()
            .map(|handle| PurgeTask(handle.spawn(purge_loop(Arc::downgrade(&shared)))));
        Self {
            shared,
            _purge: purge,
            limiters: Mutex::default(),
        }
    }

    /// The limiter for (interval, burst): `burst + 1` cells at once, then one per interval
    /// (governor's `max_burst` counts the first cell; the contract's `burst` does not).
    /// `None` when the interval is zero (no limit).
    fn limiter(&self, interval_ms: u64, burst: u64) -> Option<Arc<Limiter>> {
        let period = Duration::from_millis(interval_ms);
        let interval_ns = u64::try_from(period.as_nanos()).ok().filter(|n| *n > 0)?;
        // Keep interval x burst within governor's u64 nanoseconds.
        let max_burst = (u64::MAX / 4 / interval_ns).min(u64::from(u32::MAX) - 1);
        let cells = u32::try_from(burst.min(max_burst) + 1).unwrap_or(u32::MAX);
        let quota = governor::Quota::with_period(period)?
            .allow_burst(std::num::NonZeroU32::new(cells).unwrap_or(std::num::NonZeroU32::MIN));
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next_id = u64::try_from(map.len()).unwrap_or(u64::MAX);
        let shared = &self.shared;
        Some(
            map.entry((interval_ms, burst))
                .or_insert_with(|| {
                    let cells = Cells {
                        shared: shared.clone(),
                        limiter: next_id,
                        origin: std::time::Instant::now(),
                    };
                    Arc::new(governor::RateLimiter::new(
                        quota,
                        cells,
                        governor::clock::MonotonicClock,
                    ))
                })
                .clone(),
        )
    }

    /// Number of live (unexpired) entries; for tests and metrics.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .entries
            .values()
            .filter(|e| e.expires_at > now)
            .count()
    }

    /// Whether no live entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired entry now. Returns how many were removed.
    pub fn purge_expired(&self) -> usize {
        self.shared.purge(Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Runs `f` on the state after counting one write and sweeping when due.
    fn write<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let now = Instant::now();
        let mut state = self.lock();
        state.ops_since_purge += 1;
        if state.ops_since_purge >= PURGE_EVERY_OPS {
            state.sweep(now);
        }
        f(&mut state, now)
    }
}

impl Shared {
    /// Locks the map. A poisoned lock is recovered: every critical section leaves the map
    /// consistent (single hash-map operations), so a panic elsewhere cannot corrupt it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn purge(&self, now: Instant) -> usize {
        self.lock().sweep(now)
    }
}

impl State {
    fn sweep(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires_at > now);
        self.ops_since_purge = 0;
        before - self.entries.len()
    }

    /// The live entry under `key`, removing it first when it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| e.expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }
}

/// The background sweep. Holds only a `Weak`, so it cannot keep the map alive; it ends by
/// itself when the backend is gone, and is aborted by [`PurgeTask`] anyway.
async fn purge_loop(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick completes immediately
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let removed = shared.purge(Instant::now());
        drop(shared);
        if removed > 0 {
            tracing::trace!(removed, "purged expired session entries");
        }
    }
}

/// Longest TTL honoured (ten years); longer ones are clamped so instants cannot overflow.
const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

fn expiry(now: Instant, ttl_secs: u64) -> Instant {
    let ttl = Duration::from_secs(ttl_secs.clamp(1, MAX_TTL_SECS));
    now.checked_add(ttl).unwrap_or(now)
}

fn wrong_kind(key: &str, wanted: &str) -> StoreError {
    StoreError::Corrupt(format!("key {key:?} does not hold a {wanted}"))
}

#[async_trait]
impl KvBackend for MemoryBackend {
    async fn gcra(
        &self,
        key: &str,
        interval_ms: u64,
        burst: u64,
    ) -> Result<crate::Gcra, StoreError> {
        let Some(limiter) = self.limiter(interval_ms, burst) else {
            return Ok(crate::Gcra::Allowed);
        };
        Ok(match limiter.check_key(&key.to_owned()) {
            Ok(()) => crate::Gcra::Allowed,
            Err(not_until) => {
                use governor::clock::Clock as _;
                let wait = not_until.wait_time_from(governor::clock::MonotonicClock.now());
                crate::Gcra::Limited {
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                }
            }
        })
    }

    async fn put(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        self.write(|state, now| {
            state.entries.insert(
                key.to_owned(),
                Entry {
                    kind: Kind::Value(value.to_vec()),
                    expires_at: expiry(now, ttl_secs),
                },
            );
        });
        Ok(())
    }

    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.write(|state, now| {
            if state.live(key, now).is_some() {
                return false;
            }
            state.entries.insert(
                key.to_owned(),
                Entry {
                    kind: Kind::Value(value.to_vec()),
                    expires_at: expiry(now, ttl_secs),
                },
            );
            true
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.live(key, now) {
            None => Ok(None),
            Some(Entry {
                kind: Kind::Value(v),
                ..
            }) => Ok(Some(v.clone())),
            Some(Entry {
                kind: Kind::Set(_), ..
            }) => Err(wrong_kind(key, "value")),
        }
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.write(|state, now| match state.live(key, now) {
            None => Ok(None),
            Some(Entry {
                kind: Kind::Set(_), ..
            }) => Err(wrong_kind(key, "value")),
            Some(Entry {
                kind: Kind::Value(_),
                ..
            }) => match state.entries.remove(key) {
                Some(Entry {
                    kind: Kind::Value(v),
                    ..
                }) => Ok(Some(v)),
                _ => Ok(None),
            },
        })
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.write(|state, now| {
            state.live(key, now).is_some() && state.entries.remove(key).is_some()
        }))
    }

    async fn incr(&self, key: &str, by: i64, ttl_secs: u64) -> Result<i64, StoreError> {
        self.write(|state, now| match state.live(key, now) {
            None => {
                state.entries.insert(
                    key.to_owned(),
                    Entry {
                        kind: Kind::Value(by.to_string().into_bytes()),
                        expires_at: expiry(now, ttl_secs),
                    },
                );
                Ok(by)
            }
            Some(Entry {
                kind: Kind::Value(v),
                ..
            }) => {
                let current: i64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| wrong_kind(key, "integer counter"))?;
                let next = current.checked_add(by).ok_or_else(|| {
                    StoreError::Corrupt(format!("counter {key:?} would overflow"))
                })?;
                *v = next.to_string().into_bytes();
                Ok(next)
            }
            Some(Entry {
                kind: Kind::Set(_), ..
            }) => Err(wrong_kind(key, "integer counter")),
        })
    }

    async fn set_add(&self, key: &str, member: &str, ttl_secs: u64) -> Result<(), StoreError> {
        self.write(|state, now| {
            let expires_at = expiry(now, ttl_secs);
            match state.live(key, now) {
                None => {
                    let members = HashSet::from([member.to_owned()]);
                    state.entries.insert(
                        key.to_owned(),
                        Entry {
                            kind: Kind::Set(members),
                            expires_at,
                        },
                    );
                    Ok(())
                }
                Some(entry) => match &mut entry.kind {
                    Kind::Set(members) => {
                        members.insert(member.to_owned());
                        entry.expires_at = expires_at;
                        Ok(())
                    }
                    Kind::Value(_) => Err(wrong_kind(key, "set")),
                },
            }
        })
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.live(key, now) {
            None => Ok(Vec::new()),
            Some(Entry {
                kind: Kind::Set(members),
                ..
            }) => Ok(members.iter().cloned().collect()),
            Some(Entry {
                kind: Kind::Value(_),
                ..
            }) => Err(wrong_kind(key, "set")),
        }
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        self.write(|state, now| match state.live(key, now) {
            None => Ok(false),
            Some(Entry {
                kind: Kind::Set(members),
                ..
            }) => Ok(members.remove(member)),
            Some(Entry {
                kind: Kind::Value(_),
                ..
            }) => Err(wrong_kind(key, "set")),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limited_keys_are_entries_that_delete_lifts_and_expiry_frees() {
        let backend = MemoryBackend::new();
        assert_eq!(
            backend.gcra("rl", 60_000, 1).await.unwrap(),
            crate::Gcra::Allowed
        );
        assert_eq!(
            backend.gcra("rl", 60_000, 1).await.unwrap(),
            crate::Gcra::Allowed
        );
        let crate::Gcra::Limited { retry_after_ms } = backend.gcra("rl", 60_000, 1).await.unwrap()
        else {
            panic!("third request within the burst must be limited");
        };
        assert!(
            (59_000..=60_000).contains(&retry_after_ms),
            "{retry_after_ms}"
        );
        // The cell is an ordinary entry: one live key, with an expiry about two intervals out.
        assert_eq!(backend.len(), 1);
        {
            let state = backend.lock();
            let left = state.entries["rl"].expires_at - Instant::now();
            assert!(left > Duration::from_secs(110) && left <= Duration::from_secs(121));
        }
        // Lifting it (admin API) deletes it; the budget starts again.
        assert!(backend.delete("rl").await.unwrap());
        assert_eq!(
            backend.gcra("rl", 60_000, 1).await.unwrap(),
            crate::Gcra::Allowed
        );
        // Zero interval: no limit at all.
        for _ in 0..10 {
            assert_eq!(
                backend.gcra("free", 0, 0).await.unwrap(),
                crate::Gcra::Allowed
            );
        }
    }

    #[tokio::test]
    async fn expired_entries_are_absent_and_purged() {
        let backend = MemoryBackend::new();
        backend.put("a", b"1", 1).await.unwrap();
        // Force expiry without sleeping: rewrite the instant.
        {
            let mut state = backend.lock();
            let entry = state.entries.get_mut("a").unwrap();
            entry.expires_at = Instant::now() - Duration::from_millis(1);
        }
        assert_eq!(backend.len(), 0);
        assert_eq!(backend.purge_expired(), 1);
        assert!(backend.get("a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn values_and_sets_are_separate_kinds() {
        let backend = MemoryBackend::new();
        backend.put("v", b"x", 60).await.unwrap();
        backend.set_add("s", "m", 60).await.unwrap();
        assert!(matches!(
            backend.set_add("v", "m", 60).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            backend.get("s").await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            backend.incr("v", 1, 60).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn purge_task_stops_with_the_backend() {
        let backend = MemoryBackend::new();
        let handle = backend._purge.as_ref().map(|t| t.0.abort_handle()).unwrap();
        assert!(!handle.is_finished());
        drop(backend);
        tokio::task::yield_now().await;
        for _ in 0..100 {
            if handle.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("purge task outlived its backend");
    }

    #[test]
    fn works_without_a_runtime_and_sweeps_on_writes() {
        let backend = MemoryBackend::new();
        assert!(backend._purge.is_none());
        backend.write(|state, now| {
            state.entries.insert(
                "old".into(),
                Entry {
                    kind: Kind::Value(b"x".to_vec()),
                    expires_at: now - Duration::from_millis(1),
                },
            );
        });
        for _ in 0..PURGE_EVERY_OPS {
            backend.write(|_, _| ());
        }
        assert!(backend.lock().entries.is_empty());
    }
}
