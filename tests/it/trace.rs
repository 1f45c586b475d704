//! W3C Trace Context through the proxy: a trusted proxy's trace continues to the upstream with idgate's own span;
//! a client's trace headers never reach it.

use http::StatusCode;
use idgate::config::AuthMode;

use crate::harness::{Browser, TestGate, route};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_trusted_proxys_trace_continues_to_the_upstream_and_a_clients_does_not() {
    for trusted in [true, false] {
        let gate = TestGate::builder()
            .settings(move |s| {
                s.routes = vec![route("/", AuthMode::Public)];
                if trusted {
                    s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
                }
            })
            .spawn()
            .await;
        let b = Browser::new().api();
        let r = b.get_with(&format!("{}/x", gate.base), &[("traceparent", PARENT), ("tracestate", "v=1")]).await;
        assert_eq!(r.status, StatusCode::OK);
        let sent = r.upstream_header("traceparent");
        if trusted {
            let sent = sent.expect("the trace continues");
            let fields: Vec<&str> = sent.split('-').collect();
            assert_eq!(fields[0], "00");
            assert_eq!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736", "the same trace");
            assert_ne!(fields[2], "00f067aa0ba902b7", "idgate's own span is the upstream's parent");
            assert_eq!(fields[2].len(), 16);
            assert_eq!(fields[3], "01", "sampled stays sampled");
            assert_eq!(r.upstream_header("tracestate").as_deref(), Some("v=1"));
            // An invalid traceparent is dropped with its tracestate.
            let r = b.get_with(&format!("{}/x", gate.base), &[("traceparent", "00-zz"), ("tracestate", "v=1")]).await;
            assert_eq!(r.upstream_header("traceparent"), None);
            assert_eq!(r.upstream_header("tracestate"), None);
        } else {
            assert_eq!(sent, None, "a client cannot choose the trace: {}", r.text());
            assert_eq!(r.upstream_header("tracestate"), None);
        }
        gate.shutdown().await;
    }
}
