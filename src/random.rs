//! Random values from the one crypto backend (aws-lc-rs).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// `n` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system RNG failing is not recoverable: nothing secure can be done without it.
    #[allow(clippy::expect_used, reason = "no secure answer is possible without the system RNG")]
    SystemRandom::new().fill(&mut buf).expect("system random number generator failed");
    buf
}

/// `n` random bytes as unpadded base64url text (state, nonce, PKCE verifier, request ids).
pub fn token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    #[allow(clippy::expect_used, reason = "no secure answer is possible without the system RNG")]
    SystemRandom::new().fill(&mut buf).expect("system random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}
