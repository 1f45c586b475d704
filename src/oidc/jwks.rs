//! The JWKS cache. Keys are replaced only by a successful fetch, so an issuer outage never drops keys in use. A
//! token with an unknown `kid` triggers at most one fetch per throttle window, shared by every request waiting on
//! it (single flight): a flood of unknown kids cannot become a flood of fetches.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{sync::Mutex, time::Instant};

use super::{Provider, ProviderError};
use crate::{id_token::KeySet, telemetry::metrics::Event};

/// Periodic refresh bounds, whatever `Cache-Control: max-age` says.
const MIN_REFRESH: Duration = Duration::from_secs(300);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// The current key set and the refresh bookkeeping.
pub struct KeyCache {
    current: RwLock<Arc<KeySet>>,
    refresh_in: RwLock<Duration>,
    /// Time of the last fetch caused by an unknown `kid`; the lock also keeps every fetch single-flight.
    last_forced: Mutex<Option<Instant>>,
    throttle: Duration,
}

impl KeyCache {
    /// An empty cache; `throttle` is the least time between two unknown-kid fetches.
    pub fn new(throttle: Duration) -> Self {
        Self {
            current: RwLock::new(Arc::new(KeySet::default())),
            refresh_in: RwLock::new(DEFAULT_REFRESH),
            last_forced: Mutex::new(None),
            throttle,
        }
    }

    /// The keys in use.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    /// How long until the next periodic refresh.
    pub fn refresh_in(&self) -> Duration {
        self.refresh_in.read().map(|d| *d).unwrap_or(DEFAULT_REFRESH)
    }

    /// Fetches the JWKS now and replaces the keys on success.
    pub(super) async fn refresh(&self, p: &Provider, jwks_uri: &str) -> Result<(), ProviderError> {
        let _single_flight = self.last_forced.lock().await;
        self.fetch(p, jwks_uri).await
    }

    async fn fetch(&self, p: &Provider, jwks_uri: &str) -> Result<(), ProviderError> {
        const WHAT: &str = "jwks_uri";
        let result = async {
            let answer = p.get(WHAT, jwks_uri).await?;
            let keys = KeySet::from_jwks(&answer.body)
                .map_err(|e| ProviderError::BadDocument { what: WHAT, why: e.to_string() })?;
            Ok((keys, answer.cache_control))
        }
        .await;
        match result {
            Ok((keys, cache_control)) => {
                p.metrics.event(Event::JwksFetch("success"));
                if let Ok(mut k) = self.current.write() {
                    *k = Arc::new(keys);
                }
                if let Ok(mut r) = self.refresh_in.write() {
                    *r = max_age(cache_control.as_deref()).unwrap_or(DEFAULT_REFRESH).clamp(MIN_REFRESH, MAX_REFRESH);
                }
                Ok(())
            }
            Err(e) => {
                p.metrics.event(Event::JwksFetch("failure"));
                Err(e)
            }
        }
    }

    /// The keys to try again with after a token named an unknown `kid`: re-fetched at most once per throttle
    /// window; concurrent callers wait for the one fetch in flight and then see its result.
    pub(super) async fn for_unknown_kid(&self, p: &Provider, jwks_uri: &str, kid: Option<&str>) -> Arc<KeySet> {
        let mut last = self.last_forced.lock().await;
        // Someone else's fetch, finished while we waited, may already have brought the key.
        if kid.is_some_and(|k| self.current().has_kid(k)) {
            return self.current();
        }
        if last.is_some_and(|t| t.elapsed() < self.throttle) {
            p.metrics.event(Event::JwksFetch("throttled"));
            return self.current();
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch(p, jwks_uri).await {
            tracing::warn!(error = %e, "JWKS re-fetch for an unknown kid failed; keeping the keys we have");
        }
        self.current()
    }
}

fn max_age(cache_control: Option<&str>) -> Option<Duration> {
    cache_control?
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age(Some("public, max-age=600")), Some(Duration::from_secs(600)));
        assert_eq!(max_age(Some("no-store")), None);
        assert_eq!(max_age(None), None);
    }
}
