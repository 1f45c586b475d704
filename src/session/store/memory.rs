//! The in-memory store: a bounded moka cache whose entries expire at their token's `exp`, and an index from issuer
//! session id / subject to keys for back-channel logout.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use moka::{Expiry, future::Cache};

use super::{Key, Owner};

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

struct ByTtl;

impl Expiry<Key, Entry> for ByTtl {
    fn expire_after_create(&self, _: &Key, e: &Entry, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
}

type Index = Cache<String, Arc<Mutex<Vec<Key>>>>;

/// Sessions in this process's memory.
pub struct MemoryStore {
    entries: Cache<Key, Entry>,
    owners: Index,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryStore({} entries)", self.entries.entry_count())
    }
}

impl MemoryStore {
    /// A store holding at most `capacity` sessions (the least recently used go first beyond that).
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: Cache::builder().max_capacity(capacity).expire_after(ByTtl).build(),
            owners: Cache::builder()
                .max_capacity(capacity.saturating_mul(2))
                .time_to_idle(Duration::from_secs(36 * 3600))
                .build(),
        }
    }

    pub(super) async fn put(&self, key: Key, value: Vec<u8>, owner: &Owner, ttl_secs: u64) {
        self.entries.insert(key, Entry { value: value.into(), ttl: Duration::from_secs(ttl_secs) }).await;
        let names = owner.sid.iter().map(|s| format!("sid:{s}")).chain(std::iter::once(format!("sub:{}", owner.sub)));
        for name in names {
            let list = self.owners.get_with(name, async { Arc::new(Mutex::new(Vec::new())) }).await;
            if let Ok(mut l) = list.lock() {
                l.retain(|k| self.entries.contains_key(k));
                l.push(key);
            }
        }
    }

    pub(super) async fn get(&self, key: &Key) -> Option<Vec<u8>> {
        self.entries.get(key).await.map(|e| e.value.to_vec())
    }

    pub(super) async fn delete(&self, key: &Key) {
        self.entries.invalidate(key).await;
    }

    pub(super) async fn delete_owned(&self, sid: Option<&str>, sub: Option<&str>) -> usize {
        let name = match (sid, sub) {
            (Some(sid), _) => format!("sid:{sid}"),
            (None, Some(sub)) => format!("sub:{sub}"),
            (None, None) => return 0,
        };
        let Some(list) = self.owners.remove(&name).await else { return 0 };
        let keys: Vec<Key> = list.lock().map(|l| l.clone()).unwrap_or_default();
        let mut n = 0;
        for k in keys {
            if self.entries.remove(&k).await.is_some() {
                n += 1;
            }
        }
        n
    }

    /// Sessions held (for the memory benchmark).
    pub async fn len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// True when no session is held.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}
