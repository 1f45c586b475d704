//! The store conformance suite (issue 16 part 3): one list of what `idgate::session::store::Store` promises, written
//! once and run against the four server-side stores — memory, one Redis server, Sentinel (primary + replica + three
//! sentinels) and Cluster (three primaries with a replica each), all real processes (tests/it/redis.rs).
//!
//! Where the memory store legitimately differs, the list says so and asserts the memory store's own answer, with
//! the reason, instead of skipping the check: it serves one process, so the replay set and the lock (which exist
//! for replicas sharing a store) always answer "first" and "held" — the process's own replay guard and refresh
//! single flight do that job — and it has no server to lose, so there is nothing to reconnect to.
//!
//! Times are real (the stores expire entries on their own clocks): expiries use 1–4 s lifetimes with at least 0.5 s
//! of margin either side.

use std::{future::Future, time::Duration};

use idgate::session::store::{Ended, Key, Owner, Store, hex, memory::MemoryStore, redis::RedisStore};
use tokio::time::{Instant, sleep, sleep_until};

use crate::{
    harness::eventually,
    redis::{Cluster, DATA_PASSWORD, Redis, Sentinel, replicated},
};

/// The request time passed to the store; only `expires_at - now` matters to it.
const NOW: i64 = 1_800_000_000;

/// What the suite runs on: the store, and the processes behind it (to break them, and to read what Redis holds).
enum Backing<'a> {
    Memory,
    Node(&'a mut Redis),
    Sentinel(&'a mut Sentinel),
    Cluster(&'a mut Cluster),
}

impl Backing<'_> {
    fn name(&self) -> &'static str {
        match self {
            Backing::Memory => "memory",
            Backing::Node(_) => "redis",
            Backing::Sentinel(_) => "sentinel",
            Backing::Cluster(_) => "cluster",
        }
    }

    /// Whether the store is shared by replicas (Redis, any topology) rather than one process's (memory).
    fn shared(&self) -> bool {
        !matches!(self, Backing::Memory)
    }

    /// A direct connection to the data, beside the store's own (Sentinel: the primary now; Cluster: routed by key).
    async fn raw(&self) -> Option<Raw> {
        Some(match self {
            Backing::Memory => return None,
            Backing::Node(r) => {
                Raw::Node(redis::Client::open(r.url()).unwrap().get_multiplexed_async_connection().await.unwrap())
            }
            Backing::Sentinel(s) => {
                for p in [&s.primary, &s.replica] {
                    if p.child.is_some() && crate::redis::info(p, "replication").await.contains("role:master") {
                        return Some(Raw::Node(p.conn().await));
                    }
                }
                panic!("no primary");
            }
            Backing::Cluster(c) => {
                let seeds: Vec<String> = c
                    .nodes
                    .iter()
                    .filter(|n| n.child.is_some())
                    .map(|n| format!("redis://:{DATA_PASSWORD}@127.0.0.1:{}/", n.port))
                    .collect();
                Raw::Cluster(redis::cluster::ClusterClient::new(seeds).unwrap().get_async_connection().await.unwrap())
            }
        })
    }
}

enum Raw {
    Node(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Raw {
    /// Seconds the key has left (`TTL`: -2 when it does not exist, -1 when it never expires).
    async fn ttl(&mut self, key: &str) -> i64 {
        let cmd = redis::cmd("TTL").arg(key).clone();
        match self {
            Raw::Node(c) => cmd.query_async(c).await.unwrap(),
            Raw::Cluster(c) => cmd.query_async(c).await.unwrap(),
        }
    }
}

/// A store key named by `tag` (distinct tags, distinct keys).
fn key(tag: &str) -> Key {
    let mut k = [0u8; 32];
    k[..tag.len()].copy_from_slice(tag.as_bytes());
    k
}

fn owner(sub: &str, sid: Option<&str>, created: i64) -> Owner {
    Owner { sid: sid.map(str::to_owned), sub: sub.to_owned(), created }
}

fn ended(ended: usize, kept_newer: usize) -> Ended {
    Ended { ended, kept_newer }
}

/// Runs eight copies of `f` at once (concurrently on one task: their store calls are in flight together); how many
/// answered `true`.
async fn racing<F, Fut>(f: F) -> usize
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let r = tokio::join!(f(), f(), f(), f(), f(), f(), f(), f());
    [r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7].into_iter().filter(|w| *w).count()
}

/// The whole list, in order, on one store.
async fn conformance(store: &Store, mut backing: Backing<'_>) {
    let name = backing.name();
    eprintln!("store conformance: {name}");
    store.ping().await.unwrap_or_else(|e| panic!("{name}: ping: {e}"));
    save_open_end(store, name).await;
    expiry_at_exp(store, &backing).await;
    back_channel_lookup(store, name).await;
    index_outlives_its_longest_session(store, &backing).await;
    blobs_are_taken_once(store, name).await;
    replay_set(store, &backing).await;
    refresh_lock(store, &backing).await;
    reconnect(store, &mut backing).await;
}

/// put / get / replace / delete, on exact bytes.
async fn save_open_end(store: &Store, name: &str) {
    let o = owner("save-sub", Some("save-sid"), 100);
    let (a, b) = (key("save-a"), key("save-b"));
    assert_eq!(store.get(&a).await.unwrap(), None, "{name}: nothing under a new key");
    // Arbitrary bytes (sealed sessions are binary), large enough to be more than a token.
    let v1: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 256) as u8).collect();
    store.put(&a, v1.clone(), &o, NOW + 60, NOW).await.unwrap();
    store.put(&b, b"b".to_vec(), &o, NOW + 60, NOW).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().as_deref(), Some(&v1[..]), "{name}: the exact bytes back");
    store.put(&a, b"v2".to_vec(), &o, NOW + 60, NOW).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().as_deref(), Some(&b"v2"[..]), "{name}: put overwrites");
    assert!(store.replace(&a, b"v3".to_vec(), &o, NOW + 60, NOW).await.unwrap(), "{name}: replace over a session");
    assert_eq!(store.get(&a).await.unwrap().as_deref(), Some(&b"v3"[..]), "{name}: replaced");
    let absent = key("save-absent");
    assert!(!store.replace(&absent, b"x".to_vec(), &o, NOW + 60, NOW).await.unwrap(), "{name}: replace needs one");
    assert_eq!(store.get(&absent).await.unwrap(), None, "{name}: replace creates nothing");
    store.delete(&a).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap(), None, "{name}: deleted");
    assert_eq!(store.get(&b).await.unwrap().as_deref(), Some(&b"b"[..]), "{name}: only that key");
    // A refresh finishing after a sign-out must not bring the session back.
    assert!(!store.replace(&a, b"v4".to_vec(), &o, NOW + 60, NOW).await.unwrap(), "{name}: ended stays ended");
    assert_eq!(store.get(&a).await.unwrap(), None, "{name}: not revived");
    store.delete(&a).await.unwrap_or_else(|e| panic!("{name}: deleting twice is no error: {e}"));
}

/// Entries end at the `exp` they were given — a replaced session at its new one — and so do kept posts and replay
/// marks; an expired session can neither be replaced nor counted by a back-channel logout.
async fn expiry_at_exp(store: &Store, backing: &Backing<'_>) {
    let name = backing.name();
    let (two, one_then_four, post) = (key("exp-2s"), key("exp-1s-then-4s"), key("exp-post"));
    let o = owner("exp-sub", Some("exp-sid"), 100);
    // Checks that an entry lives are timed from before its write, checks that it is gone from after the last one.
    let start = Instant::now();
    store.put(&two, b"two".to_vec(), &o, NOW + 2, NOW).await.unwrap();
    store.put(&one_then_four, b"one".to_vec(), &o, NOW + 1, NOW).await.unwrap();
    // A refresh moves exp later: the entry must live to the new exp, not end at the first token's.
    assert!(store.replace(&one_then_four, b"four".to_vec(), &o, NOW + 4, NOW).await.unwrap());
    store.put_blob(&post, b"a=1".to_vec(), 1).await.unwrap();
    assert!(store.first_use("exp-once", 1).await.unwrap());
    let written = Instant::now();
    sleep_until(start + Duration::from_millis(1300)).await;
    assert_eq!(store.get(&two).await.unwrap().as_deref(), Some(&b"two"[..]), "{name}: alive before its exp");
    sleep_until(written + Duration::from_millis(2600)).await;
    assert_eq!(store.get(&two).await.unwrap(), None, "{name}: gone at its exp");
    assert_eq!(
        store.get(&one_then_four).await.unwrap().as_deref(),
        Some(&b"four"[..]),
        "{name}: a replaced session lives to its new exp, past the old one"
    );
    assert_eq!(store.take_blob(&post).await.unwrap(), None, "{name}: a kept post expires with its flow");
    // Memory: always first (see first_use); Redis: the mark lapsed, so the name is new again.
    assert!(store.first_use("exp-once", 1).await.unwrap(), "{name}: a replay mark lasts its ttl only");
    assert!(!store.replace(&two, b"x".to_vec(), &o, NOW + 60, NOW).await.unwrap(), "{name}: expired is ended");
    assert_eq!(store.get(&two).await.unwrap(), None, "{name}: an expired session is not revived");
    sleep_until(written + Duration::from_millis(4600)).await;
    assert_eq!(store.get(&one_then_four).await.unwrap(), None, "{name}: gone at its new exp");
    // Nothing of this owner is alive: a logout ends none and keeps none.
    assert_eq!(store.delete_owned(None, Some("exp-sub"), NOW).await.unwrap(), ended(0, 0), "{name}");
}

/// Back-channel logout: by `sid`, or by `sub` when no `sid` is given, ending the logins made at or before the
/// token's `iat` and keeping (and counting) the later ones; only live sessions count.
async fn back_channel_lookup(store: &Store, name: &str) {
    // A subject with characters that mean something to Redis key names (`{…}` is a cluster hash tag).
    let sub = "auth0|{tenant}:ü";
    let put = |k: &'static str, o: Owner| async move {
        store.put(&key(k), k.as_bytes().to_vec(), &o, NOW + 600, NOW).await.unwrap();
    };
    put("bc-s1-old", owner(sub, Some("s1"), 100)).await;
    put("bc-s2-old", owner(sub, Some("s2"), 100)).await;
    put("bc-s1-new", owner(sub, Some("s1"), 300)).await;
    put("bc-nosid", owner(sub, None, 100)).await;
    put("bc-other", owner("someone-else", Some("s3"), 100)).await;
    let alive = |k: &'static str| async move { store.get(&key(k)).await.unwrap().is_some() };

    // No iat (i64::MIN): older than every login.
    assert_eq!(store.delete_owned(Some("s1"), None, i64::MIN).await.unwrap(), ended(0, 2), "{name}: no iat");
    // By sid: the login at 100 ends, the one at 300 is kept; nothing of s2, no-sid or another subject is touched.
    assert_eq!(store.delete_owned(Some("s1"), Some(sub), 200).await.unwrap(), ended(1, 1), "{name}: by sid");
    assert!(!alive("bc-s1-old").await, "{name}");
    for k in ["bc-s1-new", "bc-s2-old", "bc-nosid", "bc-other"] {
        assert!(alive(k).await, "{name}: {k} kept by a logout of sid s1");
    }
    assert_eq!(store.delete_owned(Some("s1"), Some(sub), 200).await.unwrap(), ended(0, 1), "{name}: again: none");
    // By sub: every older session of the subject, whatever its sid.
    assert_eq!(store.delete_owned(None, Some(sub), 200).await.unwrap(), ended(2, 1), "{name}: by sub");
    assert!(!alive("bc-s2-old").await && !alive("bc-nosid").await, "{name}");
    assert!(alive("bc-s1-new").await && alive("bc-other").await, "{name}");
    // At or before: a login made in the token's very second ends.
    assert_eq!(store.delete_owned(None, Some(sub), 300).await.unwrap(), ended(1, 0), "{name}: iat == login");
    assert!(!alive("bc-s1-new").await, "{name}");
    // A token naming neither ends nothing.
    assert_eq!(store.delete_owned(None, None, i64::MAX).await.unwrap(), ended(0, 0), "{name}: names nobody");
    assert!(alive("bc-other").await, "{name}");
    // A later login that was signed out since is not a kept session.
    put("bc-signed-out", owner("signed-out-sub", Some("s4"), 500)).await;
    store.delete(&key("bc-signed-out")).await.unwrap();
    assert_eq!(
        store.delete_owned(None, Some("signed-out-sub"), 400).await.unwrap(),
        ended(0, 0),
        "{name}: a signed-out session is neither ended nor kept"
    );
    // A refreshed session is still found by its owner.
    put("bc-refreshed", owner("refreshed-sub", Some("s5"), 100)).await;
    let o = owner("refreshed-sub", Some("s5"), 100);
    assert!(store.replace(&key("bc-refreshed"), b"renewed".to_vec(), &o, NOW + 900, NOW).await.unwrap());
    assert_eq!(store.delete_owned(Some("s5"), None, 100).await.unwrap(), ended(1, 0), "{name}: after a refresh");
    assert!(!alive("bc-refreshed").await, "{name}");
}

/// A session that lives longer than a day and a half (a long ID token) stays findable by back-channel logout for
/// all its life: Redis's logout indexes expire no earlier than the sessions they name. The memory store has no
/// index to lose (each entry carries its owner's hashes), so it is checked by ending the session.
async fn index_outlives_its_longest_session(store: &Store, backing: &Backing<'_>) {
    let name = backing.name();
    let week = 7 * 24 * 3600;
    let o = owner("long-sub", Some("long-sid"), 100);
    store.put(&key("long-lived"), b"week".to_vec(), &o, NOW + week, NOW).await.unwrap();
    store.put(&key("long-short"), b"hour".to_vec(), &o, NOW + 3600, NOW).await.unwrap();
    if let Some(mut raw) = backing.raw().await {
        let session = raw.ttl(&format!("idgate:s:{}", hex(&key("long-lived")))).await;
        assert!(session > week - 60, "{name}: the session keeps its week: {session}");
        for index in ["idgate:z:sub:long-sub", "idgate:z:sid:long-sid"] {
            let ttl = raw.ttl(index).await;
            assert!(ttl >= session, "{name}: {index} expires in {ttl} s, before its session ({session} s)");
        }
    }
    assert_eq!(store.delete_owned(Some("long-sid"), None, 100).await.unwrap(), ended(2, 0), "{name}");
    assert_eq!(store.get(&key("long-lived")).await.unwrap(), None, "{name}");
}

/// Kept form posts: taken once (by one of many racing takers), apart from the sessions (same key, no collision;
/// neither sign-out nor back-channel logout touches them).
async fn blobs_are_taken_once(store: &Store, name: &str) {
    let k = key("blob");
    assert_eq!(store.take_blob(&k).await.unwrap(), None, "{name}: nothing kept yet");
    store.put_blob(&k, b"first".to_vec(), 60).await.unwrap();
    store.put_blob(&k, b"a=1&b=\x00\xff".to_vec(), 60).await.unwrap();
    // A session under the same key is another entry.
    let o = owner("blob-sub", Some("blob-sid"), 100);
    store.put(&k, b"session".to_vec(), &o, NOW + 60, NOW).await.unwrap();
    store.delete(&key("blob-unrelated")).await.unwrap();
    assert_eq!(store.delete_owned(Some("blob-sid"), Some("blob-sub"), i64::MAX).await.unwrap(), ended(1, 0));
    assert_eq!(store.get(&k).await.unwrap(), None, "{name}: the session ended");
    assert_eq!(
        store.take_blob(&k).await.unwrap().as_deref(),
        Some(&b"a=1&b=\x00\xff"[..]),
        "{name}: the latest post, exactly, untouched by the session's end"
    );
    assert_eq!(store.take_blob(&k).await.unwrap(), None, "{name}: taken once");
    let k = key("blob-race");
    store.put_blob(&k, b"once".to_vec(), 60).await.unwrap();
    let winners = racing(|| async { store.take_blob(&k).await.unwrap().is_some() }).await;
    assert_eq!(winners, 1, "{name}: one of eight racing takers gets the post");
}

/// The replay set (`first_use`): a back-channel `jti` or a resume ticket is accepted once across every replica.
async fn replay_set(store: &Store, backing: &Backing<'_>) {
    let name = backing.name();
    let firsts = racing(|| async { store.first_use("jti:race", 60).await.unwrap() }).await;
    let again = store.first_use("jti:race", 60).await.unwrap();
    let other = store.first_use("jti:other", 60).await.unwrap();
    if backing.shared() {
        assert_eq!(firsts, 1, "{name}: one of eight racing uses is the first");
        assert!(!again, "{name}: a used name is refused");
        assert!(other, "{name}: another name is new");
    } else {
        // One process: its own replay guards (the logout-token jti cache, the resume ticket's) refuse the second
        // use before the store is asked, so the memory store answers "first" every time.
        assert_eq!(firsts, 8, "{name}: per process, always first");
        assert!(again && other, "{name}: per process, always first");
    }
}

/// The refresh lock: one holder at a time; only the holder renews or releases it, so a holder whose lease lapsed
/// cannot release (or renew) the lock someone took since.
async fn refresh_lock(store: &Store, backing: &Backing<'_>) {
    let name = backing.name();
    let a = store.try_lock("l1", 10_000).await.unwrap().expect("a free lock is taken");
    let second = store.try_lock("l1", 10_000).await.unwrap();
    let other = store.try_lock("l2", 10_000).await.unwrap();
    let racers = racing(|| async { store.try_lock("l-race", 10_000).await.unwrap().is_some() }).await;
    let renewed = store.renew(&a, 10_000).await.unwrap();
    let released = store.unlock(&a).await;
    let released_twice = store.unlock(&a).await;
    if !backing.shared() {
        // One process: refreshes are single-flight in process (login::refresh), so the memory store's lock is
        // always free and every holder's own.
        assert!(second.is_some() && other.is_some() && racers == 8, "{name}: per process, always held");
        assert!(renewed && released && released_twice, "{name}: per process, always the holder");
        return;
    }
    assert!(second.is_none(), "{name}: a held lock is not taken twice");
    assert!(other.is_some(), "{name}: another name is another lock");
    assert_eq!(racers, 1, "{name}: one of eight racing takers holds it");
    assert!(renewed, "{name}: the holder renews");
    assert!(released, "{name}: the holder releases");
    assert!(!released_twice, "{name}: a released lease is no longer held");
    let b = store.try_lock("l1", 10_000).await.unwrap().expect("free again once released");
    assert!(store.unlock(&b).await);

    // A lease that lapsed: someone else takes the lock; the old holder can neither renew nor release it.
    let lapsed = store.try_lock("l3", 300).await.unwrap().expect("taken");
    sleep(Duration::from_millis(700)).await;
    let taker = store.try_lock("l3", 10_000).await.unwrap().expect("a lapsed lease frees the lock");
    assert!(!store.renew(&lapsed, 10_000).await.unwrap(), "{name}: a lapsed holder does not renew");
    assert!(!store.unlock(&lapsed).await, "{name}: a lapsed holder does not release");
    assert!(store.try_lock("l3", 10_000).await.unwrap().is_none(), "{name}: the new holder still holds it");
    assert!(store.unlock(&taker).await, "{name}: the new holder releases it");
    assert!(store.try_lock("l3", 10_000).await.unwrap().is_some(), "{name}: free");

    // Renewing extends the lease past its first end.
    let taken = Instant::now();
    let held = store.try_lock("l4", 1_500).await.unwrap().expect("taken");
    sleep(Duration::from_millis(200)).await;
    assert!(store.renew(&held, 5_000).await.unwrap());
    sleep_until(taken + Duration::from_millis(2_000)).await;
    assert!(store.try_lock("l4", 10_000).await.unwrap().is_none(), "{name}: renewed past its first lease");
}

/// The server goes away and comes back (restart; Sentinel and Cluster: the primary killed, a replica promoted):
/// calls fail (within the store's timeout, never hanging), then the same store works again without a restart —
/// and with Sentinel and Cluster, a session the replica had received is still there.
async fn reconnect(store: &Store, backing: &mut Backing<'_>) {
    let name = backing.name();
    let k = key("reconnect");
    let o = owner("reconnect-sub", Some("reconnect-sid"), 100);
    store.put(&k, b"kept".to_vec(), &o, NOW + 600, NOW).await.unwrap();
    let keeps_data = match backing {
        Backing::Memory => {
            // No server to lose: the entries live in this process. The store keeps answering.
            store.ping().await.unwrap();
            assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&b"kept"[..]), "{name}");
            return;
        }
        Backing::Node(redis) => {
            redis.stop();
            failing(store, name).await;
            redis.restart().await;
            false
        }
        Backing::Sentinel(s) => {
            replicated(&s.primary).await;
            s.primary.kill();
            failing(store, name).await;
            true
        }
        Backing::Cluster(c) => {
            // The primary holding the session answers EXISTS; the others answer MOVED.
            let session = format!("idgate:s:{}", hex(&k));
            let mut victim = None;
            for p in c.primaries().await {
                let mut conn = c.nodes[p].conn().await;
                if redis::cmd("EXISTS").arg(&session).query_async::<i64>(&mut conn).await.ok() == Some(1) {
                    victim = Some(p);
                }
            }
            let victim = victim.expect("the primary holding the session");
            replicated(&c.nodes[victim]).await;
            c.nodes[victim].kill();
            failing(store, name).await;
            true
        }
    };
    eventually(&format!("{name}: the store answers again"), Duration::from_secs(30), || async {
        store.ping().await.ok()?;
        store.put(&key("reconnect-new"), b"new".to_vec(), &o, NOW + 600, NOW).await.ok()
    })
    .await;
    assert_eq!(store.get(&key("reconnect-new")).await.unwrap().as_deref(), Some(&b"new"[..]), "{name}");
    let kept = store.get(&k).await.unwrap();
    if keeps_data {
        assert_eq!(kept.as_deref(), Some(&b"kept"[..]), "{name}: the replica had it");
    } else {
        assert_eq!(kept, None, "{name}: a restarted server without persistence starts empty");
    }
}

/// The store's calls fail while the server is gone, each within the store's 2 s timeout (plus scheduling slack).
async fn failing(store: &Store, name: &str) {
    let k = key("reconnect");
    let t = Instant::now();
    let outcome = store.get(&k).await;
    let pinged = store.ping().await;
    assert!(outcome.is_err() || pinged.is_err(), "{name}: a lost server is noticed");
    assert!(t.elapsed() < Duration::from_secs(6), "{name}: failed in {:?}, not hung", t.elapsed());
}

#[tokio::test]
async fn store_conformance_memory() {
    let store = Store::Memory(MemoryStore::new(1000));
    conformance(&store, Backing::Memory).await;
}

#[tokio::test]
async fn store_conformance_single_redis() {
    let mut redis = Redis::start().await;
    let store = Store::Redis(RedisStore::new(&redis.url()).unwrap());
    conformance(&store, Backing::Node(&mut redis)).await;
}

#[tokio::test]
async fn store_conformance_sentinel() {
    let mut s = Sentinel::start().await;
    let store = Store::Redis(RedisStore::new(&s.url()).unwrap());
    conformance(&store, Backing::Sentinel(&mut s)).await;
}

#[tokio::test]
async fn store_conformance_cluster() {
    let mut c = Cluster::start().await;
    let store = Store::Redis(RedisStore::new(&c.url()).unwrap());
    conformance(&store, Backing::Cluster(&mut c)).await;
}
