//! Any Cookie header: opening never panics, and nothing opens without the key.
#![no_main]

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, header::COOKIE};
use idgate::{
    config::{Secret, settings::SessionSettings},
    session::Sessions,
};
use libfuzzer_sys::fuzz_target;

fn sessions() -> &'static Sessions {
    static S: OnceLock<Sessions> = OnceLock::new();
    S.get_or_init(|| {
        Sessions::new(&SessionSettings::with_secret(Secret::new("fuzz-secret-fuzz-secret-fuzz-secret")))
            .expect("cookie store")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, value);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let fut = std::pin::pin!(sessions().open(&headers, 1_800_000_000));
    if let std::task::Poll::Ready(result) = std::future::Future::poll(fut, &mut cx) {
        assert!(result.is_err(), "a random cookie opened a session");
    }
});
