//! Cookie sessions signed out here: login id → kept for at least [`RETAIN_SECS`] (a copy refreshed before the
//! sign-out carries the same login with a later `exp` and a refresh token the revocation did not name). A cookie session is self-contained,
//! so sign-out cannot delete it; a copy of its cookie replayed to this process afterwards is refused by this list
//! (and cannot be refreshed anywhere, its refresh token being revoked at the issuer). The list is per process and
//! bounded; server-side stores need none (sign-out deletes the session itself).

use std::{
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

use moka::{Expiry, sync::Cache};

/// How long a signed-out login is remembered at least, whatever the presented session's `exp`: the lifetime of the
/// refresh tokens of most issuers.
pub const RETAIN_SECS: i64 = 30 * 24 * 3600;

/// At most this many signed-out sessions are remembered (the least recently used go first beyond that).
pub const CAPACITY: u64 = 200_000;

struct UntilExp;

impl Expiry<String, u32> for UntilExp {
    fn expire_after_create(&self, _: &String, ttl_secs: &u32, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs((*ttl_secs).into()))
    }
}

/// The signed-out login ids.
pub struct SignedOut {
    entries: Cache<String, u32>,
    /// Set by the first sign-out: until then every lookup is skipped.
    any: AtomicBool,
}

impl std::fmt::Debug for SignedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignedOut({} entries)", self.entries.entry_count())
    }
}

impl Default for SignedOut {
    fn default() -> Self {
        Self {
            entries: Cache::builder().max_capacity(CAPACITY).expire_after(UntilExp).build(),
            any: AtomicBool::new(false),
        }
    }
}

impl SignedOut {
    /// Remembers `login_id` for `ttl_secs` (the session's remaining lifetime), and at least [`RETAIN_SECS`].
    pub fn insert(&self, login_id: &str, ttl_secs: i64) {
        self.any.store(true, Relaxed);
        let ttl = ttl_secs.clamp(RETAIN_SECS, u32::MAX.into()) as u32;
        self.entries.insert(login_id.to_owned(), ttl);
    }

    /// Whether `login_id` was signed out (and its session has not expired since).
    pub fn contains(&self, login_id: &str) -> bool {
        self.any.load(Relaxed) && self.entries.contains_key(login_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_was_signed_out_only() {
        let s = SignedOut::default();
        assert!(!s.contains("a"), "empty");
        s.insert("a", 600);
        assert!(s.contains("a"));
        assert!(!s.contains("b"));
        s.insert("c", -5);
        assert!(s.contains("c"), "an expired session's login is still remembered");
        // A copy refreshed before the sign-out outlives the presented `exp`: the login is kept for the refresh
        // tokens' lifetime, not the session's.
        s.insert("d", 40);
        assert_eq!(s.entries.get("d"), Some(RETAIN_SECS as u32));
        s.insert("e", RETAIN_SECS + 5);
        assert_eq!(s.entries.get("e"), Some((RETAIN_SECS + 5) as u32));
    }
}
