//! The `[telemetry]` section: OpenTelemetry traces exported over OTLP/HTTP (protobuf) to `otlp_endpoint`. Off
//! unless the endpoint is set; then [`crate::telemetry::span`] records the spans and [`crate::telemetry::otlp`]
//! sends them.

use std::{collections::BTreeMap, time::Duration};

use http::{HeaderName, HeaderValue};
use url::Url;

use super::{Problems, raw::RawTelemetry};

/// The `service.name` resource attribute unless `telemetry.service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "idgate";

/// `[telemetry]`, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetrySettings {
    /// `None`: no spans are made (nothing is recorded, allocated or sent).
    pub otlp: Option<OtlpSettings>,
}

/// Where and how spans are exported. Only the endpoint, the headers and the service name come from the file; the
/// batching limits are the defaults of [`OtlpSettings::new`] (tests shorten them).
#[derive(Clone, PartialEq)]
pub struct OtlpSettings {
    /// The collector's traces URL, e.g. `http://collector:4318/v1/traces` (posted to as it is).
    pub endpoint: Url,
    /// Sent with every export (a vendor's API key): their values are secrets, never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Spans waiting for the exporter at most; more are dropped (and counted), never waited for.
    pub queue: usize,
    /// Spans per export at most.
    pub batch: usize,
    /// Longest a span waits in a batch before it is sent.
    pub interval: Duration,
    /// One export's deadline (connect, send, answer).
    pub timeout: Duration,
}

impl OtlpSettings {
    /// Settings for `endpoint` with the default limits: a queue of 2048 spans, batches of 512, sent at least every
    /// 5 s, each export given 10 s (the OpenTelemetry SDKs' batch processor defaults).
    pub fn new(endpoint: Url) -> Self {
        Self {
            endpoint,
            headers: Vec::new(),
            service_name: DEFAULT_SERVICE_NAME.into(),
            queue: 2048,
            batch: 512,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint.as_str())
            .field("headers", &names)
            .field("service_name", &self.service_name)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Validates `[telemetry]`, adding one problem per bad key. A header's value is never echoed (it is a credential).
pub fn settings(p: &mut Problems, raw: RawTelemetry) -> TelemetrySettings {
    let endpoint = raw.otlp_endpoint.as_deref().and_then(|e| endpoint(p, e));
    let headers = headers(p, raw.otlp_headers.unwrap_or_default());
    let service_name = match raw.service_name {
        None => DEFAULT_SERVICE_NAME.to_owned(),
        Some(n) if !n.trim().is_empty() && n.len() <= 255 && !n.chars().any(char::is_control) => n,
        Some(_) => {
            p.add("telemetry.service_name", "must be a non-empty name of at most 255 characters, without controls");
            DEFAULT_SERVICE_NAME.to_owned()
        }
    };
    if endpoint.is_none() && raw.otlp_endpoint.is_none() && !headers.is_empty() {
        p.add("telemetry.otlp_headers", "set without telemetry.otlp_endpoint: nothing would be sent");
    }
    TelemetrySettings {
        otlp: endpoint.map(|endpoint| OtlpSettings { headers, service_name, ..OtlpSettings::new(endpoint) }),
    }
}

/// An absolute http(s) URL without credentials in it (they belong in `otlp_headers`, which are never logged).
fn endpoint(p: &mut Problems, value: &str) -> Option<Url> {
    const KEY: &str = "telemetry.otlp_endpoint";
    match Url::parse(value) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            p.bad(KEY, "must not hold credentials: put them in telemetry.otlp_headers")
        }
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Some(u),
        Ok(_) => p.bad(KEY, &format!("{value:?}: not an absolute http(s) URL, e.g. http://collector:4318/v1/traces")),
        Err(e) => p.bad(KEY, &format!("{value:?}: not an absolute URL ({e})")),
    }
}

fn headers(p: &mut Problems, raw: BTreeMap<String, String>) -> Vec<(HeaderName, HeaderValue)> {
    raw.into_iter()
        .filter_map(|(name, value)| {
            let key = format!("telemetry.otlp_headers.{name}");
            let Ok(header) = HeaderName::try_from(name.as_str()) else {
                return p.bad(&key, "not a valid HTTP header name");
            };
            if matches!(
                header.as_str(),
                "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
            ) {
                return p.bad(&key, "this header is set by the exporter itself");
            }
            match HeaderValue::try_from(value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some((header, v))
                }
                Err(_) => p.bad(&key, "not a valid header value (the value is not shown)"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawTelemetry) -> (TelemetrySettings, Vec<String>) {
        let mut p = Problems::default();
        let s = settings(&mut p, raw);
        (s, p.into_error().problems.into_iter().map(|p| format!("{}: {}", p.key, p.why)).collect())
    }

    /// A whole file with `[telemetry]`, loaded as idgate loads it, with `env` as the environment.
    fn load(telemetry: &str, env: &[(&str, &str)]) -> Result<super::super::Settings, super::super::ConfigError> {
        use std::io::Write;
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:8080\"\n[oidc]\nissuer = \"https://issuer.example.com\"\n\
             client_id = \"c\"\nclient_secret = \"s\"\nredirect_url = \"https://app.example.com/oauth2/callback\"\n\
             [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n{telemetry}"
        );
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        super::super::load(f.path(), &env)
    }

    #[test]
    fn the_section_loads_from_the_file_and_the_environment() {
        let s = load(
            "[telemetry]\notlp_endpoint = \"http://collector:4318/v1/traces\"\notlp_headers = { \"x-api-key\" = \"k\" }\n",
            &[],
        )
        .unwrap();
        let o = s.telemetry.otlp.unwrap();
        assert_eq!(o.endpoint.as_str(), "http://collector:4318/v1/traces");
        assert_eq!(o.headers.len(), 1);
        assert_eq!(o.service_name, "idgate");
        let s = load("", &[("IDGATE_TELEMETRY__OTLP_ENDPOINT", "https://otlp.example.com/v1/traces")]).unwrap();
        assert_eq!(s.telemetry.otlp.unwrap().endpoint.as_str(), "https://otlp.example.com/v1/traces");
        assert_eq!(load("", &[]).unwrap().telemetry.otlp, None, "off by default");
        let e = load("[telemetry]\notlp_protocol = \"grpc\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("otlp_protocol"), "{e}");
        let e = load("[telemetry]\notlp_endpoint = \"not a url\"\n", &[]).unwrap_err();
        assert_eq!(e.problems[0].key, "telemetry.otlp_endpoint", "{e}");
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        let (s, problems) = check(RawTelemetry::default());
        assert_eq!(s.otlp, None);
        assert!(problems.is_empty());
    }

    #[test]
    fn an_endpoint_with_headers_and_a_service_name() {
        let (s, problems) = check(RawTelemetry {
            otlp_endpoint: Some("https://collector.example:4318/v1/traces".into()),
            otlp_headers: Some(BTreeMap::from([("x-api-key".into(), "k-123".into())])),
            service_name: Some("gate-eu".into()),
        });
        assert!(problems.is_empty(), "{problems:?}");
        let o = s.otlp.unwrap();
        assert_eq!(o.endpoint.as_str(), "https://collector.example:4318/v1/traces");
        assert_eq!(o.service_name, "gate-eu");
        assert_eq!(o.headers[0].0, "x-api-key");
        assert!(!format!("{o:?}").contains("k-123"), "a header's value is a credential");
    }

    #[test]
    fn bad_values_name_their_key_and_never_a_header_value() {
        for (raw, want) in [
            (
                RawTelemetry { otlp_endpoint: Some("collector:4318".into()), ..Default::default() },
                "telemetry.otlp_endpoint",
            ),
            (
                RawTelemetry { otlp_endpoint: Some("ftp://c/v1/traces".into()), ..Default::default() },
                "telemetry.otlp_endpoint",
            ),
            (
                RawTelemetry { otlp_endpoint: Some("http://user:pw@c:4318/v1/traces".into()), ..Default::default() },
                "telemetry.otlp_endpoint: must not hold credentials",
            ),
            (
                RawTelemetry {
                    otlp_endpoint: Some("http://c:4318/v1/traces".into()),
                    otlp_headers: Some(BTreeMap::from([("x-key".into(), "secret\nvalue".into())])),
                    ..Default::default()
                },
                "telemetry.otlp_headers.x-key: not a valid header value",
            ),
            (
                RawTelemetry {
                    otlp_endpoint: Some("http://c:4318/v1/traces".into()),
                    otlp_headers: Some(BTreeMap::from([("bad name".into(), "v".into())])),
                    ..Default::default()
                },
                "telemetry.otlp_headers.bad name",
            ),
            (
                RawTelemetry {
                    otlp_endpoint: Some("http://c:4318/v1/traces".into()),
                    otlp_headers: Some(BTreeMap::from([("content-type".into(), "text/plain".into())])),
                    ..Default::default()
                },
                "telemetry.otlp_headers.content-type",
            ),
            (
                RawTelemetry {
                    otlp_headers: Some(BTreeMap::from([("x-key".into(), "v".into())])),
                    ..Default::default()
                },
                "telemetry.otlp_headers: set without telemetry.otlp_endpoint",
            ),
            (
                RawTelemetry {
                    otlp_endpoint: Some("http://c:4318/v1/traces".into()),
                    service_name: Some(" ".into()),
                    ..Default::default()
                },
                "telemetry.service_name",
            ),
        ] {
            let (_, problems) = check(raw);
            assert!(problems.iter().any(|p| p.starts_with(want)), "{want}: {problems:?}");
            assert!(!problems.iter().any(|p| p.contains("secret")), "{problems:?}");
        }
    }
}
