//! OpenTelemetry spans: one per request on a listener, and a child span for each call to the issuer or the session
//! store made while serving it. The request span rides in a task-local ([`within`]), so the issuer and store code
//! record children without a parameter threaded through every step; the upstream's `traceparent` names it
//! ([`super::trace::propagate`]).
//!
//! With `[telemetry]` off no [`Tracer`] is ever made, and every function here returns after one relaxed load of a
//! process-wide flag: no task-local lookup, no allocation, no clock read, no lock.
//!
//! What a span may carry is fixed here: static names, numbers, statuses, idgate's request id, and the user only as
//! a keyed hash of `sub` ([`set_user`]). Never a token, a cookie, a header value or a claim.

use std::{
    borrow::Cow,
    hash::BuildHasher,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use aws_lc_rs::{hkdf, hmac};
use tokio::sync::{Notify, mpsc};

use super::{metrics::Metrics, trace::Parent};
use crate::config::Secret;

tokio::task_local! {
    static CURRENT: Arc<Active>;
}

/// Set once a [`Tracer`] exists in the process: until then no request can be traced, and the hooks skip even the
/// task-local lookup.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Calls `f` with the request span being served, if any.
fn current<R>(f: impl FnOnce(&Arc<Active>) -> R) -> Option<R> {
    if !TRACING.load(Ordering::Relaxed) {
        return None;
    }
    CURRENT.try_with(f).ok()
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(v: &'static str) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// A span's place in its trace (OTLP's `SpanKind`): a request idgate serves, or a call it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A finished span, as the exporter receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// The W3C `tracestate` a trusted peer sent with its `traceparent` (request spans only).
    pub trace_state: Option<String>,
    pub flags: u8,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// The span failed (a 5xx answer; an issuer or store call that failed).
    pub error: bool,
}

/// The bounded queue of finished spans between the request path and the exporter ([`queue`]): pushing never waits,
/// and never wakes the exporter per span; it drains on its interval, or once a batch's worth waits (one notification).
#[derive(Debug)]
pub struct Queue {
    spans: mpsc::Sender<Finished>,
    full: Arc<Notify>,
    batch: usize,
}

/// The exporter's end of the queue.
#[derive(Debug)]
pub struct Queued {
    spans: mpsc::Receiver<Finished>,
    full: Arc<Notify>,
}

/// A queue of `capacity` spans whose consumer is told when `batch` of them wait.
pub fn queue(capacity: usize, batch: usize) -> (Queue, Queued) {
    let (spans, received) = mpsc::channel(capacity.max(1));
    let full = Arc::new(Notify::new());
    (Queue { spans, full: Arc::clone(&full), batch: batch.max(1) }, Queued { spans: received, full })
}

impl Queue {
    /// Queues `span`; false when the queue is full (the span is dropped).
    fn push(&self, span: Finished) -> bool {
        if self.spans.try_send(span).is_err() {
            return false;
        }
        if self.spans.max_capacity() - self.spans.capacity() >= self.batch {
            self.full.notify_one();
        }
        true
    }
}

impl Queued {
    /// Resolves once a batch's worth waits (or was waiting since the last call).
    pub async fn batch_waiting(&self) {
        self.full.notified().await;
    }

    /// Moves up to `max` waiting spans into `batch` (never waits). False once every sender is gone and nothing is
    /// left.
    pub fn take(&mut self, batch: &mut Vec<Finished>, max: usize) -> bool {
        while batch.len() < max {
            match self.spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }
}

/// Starts request spans and hands finished spans to the exporter's bounded queue (a full queue drops the span and
/// counts it; nothing on the request path ever waits for the exporter).
pub struct Tracer {
    queue: Queue,
    /// Keys the hash of `sub` ([`set_user`]): derived from the session secret, so replicas sharing it agree.
    sub_key: hmac::Key,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").finish_non_exhaustive()
    }
}

/// The span of the request being served: its context, and what the request records on it until it ends (when the
/// last handle to it is dropped).
#[derive(Debug)]
pub struct Active {
    tracer: Arc<Tracer>,
    context: Parent,
    parent_span_id: Option<[u8; 8]>,
    trace_state: Option<String>,
    start_unix_nanos: u64,
    started: Instant,
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    method: String,
    kind: &'static str,
    attributes: Vec<(&'static str, Value)>,
    error: bool,
}

impl Tracer {
    /// A tracer sending to `queue`.
    pub fn new(queue: Queue, session_secret: &Secret, metrics: Arc<Metrics>) -> Self {
        TRACING.store(true, Ordering::Relaxed);
        Self { queue, sub_key: sub_key(session_secret), metrics }
    }

    /// Starts the span of a request with `method`: a child of `incoming` (a trusted peer's `traceparent` and its
    /// `tracestate`) in that trace, else the root of a new trace. A parent that did not sample the trace is
    /// followed: the span is propagated but not exported.
    pub fn request(self: &Arc<Self>, method: &str, incoming: Option<(Parent, Option<String>)>) -> Arc<Active> {
        let span_id = fresh_span_id();
        let (context, parent_span_id, trace_state) = match incoming {
            Some((p, state)) => (Parent { span_id, flags: p.flags & SAMPLED, ..p }, Some(p.span_id), state),
            None => (Parent { trace_id: fresh_trace_id(), span_id, flags: SAMPLED }, None, None),
        };
        Arc::new(Active {
            tracer: Arc::clone(self),
            context,
            parent_span_id,
            trace_state,
            start_unix_nanos: crate::clock::unix_nanos(),
            started: Instant::now(),
            record: Mutex::new(Record {
                method: method.to_owned(),
                kind: "request",
                attributes: Vec::with_capacity(8),
                error: false,
            }),
        })
    }

    fn send(&self, span: Finished) {
        if !self.queue.push(span) {
            self.metrics.trace_spans(super::metrics::SpanOutcome::Dropped, 1);
        }
    }

    /// The hash of `sub` spans carry: HMAC-SHA-256 under a key derived from the session secret, its first 128 bits
    /// in hex. Stable across replicas and restarts; not reversible by guessing `sub` without the secret.
    pub fn sub_hash(&self, sub: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.sub_key, sub.as_bytes());
        let mut out = String::with_capacity(32);
        for b in &tag.as_ref()[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

/// The W3C sampled flag.
const SAMPLED: u8 = 0x01;

impl Active {
    /// The context the upstream's `traceparent` carries: this span as the parent.
    pub fn context(&self) -> Parent {
        self.context
    }

    fn sampled(&self) -> bool {
        self.context.flags & SAMPLED != 0
    }

    fn with_record(&self, f: impl FnOnce(&mut Record)) {
        if let Ok(mut r) = self.record.lock() {
            f(&mut r);
        }
    }

    /// Records the answer's status (5xx marks the span failed).
    pub fn status(&self, status: u16) {
        self.with_record(|r| {
            r.attributes.push(("http.response.status_code", status.into()));
            r.error = status >= 500;
        });
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.sampled() {
            return;
        }
        let record = self.record.get_mut().map(std::mem::take).unwrap_or_default();
        let name = format!("{} {}", record.method, record.kind);
        let mut attributes = record.attributes;
        attributes.push(("idgate.route.kind", Value::from(record.kind)));
        attributes.push(("http.request.method", Value::from(record.method)));
        self.tracer.send(Finished {
            trace_id: self.context.trace_id,
            span_id: self.context.span_id,
            parent_span_id: self.parent_span_id,
            trace_state: self.trace_state.take(),
            flags: self.context.flags,
            name: Cow::Owned(name),
            kind: Kind::Server,
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos: self.start_unix_nanos + self.started.elapsed().as_nanos() as u64,
            attributes,
            error: record.error,
        });
    }
}

/// Runs `fut` inside `span`: the issuer and store calls it makes become the span's children, and
/// [`super::trace::propagate`] names it to the upstream.
pub async fn within<F: Future>(span: Arc<Active>, fut: F) -> F::Output {
    CURRENT.scope(span, fut).await
}

/// The current request span's context, when one is being traced.
pub fn context() -> Option<Parent> {
    current(|a| a.context)
}

/// Names what the current request is (`proxy`, `forward_auth`, `ext_authz_grpc`, …): the span's
/// `idgate.route.kind` and the second word of its name.
pub fn kind(kind: &'static str) {
    current(|a| a.with_record(|r| r.kind = kind));
}

/// Sets an attribute on the current request span; `value` is only made when one is being traced.
pub fn set<V: Into<Value>>(key: &'static str, value: impl FnOnce() -> V) {
    current(|a| {
        if a.sampled() {
            let v = value().into();
            a.with_record(|r| r.attributes.push((key, v)));
        }
    });
}

/// The time now when a request is being traced (to time a step with), else `None` without reading the clock.
pub fn timer() -> Option<Instant> {
    current(|a| a.sampled().then(Instant::now)).flatten()
}

/// Records who the request is for: `idgate.user.sub_hash`, the keyed hash of `sub` ([`Tracer::sub_hash`]), never
/// `sub` itself.
pub fn set_user(sub: &str) {
    current(|a| {
        if a.sampled() && !sub.is_empty() {
            let hash = a.tracer.sub_hash(sub);
            a.with_record(|r| r.attributes.push(("idgate.user.sub_hash", hash.into())));
        }
    });
}

/// A client span under the current request span (a call to the issuer or the session store); it ends when
/// dropped, so a call abandoned half-way (the client went away) still ends its span. Inert outside a traced
/// request.
#[derive(Debug)]
pub struct Child(Option<ChildSpan>);

#[derive(Debug)]
struct ChildSpan {
    parent: Arc<Active>,
    span_id: [u8; 8],
    name: &'static str,
    start_unix_nanos: u64,
    started: Instant,
    attributes: Vec<(&'static str, Value)>,
    error: bool,
}

impl Child {
    /// Starts a child span named `name` (static: `oidc token`, `session_store get`).
    pub fn start(name: &'static str) -> Child {
        Child(current(|a| a.sampled().then(|| ChildSpan::new(Arc::clone(a), name))).flatten())
    }

    /// Whether this span records anything (false outside a traced request): callers skip building values.
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Sets an attribute; `value` is only made when the span records.
    pub fn set<V: Into<Value>>(&mut self, key: &'static str, value: impl FnOnce() -> V) {
        if let Some(c) = &mut self.0 {
            c.attributes.push((key, value().into()));
        }
    }

    /// Marks the call failed.
    pub fn fail(&mut self) {
        if let Some(c) = &mut self.0 {
            c.error = true;
        }
    }
}

impl ChildSpan {
    fn new(parent: Arc<Active>, name: &'static str) -> Self {
        Self {
            parent,
            span_id: fresh_span_id(),
            name,
            start_unix_nanos: crate::clock::unix_nanos(),
            started: Instant::now(),
            attributes: Vec::with_capacity(4),
            error: false,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(c) = self.0.take() else { return };
        let p = &c.parent;
        p.tracer.send(Finished {
            trace_id: p.context.trace_id,
            span_id: c.span_id,
            parent_span_id: Some(p.context.span_id),
            trace_state: None,
            flags: p.context.flags,
            name: Cow::Borrowed(c.name),
            kind: Kind::Client,
            start_unix_nanos: c.start_unix_nanos,
            end_unix_nanos: c.start_unix_nanos + c.started.elapsed().as_nanos() as u64,
            attributes: c.attributes,
            error: c.error,
        });
    }
}

/// A fresh, non-zero span id.
pub fn fresh_span_id() -> [u8; 8] {
    fresh().to_be_bytes()
}

/// A fresh, non-zero trace id.
fn fresh_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&fresh().to_be_bytes());
    id[8..].copy_from_slice(&fresh().to_be_bytes());
    id
}

/// 64 unpredictable, non-zero bits: a process-wide counter through SipHash keyed once from the OS (as request ids
/// are made: unique within the process, random-looking outside it, and without a trip to the system's random
/// generator per span). Trace and span ids locate spans; they guard nothing.
fn fresh() -> u64 {
    static KEY: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let v = KEY.hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
        if v != 0 {
            return v;
        }
    }
}

/// The key of [`Tracer::sub_hash`]: HKDF-SHA-256 of the session secret, for this purpose only.
fn sub_key(secret: &Secret) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"idgate trace").extract(secret.expose().as_bytes());
    #[allow(clippy::expect_used, reason = "static: 32 bytes is a valid HKDF-SHA256 output length")]
    let okm = prk.expand(&[b"idgate trace subject hash"], hmac::HMAC_SHA256).expect("HKDF output length is valid");
    hmac::Key::from(okm)
}

#[cfg(test)]
mod tests;
