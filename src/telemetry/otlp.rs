//! The OTLP/HTTP exporter, off the request path: finished spans arrive on a bounded queue ([`super::span::queue`]:
//! what does not fit is dropped and counted, nothing waits), and one background task drains it every `interval`,
//! or as soon as a batch's worth waits, and POSTs each batch of up to `batch` spans as an `ExportTraceServiceRequest` in protobuf
//! (`Content-Type: application/x-protobuf`) with idgate's own HTTP client ([`crate::client`]: rustls on aws-lc-rs).
//!
//! A collector that is down or refuses costs the batch (counted as `failed`) and one warning a minute at most;
//! requests never notice. Batches are not retried: a span is worth less than the memory to keep it.

pub mod encode;

use std::{sync::Arc, time::Duration};

use http::{Request, header};
use tokio::time::Instant;

use super::{
    metrics::{Metrics, SpanOutcome},
    span::{Finished, Queued},
};
use crate::{body, client::HttpClient, config::telemetry::OtlpSettings};

/// Longest collector answer read (and thrown away, so its connection can be reused).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// At most one warning about failed exports per this long.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why one export failed. `Display` names no header value (they may be credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the collector could not be reached: {0}")]
    Unreachable(String),
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the collector answered HTTP {0}")]
    Status(u16),
    #[error("the export request could not be built: {0}")]
    Request(String),
}

/// The background half of tracing: reads the queue, batches, sends.
pub struct Exporter {
    queue: Queued,
    settings: OtlpSettings,
    http: HttpClient,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// An exporter of what arrives on `queue`, to `settings.endpoint`.
    pub fn new(queue: Queued, settings: OtlpSettings, http: HttpClient, metrics: Arc<Metrics>) -> Self {
        Self { queue, settings, http, metrics }
    }

    /// Runs until every sender is gone (the tracer dropped), sending what is left then.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.settings.batch);
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warnings = Warnings::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.queue.batch_waiting() => {}
            }
            // Everything waiting, a batch at a time.
            loop {
                let open = self.queue.take(&mut batch, self.settings.batch);
                let full = batch.len() >= self.settings.batch;
                self.flush(&mut batch, &mut warnings).await;
                if !open {
                    return;
                }
                if !full {
                    break;
                }
            }
        }
    }

    async fn flush(&self, batch: &mut Vec<Finished>, warnings: &mut Warnings) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = encode::body(&self.settings.service_name, batch);
        batch.clear();
        match self.export(body).await {
            Ok(()) => self.metrics.trace_spans(SpanOutcome::Exported, n),
            Err(e) => {
                self.metrics.trace_spans(SpanOutcome::Failed, n);
                if let Some(suppressed) = warnings.due(Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        endpoint = %self.settings.endpoint,
                        spans = n,
                        failed_exports_since_last_warning = suppressed,
                        "OTLP export failed; its spans are dropped (this warning repeats once a minute at most)"
                    );
                }
            }
        }
    }

    /// POSTs one body; any 2xx is success (a partial success still took the batch).
    async fn export(&self, body: Vec<u8>) -> Result<(), ExportError> {
        let mut req = Request::post(self.settings.endpoint.as_str())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, concat!("idgate/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &self.settings.headers {
            req = req.header(name, value);
        }
        let req = req.body(body::full(body)).map_err(|e| ExportError::Request(e.to_string()))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| ExportError::Unreachable(e.to_string()))?;
            let status = resp.status();
            let _ = body::collect_limited(resp.into_body(), MAX_ANSWER_BYTES).await;
            if status.is_success() { Ok(()) } else { Err(ExportError::Status(status.as_u16())) }
        };
        tokio::time::timeout(self.settings.timeout, exchange)
            .await
            .map_err(|_| ExportError::Timeout(self.settings.timeout))?
    }
}

/// The warning limiter: the first failure warns, then one a [`WARN_EVERY`] at most, counting those in between.
#[derive(Debug, Default)]
struct Warnings {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warnings {
    /// `Some(failures not warned about since the last warning)` when a failure at `now` may warn.
    fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_warn_once_a_minute_at_most() {
        let mut w = Warnings::default();
        let t0 = Instant::now();
        assert_eq!(w.due(t0), Some(0), "the first failure warns");
        for s in 1..60 {
            assert_eq!(w.due(t0 + Duration::from_secs(s)), None, "{s} s later");
        }
        assert_eq!(w.due(t0 + WARN_EVERY), Some(59), "a minute later, with the count of those not warned about");
        assert_eq!(w.due(t0 + WARN_EVERY + Duration::from_secs(1)), None);
    }
}
