use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::*;

const LINE: Line<'static> =
    Line { message: "request", method: "GET", path: "/a/b", status: 302, latency_us: 41, request_id: "r-1" };

fn at(secs: u64, micros: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

fn json(line: &Line<'_>) -> Value {
    let mut out = String::new();
    format_line(&mut out, LogFormat::Json, at(1_700_000_000, 123_456), line);
    assert!(out.ends_with("}\n") && out.matches('\n').count() == 1, "one line: {out:?}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn json_lines_carry_every_field_with_its_type() {
    let v = json(&LINE);
    assert_eq!(
        v,
        serde_json::json!({
            "timestamp": "2023-11-14T22:13:20.123456Z",
            "level": "INFO",
            "message": "request",
            "method": "GET",
            "path": "/a/b",
            "status": 302,
            "latency_us": 41,
            "request_id": "r-1",
            "target": "idgate::access",
        })
    );
    let v = json(&Line { request_id: "", message: "ext_authz check", ..LINE });
    assert!(v.get("request_id").is_none(), "{v}");
    assert_eq!(v["message"], "ext_authz check");
}

#[test]
fn json_strings_are_escaped_so_no_value_can_forge_a_field_or_a_line() {
    let nasty = "/x\",\"status\":200,\"y\":\"\\\n{\"forged\":1}\u{1b}[2Jé山";
    let v = json(&Line { path: nasty, request_id: "a\"b\\c", ..LINE });
    assert_eq!(v["path"], nasty, "the value comes back exactly");
    assert_eq!(v["status"], 302);
    assert_eq!(v["request_id"], "a\"b\\c");
    assert!(v.get("forged").is_none() && v.get("y").is_none());
}

#[test]
fn text_lines_show_control_characters_escaped() {
    let mut out = String::new();
    format_line(&mut out, LogFormat::Text, at(0, 7), &Line { path: "/a\nINFO forged\u{1b}[0m", ..LINE });
    assert_eq!(
        out,
        "1970-01-01T00:00:00.000007Z  INFO request method=GET path=/a\\x0aINFO forged\\x1b[0m status=302 \
         latency_us=41 request_id=r-1\n"
    );
}

#[test]
fn timestamps_are_utc_calendar_dates_across_leap_years_and_centuries() {
    let stamp = |secs: u64, micros: u32| {
        let mut s = String::new();
        rfc3339_micros(&mut s, at(secs, micros));
        s
    };
    assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(stamp(951_782_400, 0), "2000-02-29T00:00:00.000000Z", "2000 is a leap year");
    assert_eq!(stamp(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z");
    assert_eq!(stamp(951_868_800, 0), "2000-03-01T00:00:00.000000Z");
    assert_eq!(stamp(1_709_164_800, 0), "2024-02-29T00:00:00.000000Z");
    assert_eq!(stamp(1_798_761_599, 0), "2026-12-31T23:59:59.000000Z");
    assert_eq!(stamp(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z", "2100 is not a leap year");
    assert_eq!(stamp(4_107_456_000, 0), "2100-02-28T00:00:00.000000Z");
    // Every day for 400 years (a whole Gregorian cycle) against the proleptic calendar counted forward.
    let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
    for days in 0..146_097i64 {
        assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(m - 1) as usize];
        d += 1;
        if d > len {
            (d, m) = (1, m + 1);
            if m > 12 {
                (m, y) = (1, y + 1);
            }
        }
    }
}

/// The same request through `tracing`'s JSON layer (what the line was before) and through [`format_line`]: the
/// same field names and value types, so log pipelines built on the old lines keep working.
#[test]
fn json_lines_have_the_fields_and_types_of_tracings_json_layer() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        assert!(enabled(), "INFO for idgate::access is on under this subscriber");
        through_tracing(&LINE);
    });
    let theirs: Value = serde_json::from_slice(&captured.0.lock().unwrap()).unwrap();
    let ours = json(&LINE);
    let shape = |v: &Value| {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), std::mem::discriminant(v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(shape(&ours), shape(&theirs), "ours {ours}\ntheirs {theirs}");
    for key in ["level", "message", "method", "path", "status", "latency_us", "request_id", "target"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    let stamp = theirs["timestamp"].as_str().unwrap();
    assert_eq!((stamp.len(), &stamp[10..11], &stamp[stamp.len() - 1..]), (27, "T", "Z"), "{stamp}");
}

#[test]
fn nothing_is_written_when_info_is_off() {
    let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).finish();
    tracing::subscriber::with_default(subscriber, || assert!(!enabled()));
}
