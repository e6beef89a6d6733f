//! The contract every [`KvBackend`] keeps, written once and run against the in-memory
//! backend and a real Redis (`HOMEROOM_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! Redis tests use a random key prefix per test, so they run in parallel and never see
//! another run's keys. When Redis is unreachable they print `skipped: redis not reachable`
//! and pass, unless `CI=true`, where they fail.

// Test code: a failed unwrap is a failed test. (clippy's allow-*-in-tests only covers
// `#[test]` functions, not the shared suites they call.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::future::join_all;
use homeroom_session::memory::MemoryBackend;
use homeroom_session::redis_backend::RedisBackend;
use homeroom_session::{KvBackend, SessionStore, StoreError, open};
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("HOMEROOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn random_prefix() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("hrtest:{:016x}:", h.finish())
}

/// Two independent connections (as two broker instances would have) sharing one random
/// prefix, or `None` (after printing why) when Redis is not reachable outside CI.
async fn redis_pair() -> Option<(SessionStore, SessionStore)> {
    let prefix = random_prefix();
    let url = redis_url();
    match RedisBackend::connect_with_prefix(&url, &prefix).await {
        Ok(a) => {
            let b = RedisBackend::connect_with_prefix(&url, &prefix)
                .await
                .expect("second redis connection");
            Some((
                SessionStore::new(Arc::new(a)),
                SessionStore::new(Arc::new(b)),
            ))
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("redis not reachable in CI: {e}");
            }
            eprintln!("skipped: redis not reachable ({e})");
            None
        }
    }
}

fn memory() -> SessionStore {
    SessionStore::new(Arc::new(MemoryBackend::new()))
}

/// Runs `$suite(a, b)` against memory (the same store twice) and Redis (two connections).
macro_rules! contract {
    ($name:ident, $suite:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                let s = super::memory();
                $suite(s.clone(), s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                if let Some((a, b)) = redis_pair().await {
                    $suite(a, b).await;
                }
            }
        }
    };
}

contract!(put_get_overwrite, put_get_overwrite_suite);
contract!(ttl_expiry, ttl_expiry_suite);
contract!(put_if_absent, put_if_absent_suite);
contract!(take_once, take_once_suite);
contract!(delete, delete_suite);
contract!(incr, incr_suite);
contract!(sets, sets_suite);
contract!(json_helpers, json_suite);
contract!(ping, ping_suite);
contract!(concurrent_take, concurrent_take_suite);
contract!(concurrent_put_if_absent, concurrent_put_if_absent_suite);
contract!(concurrent_incr, concurrent_incr_suite);
contract!(gcra, gcra_suite);
contract!(concurrent_gcra, concurrent_gcra_suite);
contract!(gcra_chain, gcra_chain_suite);

// ---------------------------------------------------------------------------------------
// Suites. `a` and `b` are two handles on the same data (two connections for Redis).
// ---------------------------------------------------------------------------------------

async fn put_get_overwrite_suite(a: SessionStore, b: SessionStore) {
    let kv = a.backend();
    assert_eq!(kv.get("k").await.unwrap(), None);
    kv.put("k", b"one", 60).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
    kv.put("k", b"two", 60).await.unwrap();
    assert_eq!(
        b.backend().get("k").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    // Binary-safe values.
    let bytes = [0u8, 255, 10, 13, 0];
    kv.put("bin", &bytes, 60).await.unwrap();
    assert_eq!(kv.get("bin").await.unwrap().as_deref(), Some(&bytes[..]));
}

async fn ttl_expiry_suite(a: SessionStore, _b: SessionStore) {
    let kv = a.backend();
    kv.put("v", b"x", 1).await.unwrap();
    assert!(kv.put_if_absent("nx", b"x", 1).await.unwrap());
    assert_eq!(kv.incr("c", 1, 1).await.unwrap(), 1);
    kv.set_add("s", "a", 1).await.unwrap();
    kv.set_add("s2", "a", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A later increment does not extend the counter's window; set_add does extend the set's.
    assert_eq!(kv.incr("c", 1, 60).await.unwrap(), 2);
    kv.set_add("s2", "b", 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(kv.get("v").await.unwrap(), None, "value outlived its ttl");
    assert_eq!(
        kv.take("nx").await.unwrap(),
        None,
        "put_if_absent value outlived its ttl"
    );
    assert_eq!(
        kv.get("c").await.unwrap(),
        None,
        "counter ttl was extended by incr"
    );
    assert!(
        kv.set_members("s").await.unwrap().is_empty(),
        "set outlived its ttl"
    );
    let mut s2 = kv.set_members("s2").await.unwrap();
    s2.sort();
    assert_eq!(s2, vec!["a", "b"], "set_add must reset the set's ttl");
    // Expired keys are absent for every operation.
    assert!(kv.put_if_absent("v", b"y", 60).await.unwrap());
    assert_eq!(kv.incr("c", 5, 60).await.unwrap(), 5);
    assert!(!kv.delete("s").await.unwrap());
}

async fn put_if_absent_suite(a: SessionStore, b: SessionStore) {
    let kv = a.backend();
    assert!(kv.put_if_absent("k", b"first", 60).await.unwrap());
    assert!(!kv.put_if_absent("k", b"second", 60).await.unwrap());
    assert!(!b.backend().put_if_absent("k", b"third", 60).await.unwrap());
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"first"[..]));
    kv.delete("k").await.unwrap();
    assert!(kv.put_if_absent("k", b"again", 60).await.unwrap());
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"again"[..]));
}

async fn take_once_suite(a: SessionStore, b: SessionStore) {
    let kv = a.backend();
    assert_eq!(kv.take("k").await.unwrap(), None);
    kv.put("k", b"code", 60).await.unwrap();
    assert_eq!(
        b.backend().take("k").await.unwrap().as_deref(),
        Some(&b"code"[..])
    );
    assert_eq!(kv.take("k").await.unwrap(), None);
    assert_eq!(kv.get("k").await.unwrap(), None);
}

async fn delete_suite(a: SessionStore, b: SessionStore) {
    let kv = a.backend();
    assert!(!kv.delete("k").await.unwrap());
    kv.put("k", b"x", 60).await.unwrap();
    assert!(b.backend().delete("k").await.unwrap());
    assert!(!kv.delete("k").await.unwrap());
    assert_eq!(kv.get("k").await.unwrap(), None);
    kv.set_add("s", "m", 60).await.unwrap();
    assert!(a.delete("s").await.unwrap());
    assert!(kv.set_members("s").await.unwrap().is_empty());
}

async fn incr_suite(a: SessionStore, b: SessionStore) {
    let kv = a.backend();
    assert_eq!(kv.incr("c", 1, 60).await.unwrap(), 1);
    assert_eq!(kv.incr("c", 1, 60).await.unwrap(), 2);
    assert_eq!(b.backend().incr("c", 10, 60).await.unwrap(), 12);
    assert_eq!(kv.incr("c", -2, 60).await.unwrap(), 10);
    assert_eq!(kv.get("c").await.unwrap().as_deref(), Some(&b"10"[..]));
    assert_eq!(kv.incr("d", 7, 60).await.unwrap(), 7);
    // A non-integer value cannot be incremented.
    kv.put("text", b"abc", 60).await.unwrap();
    assert!(matches!(
        kv.incr("text", 1, 60).await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn sets_suite(a: SessionStore, b: SessionStore) {
    let kv = a.backend();
    assert!(kv.set_members("s").await.unwrap().is_empty());
    kv.set_add("s", "x", 60).await.unwrap();
    kv.set_add("s", "y", 60).await.unwrap();
    b.backend().set_add("s", "x", 60).await.unwrap();
    let mut members = b.backend().set_members("s").await.unwrap();
    members.sort();
    assert_eq!(members, vec!["x", "y"]);
    // Removing a member: once, seen by every connection.
    assert!(b.backend().set_remove("s", "x").await.unwrap());
    assert!(!kv.set_remove("s", "x").await.unwrap());
    assert!(!kv.set_remove("absent", "x").await.unwrap());
    assert_eq!(kv.set_members("s").await.unwrap(), vec!["y"]);
    // Values and sets are different kinds.
    kv.put("v", b"x", 60).await.unwrap();
    assert!(kv.set_add("v", "m", 60).await.is_err());
    assert!(kv.set_remove("v", "m").await.is_err());
    assert!(kv.get("s").await.is_err());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    step: u32,
}

async fn json_suite(a: SessionStore, b: SessionStore) {
    let flow = Flow {
        state: "st".into(),
        nonce: "no".into(),
        step: 3,
    };
    a.put_json("flow:1", &flow, 60).await.unwrap();
    assert_eq!(
        b.get_json::<Flow>("flow:1").await.unwrap(),
        Some(flow.clone())
    );
    assert!(!a.put_json_if_absent("flow:1", &flow, 60).await.unwrap());
    assert!(a.put_json_if_absent("flow:2", &flow, 60).await.unwrap());
    assert_eq!(
        a.take_json::<Flow>("flow:1").await.unwrap(),
        Some(flow.clone())
    );
    assert_eq!(b.take_json::<Flow>("flow:1").await.unwrap(), None);
    assert_eq!(a.get_json::<Flow>("missing").await.unwrap(), None);
    // ttl 0 is raised to 1 s by the helper, never "forever" or an error.
    a.put_json("flow:3", &flow, 0).await.unwrap();
    assert!(a.get_json::<Flow>("flow:3").await.unwrap().is_some());
    // Corrupt values surface as Corrupt, for get and take alike.
    a.backend().put("bad", b"{not json", 60).await.unwrap();
    assert!(matches!(
        a.get_json::<Flow>("bad").await,
        Err(StoreError::Corrupt(_))
    ));
    a.backend()
        .put("wrong-shape", br#"{"state":1}"#, 60)
        .await
        .unwrap();
    assert!(matches!(
        b.take_json::<Flow>("wrong-shape").await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn ping_suite(a: SessionStore, b: SessionStore) {
    a.backend().ping().await.unwrap();
    b.backend().ping().await.unwrap();
}

/// Alternates the handles so, for Redis, half the callers use each connection.
fn pick(i: usize, a: &SessionStore, b: &SessionStore) -> SessionStore {
    if i.is_multiple_of(2) {
        a.clone()
    } else {
        b.clone()
    }
}

async fn concurrent_take_suite(a: SessionStore, b: SessionStore) {
    a.backend().put("code", b"secret", 60).await.unwrap();
    let tasks = (0..32).map(|i| {
        let s = pick(i, &a, &b);
        tokio::spawn(async move { s.backend().take("code").await.unwrap() })
    });
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<_> = results.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "exactly one take must win: {results:?}");
    assert_eq!(winners[0].as_slice(), b"secret");
}

async fn concurrent_put_if_absent_suite(a: SessionStore, b: SessionStore) {
    let tasks = (0..32).map(|i| {
        let s = pick(i, &a, &b);
        tokio::spawn(async move {
            (
                i,
                s.backend()
                    .put_if_absent("once", format!("{i}").as_bytes(), 60)
                    .await
                    .unwrap(),
            )
        })
    });
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<_> = results.iter().filter(|(_, won)| *won).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one put_if_absent must win: {results:?}"
    );
    let stored = a.backend().get("once").await.unwrap().unwrap();
    assert_eq!(stored, format!("{}", winners[0].0).into_bytes());
}

async fn concurrent_incr_suite(a: SessionStore, b: SessionStore) {
    let tasks = (0..100).map(|i| {
        let s = pick(i, &a, &b);
        tokio::spawn(async move { s.backend().incr("hits", 1, 60).await.unwrap() })
    });
    let mut results: Vec<i64> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    results.sort_unstable();
    assert_eq!(
        results,
        (1..=100).collect::<Vec<_>>(),
        "every increment sees a distinct value"
    );
    assert_eq!(
        b.backend().get("hits").await.unwrap().as_deref(),
        Some(&b"100"[..])
    );
}

// ---------------------------------------------------------------------------------------
// open(url)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn open_memory() {
    let store = open("memory://").await.unwrap();
    store.backend().ping().await.unwrap();
    store.put_json("k", &1u32, 10).await.unwrap();
    assert_eq!(store.get_json::<u32>("k").await.unwrap(), Some(1));
}

#[tokio::test]
async fn open_redis() {
    // Reachability decides skip vs. run, like the contract tests.
    if redis_pair().await.is_none() {
        return;
    }
    let store = open(&redis_url()).await.unwrap();
    store.backend().ping().await.unwrap();
}

#[tokio::test]
async fn open_bogus_is_bad_url() {
    assert!(matches!(
        open("bogus://x").await,
        Err(StoreError::BadUrl(_))
    ));
    assert!(matches!(open("").await, Err(StoreError::BadUrl(_))));
}

#[tokio::test]
async fn redis_prefixes_isolate() {
    let Some((a, _)) = redis_pair().await else {
        return;
    };
    let other = RedisBackend::connect_with_prefix(&redis_url(), &random_prefix())
        .await
        .unwrap();
    a.backend().put("shared-name", b"a", 60).await.unwrap();
    assert_eq!(other.get("shared-name").await.unwrap(), None);
    assert!(format!("{other:?}").contains("hrtest:"));
}

#[test]
fn backends_are_object_safe() {
    fn takes(_: &dyn KvBackend) {}
    takes(&MemoryBackend::new());
}

/// A chain of GCRA steps: all allowed -> `None`; the first limited step is reported with
/// its index, the steps before it are charged and the steps after it are not; the chain
/// shares budgets with single `gcra` calls and between handles.
async fn gcra_chain_suite(a: SessionStore, b: SessionStore) {
    use homeroom_session::{Gcra, GcraStep};
    let p = format!("chain-{}-{}", std::process::id(), ulid_like());
    let step = |k: &str, burst: u64| GcraStep {
        key: format!("{p}-{k}"),
        interval_ms: 60_000,
        burst,
    };
    assert_eq!(a.backend().gcra_chain(&[]).await.unwrap(), None);
    // x allows 2 (burst 1), y allows 3 (burst 2), z allows 1 (burst 0).
    let chain = [step("x", 1), step("y", 2)];
    assert_eq!(a.backend().gcra_chain(&chain).await.unwrap(), None);
    assert_eq!(b.backend().gcra_chain(&chain).await.unwrap(), None);
    // Third time: x is spent, so y is not charged.
    match a.backend().gcra_chain(&chain).await.unwrap() {
        Some((0, retry)) => assert!(retry > 0 && retry <= 60_000, "{retry}"),
        other => panic!("x must stop the chain: {other:?}"),
    }
    // y was charged twice, not three times: one single step still passes, the next does not.
    assert_eq!(
        b.backend()
            .gcra(&format!("{p}-y"), 60_000, 2)
            .await
            .unwrap(),
        Gcra::Allowed
    );
    assert!(matches!(
        b.backend()
            .gcra(&format!("{p}-y"), 60_000, 2)
            .await
            .unwrap(),
        Gcra::Limited { .. }
    ));
    // A later step limited: the earlier one is charged.
    let chain = [step("w", 0), step("y", 2)];
    match a.backend().gcra_chain(&chain).await.unwrap() {
        Some((1, retry)) => assert!(retry > 0, "{retry}"),
        other => panic!("y must stop the chain: {other:?}"),
    }
    assert!(matches!(
        a.backend()
            .gcra(&format!("{p}-w"), 60_000, 0)
            .await
            .unwrap(),
        Gcra::Limited { .. }
    ));
}

fn ulid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// GCRA: `burst + 1` requests pass at once, the next is limited with a retry time no
/// longer than the interval; the budget is shared by both handles; keys are independent.
async fn gcra_suite(a: SessionStore, b: SessionStore) {
    use homeroom_session::Gcra;
    let key = format!("gcra-{}", std::process::id());
    for i in 0..4 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            s.backend().gcra(&key, 60_000, 3).await.unwrap(),
            Gcra::Allowed,
            "request {i}"
        );
    }
    match b.backend().gcra(&key, 60_000, 3).await.unwrap() {
        Gcra::Limited { retry_after_ms } => assert!(
            retry_after_ms > 0 && retry_after_ms <= 60_000,
            "{retry_after_ms}"
        ),
        Gcra::Allowed => panic!("the fifth request must be limited"),
    }
    assert_eq!(
        a.backend()
            .gcra(&format!("{key}-other"), 60_000, 3)
            .await
            .unwrap(),
        Gcra::Allowed
    );
    // A fast rate refills: after one interval another request passes.
    let fast = format!("{key}-fast");
    assert_eq!(
        a.backend().gcra(&fast, 100, 0).await.unwrap(),
        Gcra::Allowed
    );
    assert!(matches!(
        a.backend().gcra(&fast, 100, 0).await.unwrap(),
        Gcra::Limited { .. }
    ));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(
        b.backend().gcra(&fast, 100, 0).await.unwrap(),
        Gcra::Allowed
    );
}

/// 50 concurrent requests against a budget of 10 (burst 9): exactly 10 pass.
async fn concurrent_gcra_suite(a: SessionStore, b: SessionStore) {
    let key = format!("gcra-conc-{}", std::process::id());
    let futs = (0..50).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        async move { s.backend().gcra(&key, 60_000, 9).await.unwrap() }
    });
    let results = futures::future::join_all(futs).await;
    let allowed = results
        .iter()
        .filter(|r| **r == homeroom_session::Gcra::Allowed)
        .count();
    assert_eq!(allowed, 10);
}

contract!(shared_reads, shared_reads_suite);

/// Write-once keys read through the local cache: a value written on one handle is read on
/// the other, an announced deletion on either is seen by both at once (no waiting), and a
/// missing key is `None`. (That Redis really serves repeat reads locally, and what happens
/// when its feed drops, is pinned in `shared_reads.rs`.)
async fn shared_reads_suite(a: SessionStore, b: SessionStore) {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Fam {
        id: String,
        n: u32,
    }
    assert_eq!(b.get_json_shared::<Fam>("fam:none").await.unwrap(), None);
    for i in 0..50u32 {
        let key = format!("fam:{i}");
        let fam = Fam {
            id: key.clone(),
            n: i,
        };
        // Both ways of writing: plain, and keeping the writer's copy.
        if i % 4 < 2 {
            a.put_json(&key, &fam, 60).await.unwrap();
        } else {
            a.put_json_shared(&key, std::sync::Arc::new(fam), 60)
                .await
                .unwrap();
        }
        for s in [&a, &b, &a, &b] {
            let got = s.get_json_shared::<Fam>(&key).await.unwrap().unwrap();
            assert_eq!(got.n, i);
        }
        let (deleter, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert!(deleter.delete_announced(&key).await.unwrap());
        assert_eq!(
            other.get_json_shared::<Fam>(&key).await.unwrap(),
            None,
            "{key} on the other"
        );
        assert_eq!(
            deleter.get_json_shared::<Fam>(&key).await.unwrap(),
            None,
            "{key} here"
        );
        assert!(!deleter.delete_announced(&key).await.unwrap());
    }
}
