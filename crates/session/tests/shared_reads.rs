//! The Redis backend's local cache of write-once keys (token families): repeat reads are
//! served without Redis, an announced deletion on another instance is honoured by the very
//! next read, and a feed connection that drops empties the cache. Needs a real Redis
//! (`HOMEROOM_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`); skipped outside CI when
//! none is reachable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use homeroom_session::redis_backend::RedisBackend;
use homeroom_session::{KvBackend, SessionStore};
use std::sync::Arc;
use std::time::Duration;

fn redis_url() -> String {
    std::env::var("HOMEROOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Two instances on one random prefix, both with their feed subscribed.
async fn instances() -> Option<(Arc<RedisBackend>, Arc<RedisBackend>)> {
    let prefix = format!("hrshared:{}:", ulid::Ulid::new());
    let a = match RedisBackend::connect_with_prefix(&redis_url(), &prefix).await {
        Ok(a) => a,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("redis not reachable in CI: {e}")
        }
        Err(e) => {
            eprintln!("skipped: redis not reachable ({e})");
            return None;
        }
    };
    let b = RedisBackend::connect_with_prefix(&redis_url(), &prefix)
        .await
        .unwrap();
    assert!(a.wait_for_cache(Duration::from_secs(5)).await, "feed of a");
    assert!(b.wait_for_cache(Duration::from_secs(5)).await, "feed of b");
    Some((Arc::new(a), Arc::new(b)))
}

fn store(b: &Arc<RedisBackend>) -> SessionStore {
    SessionStore::new(b.clone())
}

/// A string record read the shared way (cache first).
async fn shared(b: &Arc<RedisBackend>, key: &str) -> Option<String> {
    store(b)
        .get_json_shared::<String>(key)
        .await
        .unwrap()
        .map(|v| v.as_ref().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_reads_are_served_locally() {
    let Some((a, b)) = instances().await else {
        return;
    };
    store(&a).put_json("fam:x", &"v1", 60).await.unwrap();
    assert_eq!(shared(&b, "fam:x").await.as_deref(), Some("v1"));
    assert_eq!(b.cached_entries(), 1);
    // Deleted behind the cache's back (no announcement): the cached copy still answers,
    // which is what spares Redis; a plain read sees the truth.
    assert!(a.delete("fam:x").await.unwrap());
    assert_eq!(shared(&b, "fam:x").await.as_deref(), Some("v1"));
    assert_eq!(store(&b).get_json::<String>("fam:x").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_its_copy_and_deletions_still_reach_it() {
    let Some((a, b)) = instances().await else {
        return;
    };
    store(&a)
        .put_json_shared("fam:w", Arc::new("v1".to_owned()), 60)
        .await
        .unwrap();
    assert_eq!(a.cached_entries(), 1, "the writer keeps what it wrote");
    // Proof that the read is local: deleted behind the cache's back, still answered.
    assert!(b.delete("fam:w").await.unwrap());
    assert_eq!(shared(&a, "fam:w").await.as_deref(), Some("v1"));
    // Written for real (the other instance reads it from Redis).
    store(&a)
        .put_json_shared("fam:v", Arc::new("v2".to_owned()), 60)
        .await
        .unwrap();
    assert_eq!(shared(&b, "fam:v").await.as_deref(), Some("v2"));
    // An announced deletion on the other instance reaches the writer's copy at once.
    assert!(store(&b).delete_announced("fam:v").await.unwrap());
    assert_eq!(shared(&a, "fam:v").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_deletion_is_seen_by_the_next_read_elsewhere() {
    let Some((a, b)) = instances().await else {
        return;
    };
    for i in 0..200 {
        let key = format!("fam:{i}");
        store(&a).put_json(&key, &i, 60).await.unwrap();
        assert_eq!(
            *store(&b)
                .get_json_shared::<i32>(&key)
                .await
                .unwrap()
                .unwrap(),
            i
        );
        assert_eq!(
            *store(&b)
                .get_json_shared::<i32>(&key)
                .await
                .unwrap()
                .unwrap(),
            i
        );
        assert!(store(&a).delete_announced(&key).await.unwrap());
        // No sleep: the announcement reached b's socket before a's delete returned.
        assert_eq!(
            store(&b).get_json_shared::<i32>(&key).await.unwrap(),
            None,
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_feed_empties_the_cache_until_it_is_back() {
    let Some((a, b)) = instances().await else {
        return;
    };
    store(&a).put_json("fam:y", &"v1", 60).await.unwrap();
    assert_eq!(shared(&b, "fam:y").await.as_deref(), Some("v1"));
    assert_eq!(b.cached_entries(), 1);
    // Kill b's feed connection, then delete without announcing: had b kept its copy, it
    // would now answer with a record Redis no longer holds.
    let admin = redis::Client::open(redis_url()).unwrap();
    let mut conn = admin.get_multiplexed_async_connection().await.unwrap();
    let name = b.feed_client_name().unwrap().to_owned();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = list
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("the feed connection is listed")
        .to_owned();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    assert!(a.delete("fam:y").await.unwrap());
    assert_eq!(shared(&b, "fam:y").await, None);
    assert_eq!(b.cached_entries(), 0);
    // The feed comes back by itself and the cache is used again.
    assert!(
        b.wait_for_cache(Duration::from_secs(5)).await,
        "feed is back"
    );
    store(&a).put_json("fam:z", &"v2", 60).await.unwrap();
    assert_eq!(shared(&b, "fam:z").await.as_deref(), Some("v2"));
    assert_eq!(b.cached_entries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_copy_lives_five_seconds_at_most() {
    let Some((a, b)) = instances().await else {
        return;
    };
    store(&a).put_json("fam:w", &"v1", 60).await.unwrap();
    assert_eq!(shared(&b, "fam:w").await.as_deref(), Some("v1"));
    // Deleted without an announcement (a manual DEL, an older Homeroom): the copy is
    // served until its age bound, then Redis is asked again.
    assert!(a.delete("fam:w").await.unwrap());
    assert_eq!(shared(&b, "fam:w").await.as_deref(), Some("v1"));
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    assert_eq!(shared(&b, "fam:w").await, None);
}

/// A Redis user whose ACL denies `PUBLISH` can still revoke: the deletion happens without
/// the announcement, and its feed (denied nothing else) keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_denied_publish_still_deletes() {
    let Some((a, _)) = instances().await else {
        return;
    };
    let admin = redis::Client::open(redis_url()).unwrap();
    let mut conn = admin.get_multiplexed_async_connection().await.unwrap();
    let user = format!("hrnopub{}", ulid::Ulid::new().to_string().to_lowercase());
    let _: String = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">nopub-secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-publish")
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = redis_url().replacen("redis://", &format!("redis://{user}:nopub-secret@"), 1);
    let limited = RedisBackend::connect_with_prefix(&url, a.prefix()).await;
    let outcome = async {
        let limited = SessionStore::new(Arc::new(limited.unwrap()));
        store(&a).put_json("fam:v", &"v1", 60).await.unwrap();
        assert!(limited.delete_announced("fam:v").await.unwrap());
        assert_eq!(store(&a).get_json::<String>("fam:v").await.unwrap(), None);
        assert!(!limited.delete_announced("fam:v").await.unwrap());
    };
    // The user goes whatever happened (deleting it also drops its connections).
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    let _: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut conn)
        .await
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
