use super::*;

fn tracer(capacity: usize) -> (Arc<Tracer>, Queued, Arc<Metrics>) {
    let (tx, rx) = queue(capacity, 512);
    let metrics = Arc::new(Metrics::default());
    (Arc::new(Tracer::new(tx, &Secret::new("a-session-secret-a-session-secret"), Arc::clone(&metrics))), rx, metrics)
}

fn drain(rx: &mut Queued) -> Vec<Finished> {
    let mut out = Vec::new();
    rx.take(&mut out, usize::MAX);
    out
}

#[tokio::test]
async fn outside_a_traced_request_nothing_is_recorded() {
    assert_eq!(context(), None);
    assert_eq!(timer(), None);
    kind("proxy");
    set("k", || -> i64 { unreachable!("a value is never made when nothing is traced") });
    set_user("alice");
    let mut child = Child::start("oidc token");
    assert!(!child.is_recording());
    child.set("k", || -> i64 { unreachable!() });
}

#[tokio::test]
async fn a_request_span_and_its_children_share_the_trace() {
    let (tracer, mut rx, _) = tracer(16);
    let incoming = Parent { trace_id: [7; 16], span_id: [8; 8], flags: 1 };
    let span = tracer.request("GET", Some((incoming, Some("v=1".into()))));
    let ours = span.context();
    within(Arc::clone(&span), async {
        assert_eq!(context(), Some(ours));
        kind("proxy");
        set_user("alice");
        set("idgate.upstream.duration_ms", || 1.5);
        let mut c = Child::start("oidc token");
        c.set("idgate.issuer.endpoint", || "token endpoint");
        c.fail();
    })
    .await;
    assert!(drain(&mut rx).len() == 1, "the child ends first; the request span ends with its last handle");
    span.status(200);
    drop(span);
    let spans = drain(&mut rx);
    let request = &spans[0];
    assert_eq!((request.trace_id, request.parent_span_id), ([7; 16], Some([8; 8])));
    assert_eq!(request.span_id, ours.span_id);
    assert_ne!(request.span_id, [8; 8]);
    assert_eq!(request.trace_state.as_deref(), Some("v=1"));
    assert_eq!(request.name, "GET proxy");
    assert_eq!(request.kind, Kind::Server);
    assert!(!request.error);
    let attr = |k: &str| request.attributes.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    assert_eq!(attr("idgate.route.kind"), Some("proxy".into()));
    assert_eq!(attr("http.response.status_code"), Some(Value::Int(200)));
    assert_eq!(attr("idgate.user.sub_hash"), Some(tracer.sub_hash("alice").into()));
    assert!(request.end_unix_nanos >= request.start_unix_nanos);
}

#[tokio::test]
async fn a_child_names_the_request_span_as_its_parent() {
    let (tracer, mut rx, _) = tracer(16);
    let span = tracer.request("POST", None);
    let ours = span.context();
    within(Arc::clone(&span), async {
        let _c = Child::start("session_store get");
    })
    .await;
    let child = drain(&mut rx).remove(0);
    assert_eq!((child.trace_id, child.parent_span_id), (ours.trace_id, Some(ours.span_id)));
    assert_eq!((child.kind, child.name.as_ref()), (Kind::Client, "session_store get"));
    drop(span);
    let request = drain(&mut rx).remove(0);
    assert_eq!(request.parent_span_id, None, "no incoming trace: a new one");
    assert_eq!(request.flags, SAMPLED);
}

#[tokio::test]
async fn an_unsampled_parent_is_followed_not_exported() {
    let (tracer, mut rx, _) = tracer(16);
    let span = tracer.request("GET", Some((Parent { trace_id: [7; 16], span_id: [8; 8], flags: 0 }, None)));
    within(Arc::clone(&span), async {
        assert_eq!(context().map(|c| (c.trace_id, c.flags)), Some(([7; 16], 0)), "still propagated");
        assert!(!Child::start("oidc jwks").is_recording());
    })
    .await;
    drop(span);
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let (tracer, mut rx, metrics) = tracer(2);
    for _ in 0..5 {
        drop(tracer.request("GET", None));
    }
    assert_eq!(drain(&mut rx).len(), 2);
    assert_eq!(metrics.trace_spans_count(crate::telemetry::metrics::SpanOutcome::Dropped), 3);
}

#[test]
fn the_sub_hash_is_keyed_by_the_session_secret() {
    let (a, _, _) = tracer(1);
    let (tx, _rx) = queue(1, 1);
    let b = Tracer::new(tx, &Secret::new("another-secret-another-secret-another"), Arc::new(Metrics::default()));
    assert_eq!(a.sub_hash("alice"), a.sub_hash("alice"));
    assert_eq!(a.sub_hash("alice").len(), 32);
    assert_ne!(a.sub_hash("alice"), a.sub_hash("bob"));
    assert_ne!(a.sub_hash("alice"), b.sub_hash("alice"), "another deployment, another hash");
    assert!(!a.sub_hash("alice").contains("alice"));
}

#[tokio::test]
async fn a_batchs_worth_wakes_the_exporter_and_the_end_is_seen() {
    let (tx, mut rx) = queue(16, 3);
    let tracer = Arc::new(Tracer::new(tx, &Secret::new("s".repeat(32)), Arc::default()));
    drop(tracer.request("GET", None));
    drop(tracer.request("GET", None));
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), rx.batch_waiting()).await;
    assert!(waiting.is_err(), "two spans are not a batch");
    drop(tracer.request("GET", None));
    tokio::time::timeout(std::time::Duration::from_secs(1), rx.batch_waiting()).await.expect("a batch waits");
    let mut batch = Vec::new();
    assert!(rx.take(&mut batch, 2), "still open");
    assert_eq!(batch.len(), 2, "no more than asked");
    drop(tracer);
    assert!(!rx.take(&mut batch, 10), "every sender gone");
    assert_eq!(batch.len(), 3);
}

#[test]
fn fresh_ids_do_not_repeat() {
    let ids: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| fresh_span_id()).collect();
    assert_eq!(ids.len(), 10_000);
    assert_ne!(fresh_trace_id()[..8], fresh_trace_id()[8..]);
}
