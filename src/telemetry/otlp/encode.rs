//! Finished spans as an OTLP `ExportTraceServiceRequest` (the messages of the `opentelemetry-proto` crate): one
//! resource (idgate's `service.name` and version), one instrumentation scope, the spans as recorded.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status, span::SpanKind, status::StatusCode},
};
use prost::Message;

use crate::telemetry::span::{Finished, Kind, Value};

/// idgate's version, in the resource and the scope.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The protobuf body of one export of `spans` for the service `service_name`.
pub fn body(service_name: &str, spans: &[Finished]) -> Vec<u8> {
    request(service_name, spans).encode_to_vec()
}

/// The export request of `spans`.
pub fn request(service_name: &str, spans: &[Finished]) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            attribute("service.name", &Value::Str(service_name.to_owned().into())),
            attribute("service.version", &Value::Str(VERSION.into())),
        ],
        ..Resource::default()
    };
    let scope =
        InstrumentationScope { name: "idgate".into(), version: VERSION.into(), ..InstrumentationScope::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans: spans.iter().map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn span(s: &Finished) -> Span {
    // Whether the parent is remote is known: only a request span's parent (a trusted peer's span) is.
    let remote = s.kind == Kind::Server && s.parent_span_id.is_some();
    let mut flags = u32::from(s.flags) | SpanFlags::ContextHasIsRemoteMask as u32;
    if remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone().unwrap_or_default(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: s.name.to_string(),
        kind: match s.kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
        } as i32,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.end_unix_nanos.max(s.start_unix_nanos),
        attributes: s.attributes.iter().map(|(k, v)| attribute(k, v)).collect(),
        status: s.error.then(|| Status { code: StatusCode::Error as i32, message: String::new() }),
        ..Span::default()
    }
}

fn attribute(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Float(f) => any_value::Value::DoubleValue(*f),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn spans_round_trip_through_the_protobuf_messages() {
        let server = Finished {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            trace_state: Some("v=1".into()),
            flags: 1,
            name: Cow::Borrowed("GET proxy"),
            kind: Kind::Server,
            start_unix_nanos: 10,
            end_unix_nanos: 20,
            attributes: vec![("http.response.status_code", Value::Int(502)), ("idgate.route.kind", "proxy".into())],
            error: true,
        };
        let client = Finished {
            span_id: [4; 8],
            parent_span_id: Some([2; 8]),
            kind: Kind::Client,
            error: false,
            ..server.clone()
        };
        let bytes = body("gate", &[server, client]);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &decoded.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        assert_eq!(service.value.as_ref().unwrap().value, Some(any_value::Value::StringValue("gate".into())));
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans[0].trace_id, vec![1; 16]);
        assert_eq!(spans[0].parent_span_id, vec![3; 8]);
        assert_eq!(spans[0].trace_state, "v=1");
        assert_eq!(spans[0].kind, SpanKind::Server as i32);
        assert_eq!(spans[0].flags, 0x301, "sampled, with a remote parent");
        assert_eq!(spans[0].status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(spans[0].attributes[0].value.as_ref().unwrap().value, Some(any_value::Value::IntValue(502)));
        assert_eq!(spans[1].kind, SpanKind::Client as i32);
        assert_eq!(spans[1].flags, 0x101, "a local parent");
        assert_eq!(spans[1].status, None);
    }
}
