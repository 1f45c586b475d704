//! The in-memory store: a bounded moka cache whose entries expire at their token's `exp`. Each entry carries short
//! hashes of its issuer session id and subject, so a back-channel logout finds its sessions by a scan that decrypts
//! nothing and no separate index has to be kept in step.

use std::{
    hash::{BuildHasher, Hash, Hasher},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::{
    Expiry,
    future::Cache,
    ops::compute::{CompResult, Op},
};

use super::{Ended, Key, Owner};

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl_secs: u32,
    sid: u64,
    sub: u64,
    created: i64,
}

/// Each entry expires `ttl_secs` after it was last written. moka's default keeps an updated entry's old expiry:
/// a session refreshed to a later `exp` ended at the first token's `exp` (the store conformance suite's regression).
struct ByTtl;

impl Expiry<Key, Entry> for ByTtl {
    fn expire_after_create(&self, _: &Key, e: &Entry, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(e.ttl_secs.into()))
    }

    fn expire_after_update(&self, _: &Key, e: &Entry, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(Duration::from_secs(e.ttl_secs.into()))
    }
}

/// A kept form post. It carries its deadline: moka's `remove` hands back an entry that expired but was not yet
/// evicted, and an expired post must not be taken (the store conformance suite's regression).
#[derive(Clone)]
struct Blob {
    value: Bytes,
    until: Instant,
}

impl Expiry<Key, Blob> for ByTtl {
    fn expire_after_create(&self, _: &Key, b: &Blob, now: Instant) -> Option<Duration> {
        Some(b.until.saturating_duration_since(now))
    }

    fn expire_after_update(&self, _: &Key, b: &Blob, now: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(b.until.saturating_duration_since(now))
    }
}

/// Sessions in this process's memory.
pub struct MemoryStore {
    entries: Cache<Key, Entry>,
    /// Kept form posts, apart from the sessions: anyone can make idgate keep one, and none may push a session out
    /// (their bytes are bounded by `session.preserve_post_store_bytes` before they get here).
    blobs: Cache<Key, Blob>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryStore({} entries)", self.entries.entry_count())
    }
}

/// Marks "no sid" so it never matches a requested one.
const NO_SID: u64 = 0;

impl MemoryStore {
    /// A store holding at most `capacity` sessions (the least recently used go first beyond that).
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: Cache::builder().max_capacity(capacity).expire_after(ByTtl).build(),
            blobs: Cache::builder().max_capacity(capacity).expire_after(ByTtl).build(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn hash(&self, tag: u8, value: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        tag.hash(&mut h);
        value.hash(&mut h);
        h.finish().max(1)
    }

    fn entry(&self, value: Vec<u8>, owner: &Owner, ttl_secs: u64) -> Entry {
        Entry {
            value: Bytes::from(value),
            ttl_secs: ttl_secs.min(u32::MAX.into()) as u32,
            sid: owner.sid.as_deref().map(|s| self.hash(1, s)).unwrap_or(NO_SID),
            sub: self.hash(2, &owner.sub),
            created: owner.created,
        }
    }

    pub(super) async fn put(&self, key: Key, value: Vec<u8>, owner: &Owner, ttl_secs: u64) {
        self.entries.insert(key, self.entry(value, owner, ttl_secs)).await;
    }

    /// Writes only over an entry still present (atomically, per key).
    pub(super) async fn replace(&self, key: Key, value: Vec<u8>, owner: &Owner, ttl_secs: u64) -> bool {
        let entry = self.entry(value, owner, ttl_secs);
        let result = self
            .entries
            .entry(key)
            .and_compute_with(|present| {
                let op = if present.is_some() { Op::Put(entry) } else { Op::Nop };
                std::future::ready(op)
            })
            .await;
        matches!(result, CompResult::ReplacedWith(_))
    }

    /// A post kept apart from the sessions: no back-channel logout can name it.
    pub(super) async fn put_blob(&self, key: Key, value: Vec<u8>, ttl_secs: u64) {
        let until = Instant::now() + Duration::from_secs(ttl_secs.min(u32::MAX.into()));
        self.blobs.insert(key, Blob { value: Bytes::from(value), until }).await;
    }

    /// Removes the post; hands it out only while it has not expired.
    pub(super) async fn take_blob(&self, key: &Key) -> Option<Bytes> {
        self.blobs.remove(key).await.filter(|b| b.until > Instant::now()).map(|b| b.value)
    }

    pub(super) async fn get(&self, key: &Key) -> Option<Bytes> {
        self.entries.get(key).await.map(|e| e.value)
    }

    pub(super) async fn delete(&self, key: &Key) {
        self.entries.invalidate(key).await;
    }

    pub(super) async fn delete_owned(&self, sid: Option<&str>, sub: Option<&str>, issued_at: i64) -> Ended {
        let matches: Box<dyn Fn(&Entry) -> bool + Send> = match (sid, sub) {
            (Some(sid), _) => {
                let h = self.hash(1, sid);
                Box::new(move |e| e.sid == h)
            }
            (None, Some(sub)) => {
                let h = self.hash(2, sub);
                Box::new(move |e| e.sub == h)
            }
            (None, None) => return Ended::default(),
        };
        let mut kept_newer = 0;
        let mut doomed = Vec::new();
        for (k, e) in self.entries.iter().filter(|(_, e)| matches(e)) {
            if e.created <= issued_at {
                doomed.push(*k);
            } else {
                kept_newer += 1;
            }
        }
        for k in &doomed {
            self.entries.invalidate(k).await;
        }
        Ended { ended: doomed.len(), kept_newer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anyone can make idgate keep a form post: kept posts filled the sessions' cache and, once it was full, pushed
    /// sessions out (every user logged out). They have a cache of their own.
    #[tokio::test]
    async fn kept_posts_never_push_sessions_out() {
        let store = MemoryStore::new(4);
        let owner = Owner { sid: None, sub: "alice".into(), created: 0 };
        for k in 0..4u8 {
            store.put([k; 32], vec![k], &owner, 600).await;
        }
        for k in 10..200u8 {
            store.put_blob([k; 32], vec![0; 64], 600).await;
        }
        store.entries.run_pending_tasks().await;
        assert_eq!(store.entries.entry_count(), 4, "no session was pushed out, and no post took a session's place");
        for k in 0..4u8 {
            assert_eq!(store.get(&[k; 32]).await.as_deref(), Some(&[k][..]));
        }
        assert_eq!(store.take_blob(&[199; 32]).await.as_deref(), Some(&[0u8; 64][..]), "the latest post is kept");
        assert_eq!(store.take_blob(&[199; 32]).await, None, "taken once");
    }
}
