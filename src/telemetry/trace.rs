//! W3C Trace Context on the proxy hop: a trace a trusted proxy started continues to the upstream with idgate's
//! own span between them (the same trace id and flags, a fresh parent id); anything else — a client's own trace
//! headers, or an invalid `traceparent` — is removed, so a client cannot choose the trace its request joins.
//! With `[telemetry]` on, idgate's span is the request span it exports ([`super::span`]), and a request without a
//! trace to continue starts one; with it off, the span id is a fresh one nobody records.

use http::{HeaderMap, HeaderValue};

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header (vendor data, passed on as received with a valid `traceparent`).
pub const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent`: trace id, parent (span) id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl Parent {
    /// Parses a `traceparent` value by the W3C rules: version `00` exactly (or a later version, read as `00` on
    /// its first four fields); lowercase hex; neither id all zeros; version `ff` invalid.
    pub fn parse(value: &[u8]) -> Option<Parent> {
        let text = std::str::from_utf8(value).ok()?;
        let version = text.get(..2)?;
        let fields = match version {
            "00" if text.len() == 55 => text,
            "ff" => return None,
            "00" => return None,
            _ if text.len() == 55 || (text.len() > 55 && text.as_bytes()[55] == b'-') => &text[..55],
            _ => return None,
        };
        let mut parts = fields.split('-');
        let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, out: &mut [u8]| -> Option<()> {
            if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return None;
            }
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
            }
            Some(())
        };
        let (mut trace_id, mut span_id, mut flag) = ([0u8; 16], [0u8; 8], [0u8; 1]);
        hex(version, &mut [0u8; 1])?;
        hex(trace, &mut trace_id)?;
        hex(span, &mut span_id)?;
        hex(flags, &mut flag)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Parent { trace_id, span_id, flags: flag[0] })
    }

    /// The `traceparent` value (version `00`).
    pub fn render(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

/// The trace context a request continues: exactly one valid `traceparent` from a trusted peer, with its
/// `tracestate` (several fields joined by `,`, as W3C allows). `None` for anything else.
pub fn accepted(headers: &HeaderMap, trusted: bool) -> Option<(Parent, Option<String>)> {
    if !trusted {
        return None;
    }
    let mut values = headers.get_all(TRACEPARENT).iter();
    let parent = match (values.next(), values.next()) {
        (Some(v), None) => Parent::parse(v.as_bytes())?,
        _ => return None,
    };
    let state: Vec<&str> = headers.get_all(TRACESTATE).iter().filter_map(|v| v.to_str().ok()).collect();
    Some((parent, (!state.is_empty()).then(|| state.join(","))))
}

/// Rewrites the trace headers of a request about to be forwarded: the request span being traced is the
/// upstream's parent (continuing the trusted peer's trace, or a new one); untraced, a trusted peer's trace
/// continues with a fresh span id. A `traceparent` not accepted (untrusted, invalid, repeated) is removed with its
/// `tracestate`. Returns the context the upstream receives.
pub fn propagate(headers: &mut HeaderMap, trusted: bool) -> Option<Parent> {
    let incoming = accepted(headers, trusted).map(|(p, _)| p);
    if incoming.is_none() {
        // No trace to continue; a lone tracestate means nothing (and is not the client's to pass on).
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
    }
    let ours = match super::span::context() {
        Some(ours) => ours,
        None => {
            let parent = incoming?;
            Parent { span_id: super::span::fresh_span_id(), flags: parent.flags & 0x01, ..parent }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&ours.render()) {
        headers.insert(TRACEPARENT, v);
    }
    Some(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let p = Parent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(p.render(), GOOD);
        assert_eq!(p.flags, 1);
        let later = format!("{}-extra", GOOD.replacen("00", "01", 1));
        assert!(Parent::parse(later.as_bytes()).is_some(), "a later version is read on its first fields");
        for bad in [
            GOOD.replacen("00", "ff", 1),
            GOOD.to_uppercase(),
            format!("{GOOD}-x"),
            GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", "00000000000000000000000000000000"),
            GOOD.replace("00f067aa0ba902b7", "0000000000000000"),
            GOOD[..54].to_owned(),
            GOOD.replace('-', "_"),
            GOOD.replace("-01", "-0g"),
            String::new(),
        ] {
            assert_eq!(Parent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_trusted_trace_continues_with_our_span_and_anything_else_is_removed() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let ours = propagate(&mut h, true).unwrap();
        let sent = Parent::parse(h[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(sent, ours);
        assert_eq!(sent.trace_id, Parent::parse(GOOD.as_bytes()).unwrap().trace_id);
        assert_ne!(sent.span_id, Parent::parse(GOOD.as_bytes()).unwrap().span_id, "idgate's own span");
        assert_eq!(h[TRACESTATE], "vendor=1");

        let mut untrusted = HeaderMap::new();
        untrusted.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        untrusted.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        assert_eq!(propagate(&mut untrusted, false), None);
        assert!(untrusted.is_empty(), "a client's trace headers go");

        let mut twice = HeaderMap::new();
        twice.append(TRACEPARENT, HeaderValue::from_static(GOOD));
        twice.append(TRACEPARENT, HeaderValue::from_static(GOOD));
        assert_eq!(propagate(&mut twice, true), None, "two traceparents: which one is meant is unknown");
        assert!(twice.is_empty());

        let mut lone = HeaderMap::new();
        lone.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        assert_eq!(propagate(&mut lone, true), None);
        assert!(lone.is_empty());
    }
}
