"""An independent OTLP/HTTP decoder for idgate's exported traces: OpenTelemetry's own Python protos (PyPI
opentelemetry-proto, installed into tests/otlp/.venv by scripts/deps.sh), none of idgate's types or encoder. Reads
a JSON list of base64 request bodies on stdin (each one ExportTraceServiceRequest), prints a JSON list of spans:

{"resource": {attr: value}, "scope": "name", "trace_id": hex, "span_id": hex, "parent_span_id": hex or "",
 "trace_state": str, "flags": int, "name": str, "kind": "SPAN_KIND_SERVER", "start": ns, "end": ns,
 "attributes": {key: value}, "status": "STATUS_CODE_UNSET"}
"""

import base64
import json
import sys

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def main():
    out = []
    for body in json.load(sys.stdin):
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(base64.b64decode(body))
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(
                        {
                            "resource": attrs(rs.resource.attributes),
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "trace_state": s.trace_state,
                            "flags": s.flags,
                            "name": s.name,
                            "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "attributes": attrs(s.attributes),
                            "status": trace_pb2.Status.StatusCode.Name(s.status.code),
                        }
                    )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
