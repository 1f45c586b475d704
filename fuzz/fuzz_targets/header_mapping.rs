//! Any claims JSON: the headers written for the upstream are valid and never carry CR, LF or NUL.
#![no_main]

use http::{HeaderMap, HeaderName};
use idgate::{id_token::Claims, identity::HeaderPlan, policy::Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let claims = Claims::for_fuzzing(map);
    let plan = HeaderPlan::new(
        &[
            (HeaderName::from_static("x-user"), "sub".into()),
            (HeaderName::from_static("x-name"), "name".into()),
            (HeaderName::from_static("x-roles"), "https://example.com/roles".into()),
            (HeaderName::from_static("x-country"), "address.country".into()),
        ],
        &[],
        "idgate",
    );
    let permit = Rules::default().authorize(None, &claims).expect("default rule permits");
    let mut headers = HeaderMap::new();
    plan.apply(&mut headers, &claims, &permit, &idgate::identity::Memo::new());
    for v in headers.values() {
        assert!(!v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    }
});
