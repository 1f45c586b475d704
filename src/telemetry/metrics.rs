//! Prometheus metrics, prefixed `idgate_`. Hot-path counters are atomics; rarer events (logins, rejections, JWKS
//! fetches) share one small map keyed by static names, so a label value is never built from request data.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Counters with one label, named by static strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// `idgate_logins_total{result}`
    Login(&'static str),
    /// `idgate_id_token_rejections_total{reason}`
    Rejection(&'static str),
    /// `idgate_jwks_fetches_total{result}`
    JwksFetch(&'static str),
    /// `idgate_upstream_errors_total{kind}`
    UpstreamError(&'static str),
    /// `idgate_sign_outs_total{kind}`
    SignOut(&'static str),
    /// `idgate_refreshes_total{result}`
    Refresh(&'static str),
    /// `idgate_session_store_errors_total{op}`
    StoreError(&'static str),
    /// `idgate_bearer_total{result}`: `accepted`, or why a bearer token was refused.
    Bearer(&'static str),
    /// `idgate_preserved_posts_total{result}`: form posts kept over a re-login (`kept`, `resumed`, `lost`, or the
    /// refusal's reason).
    PreservedPost(&'static str),
}

impl Event {
    fn name_and_label(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Event::Login(v) => ("idgate_logins_total", "result", v),
            Event::Rejection(v) => ("idgate_id_token_rejections_total", "reason", v),
            Event::JwksFetch(v) => ("idgate_jwks_fetches_total", "result", v),
            Event::UpstreamError(v) => ("idgate_upstream_errors_total", "kind", v),
            Event::SignOut(v) => ("idgate_sign_outs_total", "kind", v),
            Event::Refresh(v) => ("idgate_refreshes_total", "result", v),
            Event::StoreError(v) => ("idgate_session_store_errors_total", "op", v),
            Event::Bearer(v) => ("idgate_bearer_total", "result", v),
            Event::PreservedPost(v) => ("idgate_preserved_posts_total", "result", v),
        }
    }
}

/// What became of a recorded span (`idgate_trace_spans_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanOutcome {
    /// Accepted by the collector.
    Exported = 0,
    /// Not queued: the exporter's queue was full.
    Dropped = 1,
    /// Sent in a batch the collector did not accept (or could not be reached).
    Failed = 2,
}

/// All of idgate's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    by_class: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    upstream_latency_count: AtomicU64,
    upstream_latency_sum_micros: AtomicU64,
    open_connections: AtomicI64,
    kept_upstream: Arc<AtomicUsize>,
    events: Mutex<BTreeMap<Event, u64>>,
    /// `[[providers]]`: each provider's own events, rendered with a `provider` label (names come from the
    /// configuration, never from a request).
    providers: Mutex<Vec<(String, Arc<Metrics>)>>,
    /// Identity assertions signed, and handed out again from the cache (hot path: atomics).
    assertions_signed: AtomicU64,
    assertion_cache_hits: AtomicU64,
    /// Spans by [`SpanOutcome`] (hot path when the queue is full: atomics).
    trace_spans: [AtomicU64; 3],
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_micros.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Time to the upstream's response head.
    pub fn upstream_latency(&self, elapsed: Duration) {
        self.upstream_latency_count.fetch_add(1, Relaxed);
        self.upstream_latency_sum_micros.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connections(&self, delta: i64) {
        self.open_connections.fetch_add(delta, Relaxed);
    }

    /// The count of upstream connections kept by client connections, kept up to date by the forwarder.
    pub fn kept_upstream(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.kept_upstream)
    }

    /// Counts one identity assertion written: `cached` when it came from the cache, else newly signed.
    pub fn assertion(&self, cached: bool) {
        let counter = if cached { &self.assertion_cache_hits } else { &self.assertions_signed };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts `n` spans that came to `outcome`.
    pub fn trace_spans(&self, outcome: SpanOutcome, n: u64) {
        self.trace_spans[outcome as usize].fetch_add(n, Relaxed);
    }

    /// Spans counted as `outcome` so far.
    pub fn trace_spans_count(&self, outcome: SpanOutcome) -> u64 {
        self.trace_spans[outcome as usize].load(Relaxed)
    }

    /// Counts one event.
    pub fn event(&self, e: Event) {
        if let Ok(mut map) = self.events.lock() {
            *map.entry(e).or_default() += 1;
        }
    }

    /// The metrics of provider `name` (made once; a reload that keeps or re-adds the name gets the same): its
    /// events are rendered here with `provider="name"`.
    pub fn for_provider(&self, name: &str) -> Arc<Metrics> {
        let Ok(mut list) = self.providers.lock() else { return Arc::new(Metrics::default()) };
        if let Some((_, m)) = list.iter().find(|(n, _)| n == name) {
            return Arc::clone(m);
        }
        let m = Arc::new(Metrics::default());
        list.push((name.to_owned(), Arc::clone(&m)));
        m
    }

    /// Every event counter: this sink's (no provider label) and each provider's, ordered by metric name.
    fn event_rows(&self) -> Vec<(&'static str, Option<String>, &'static str, &'static str, u64)> {
        let mut rows = Vec::new();
        if let Ok(map) = self.events.lock() {
            for (e, v) in map.iter() {
                let (name, label, value) = e.name_and_label();
                rows.push((name, None, label, value, *v));
            }
        }
        let providers: Vec<(String, Arc<Metrics>)> = self.providers.lock().map(|l| l.clone()).unwrap_or_default();
        for (provider, m) in providers {
            if let Ok(map) = m.events.lock() {
                for (e, v) in map.iter() {
                    let (name, label, value) = e.name_and_label();
                    rows.push((name, Some(provider.clone()), label, value, *v));
                }
            }
        }
        rows.sort();
        rows
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP idgate_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE idgate_requests_total counter\n");
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(out, "idgate_requests_total{{class=\"{}xx\"}} {}", i + 1, c.load(Relaxed));
        }
        out.push_str("# HELP idgate_request_duration_seconds Time from request head to response head.\n");
        out.push_str("# TYPE idgate_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (b, c) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "idgate_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(out, "idgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ =
            writeln!(out, "idgate_request_duration_seconds_sum {sum}\nidgate_request_duration_seconds_count {count}");
        out.push_str("# TYPE idgate_upstream_duration_seconds summary\n");
        let up_sum = self.upstream_latency_sum_micros.load(Relaxed) as f64 / 1e6;
        let up_count = self.upstream_latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "idgate_upstream_duration_seconds_sum {up_sum}\nidgate_upstream_duration_seconds_count {up_count}"
        );
        out.push_str("# TYPE idgate_open_connections gauge\n");
        let _ = writeln!(out, "idgate_open_connections {}", self.open_connections.load(Relaxed));
        out.push_str("# HELP idgate_upstream_kept_connections Upstream connections kept by client connections.\n");
        out.push_str("# TYPE idgate_upstream_kept_connections gauge\n");
        let _ = writeln!(out, "idgate_upstream_kept_connections {}", self.kept_upstream.load(Relaxed));
        out.push_str("# HELP idgate_assertions_signed_total Identity assertions signed.\n");
        out.push_str("# TYPE idgate_assertions_signed_total counter\n");
        let _ = writeln!(out, "idgate_assertions_signed_total {}", self.assertions_signed.load(Relaxed));
        out.push_str("# HELP idgate_assertion_cache_hits_total Identity assertions reused from the cache.\n");
        out.push_str("# TYPE idgate_assertion_cache_hits_total counter\n");
        let _ = writeln!(out, "idgate_assertion_cache_hits_total {}", self.assertion_cache_hits.load(Relaxed));
        if self.trace_spans.iter().any(|c| c.load(Relaxed) > 0) {
            out.push_str("# HELP idgate_trace_spans_total Spans recorded for OTLP export, by what became of them.\n");
            out.push_str("# TYPE idgate_trace_spans_total counter\n");
            for (result, c) in ["exported", "dropped", "failed"].iter().zip(&self.trace_spans) {
                let _ = writeln!(out, "idgate_trace_spans_total{{result=\"{result}\"}} {}", c.load(Relaxed));
            }
        }
        let mut last = "";
        for (name, provider, label, value, v) in self.event_rows() {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            match provider {
                Some(p) => {
                    let _ = writeln!(out, "{name}{{provider=\"{p}\",{label}=\"{value}\"}} {v}");
                }
                None => {
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.request(200, Duration::from_micros(300));
        m.request(502, Duration::from_millis(30));
        m.event(Event::Login("success"));
        m.event(Event::Login("success"));
        let text = m.render();
        assert!(text.contains("idgate_requests_total{class=\"2xx\"} 1"));
        assert!(text.contains("idgate_requests_total{class=\"5xx\"} 1"));
        assert!(text.contains("idgate_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("idgate_request_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("idgate_logins_total{result=\"success\"} 2"));
    }

    #[test]
    fn provider_events_carry_the_provider_label() {
        let m = Metrics::default();
        m.event(Event::Login("unknown_state"));
        m.for_provider("staff").event(Event::Login("success"));
        m.for_provider("partners").event(Event::JwksFetch("failure"));
        m.for_provider("staff").event(Event::Login("success"));
        let text = m.render();
        assert!(text.contains("idgate_logins_total{provider=\"staff\",result=\"success\"} 2"), "{text}");
        assert!(text.contains("idgate_jwks_fetches_total{provider=\"partners\",result=\"failure\"} 1"), "{text}");
        assert!(text.contains("idgate_logins_total{result=\"unknown_state\"} 1"), "{text}");
        assert_eq!(text.matches("# TYPE idgate_logins_total counter").count(), 1, "{text}");
    }
}
