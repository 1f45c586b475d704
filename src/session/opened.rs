//! Sessions already opened, kept by the exact sealed bytes they were opened from: a request carrying the same cookie
//! (or, with a server-side store, the same stored bytes under the same store key) skips base64, AEAD and JSON. A hit
//! compares the whole sealed text, so only bytes that really opened before can hit; expiry is still checked on every
//! request by the caller. The cache belongs to one [`super::Sessions`]: a reload (new keys) starts an empty one.

use std::hash::{BuildHasher, Hasher, RandomState};

use moka::sync::Cache;

use super::Session;

/// At most this many bytes of sealed text and opened sessions are kept (least recently used go first).
pub const MAX_BYTES: u64 = 4 << 20;

/// Bytes → opened session, bounded by [`MAX_BYTES`], entries idle for a minute dropped.
pub struct OpenedCache {
    entries: Cache<Vec<u8>, Session, TailHash>,
}

impl std::fmt::Debug for OpenedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenedCache({} entries)", self.entries.entry_count())
    }
}

impl Default for OpenedCache {
    /// An empty cache.
    fn default() -> Self {
        let entries = Cache::builder()
            .max_capacity(MAX_BYTES)
            .weigher(|k: &Vec<u8>, s: &Session| u32::try_from(k.len() + s.approximate_size()).unwrap_or(u32::MAX))
            .time_to_idle(std::time::Duration::from_secs(60))
            .build_with_hasher(TailHash::default());
        Self { entries }
    }
}

impl OpenedCache {
    /// The session opened from exactly `sealed` before, if it is still kept.
    pub fn get(&self, sealed: &[u8]) -> Option<Session> {
        self.entries.get(sealed)
    }

    /// Keeps `session`, opened from `sealed`.
    pub fn insert(&self, sealed: Vec<u8>, session: Session) {
        self.entries.insert(sealed, session);
    }
}

/// Hashes only the length and the last 32 bytes of a key: every key ends with an AEAD tag (raw, or base64 in a
/// cookie), which is already uniformly spread, so hashing the kilobytes before it buys nothing. Equality still
/// compares whole keys. Keyed SipHash underneath, so an attacker cannot aim for one bucket.
#[derive(Clone, Default)]
pub struct TailHash(RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

/// See [`TailHash`].
pub struct TailHasher(std::hash::DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(32)..]);
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: &TailHash, v: &[u8]) -> u64 {
        b.hash_one(v)
    }

    #[test]
    fn the_hash_covers_the_length_and_the_tail() {
        let b = TailHash::default();
        let mut a = vec![b'x'; 1000];
        let base = hash(&b, &a);
        a[0] = b'y';
        assert_eq!(hash(&b, &a), base, "bytes before the tail are not hashed");
        a[999] = b'y';
        assert_ne!(hash(&b, &a), base, "the tail is hashed");
        assert_ne!(hash(&b, &a[..999]), hash(&b, &a), "the length is hashed");
        // Vec<u8> keys and &[u8] lookups hash alike (what the cache relies on).
        assert_eq!(b.hash_one(&a), hash(&b, &a));
    }
}
