//! Authenticated encryption of cookie values: AES-256-GCM from aws-lc-rs, a fresh random nonce per seal, the cookie
//! name as associated data (a value cannot be moved to another cookie), a version byte, and a key ring so cookies
//! sealed with a previous secret still open after rotation.
//!
//! Format: `base64url( version(1) ‖ nonce(12) ‖ ciphertext ‖ tag(16) )`.

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf::{HKDF_SHA256, Salt},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::config::Secret;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const SALT: &[u8] = b"idgate/v1";

/// What a key is for; each purpose gets its own derived key.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    Session,
    Flow,
    /// A form post kept over a re-login (`login::preserved_post`).
    PreservedPost,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"idgate session cookie",
            Purpose::Flow => b"idgate login flow cookie",
            Purpose::PreservedPost => b"idgate preserved form post",
        }
    }
}

/// The current key and the previous ones, derived once at start.
pub struct KeyRing {
    current: LessSafeKey,
    previous: Vec<LessSafeKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing(1 current, {} previous)", self.previous.len())
    }
}

/// A sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open (tampered, truncated, or sealed with an unknown key)")]
pub struct Unsealable;

fn derive(secret: &Secret, purpose: Purpose) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, SALT).extract(secret.expose().as_bytes());
    let info = [purpose.info()];
    #[allow(clippy::expect_used, reason = "static: 32 bytes is a valid HKDF-SHA256 output length")]
    let okm = prk.expand(&info, &AES_256_GCM).expect("HKDF output length for AES-256 is valid");
    LessSafeKey::new(UnboundKey::from(okm))
}

impl KeyRing {
    /// Derives the ring for `purpose` from the configured secrets.
    pub fn new(current: &Secret, previous: &[Secret], purpose: Purpose) -> Self {
        Self { current: derive(current, purpose), previous: previous.iter().map(|s| derive(s, purpose)).collect() }
    }

    /// Seals `plaintext` for the cookie `name`, as cookie-safe text.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.seal_raw(name, plaintext))
    }

    /// Seals `plaintext` bound to `name`, as bytes (server-side stores keep these).
    pub fn seal_raw(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::random::bytes::<NONCE_LEN>();
        let mut buf = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&nonce_bytes);
        buf.extend_from_slice(plaintext);
        #[allow(clippy::expect_used, reason = "static: AES-GCM fails only past 64 GiB per message")]
        let tag = self
            .current
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(name.as_bytes()),
                &mut buf[1 + NONCE_LEN..],
            )
            .expect("AES-GCM sealing of a bounded buffer cannot fail");
        buf.extend_from_slice(tag.as_ref());
        buf
    }

    /// Opens a value sealed for the cookie `name` by the current or a previous key.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, Unsealable> {
        self.open_raw(name, &URL_SAFE_NO_PAD.decode(sealed).map_err(|_| Unsealable)?)
    }

    /// Opens bytes from [`KeyRing::seal_raw`].
    pub fn open_raw(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, Unsealable> {
        // A ciphertext shorter than the tag does not open: AES-GCM checks that, no length rule is needed here.
        let Some((&VERSION, rest)) = bytes.split_first() else {
            return Err(Unsealable);
        };
        let Some((nonce, sealed)) = rest.split_first_chunk::<NONCE_LEN>() else {
            return Err(Unsealable);
        };
        for key in std::iter::once(&self.current).chain(&self.previous) {
            let mut work = sealed.to_vec();
            if let Ok(plain) =
                key.open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(name.as_bytes()), &mut work)
            {
                let n = plain.len();
                work.truncate(n);
                return Ok(work);
            }
        }
        Err(Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(s: &str) -> KeyRing {
        KeyRing::new(&Secret::new(s), &[], Purpose::Session)
    }

    #[test]
    fn round_trip() {
        let r = ring("0123456789abcdef0123456789abcdef");
        let sealed = r.seal("idgate", b"hello");
        assert_eq!(r.open("idgate", &sealed).unwrap(), b"hello");
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let r = ring("0123456789abcdef0123456789abcdef");
        let sealed = URL_SAFE_NO_PAD.decode(r.seal("idgate", b"some session payload")).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(r.open("idgate", &URL_SAFE_NO_PAD.encode(&bad)), Err(Unsealable), "byte {i}");
        }
    }

    #[test]
    fn other_cookie_name_or_secret_or_purpose_is_refused() {
        let r = ring("0123456789abcdef0123456789abcdef");
        let sealed = r.seal("idgate", b"x");
        assert!(r.open("idgate_0", &sealed).is_err());
        assert!(ring("another-secret-another-secret-xx").open("idgate", &sealed).is_err());
        let flow = KeyRing::new(&Secret::new("0123456789abcdef0123456789abcdef"), &[], Purpose::Flow);
        assert!(flow.open("idgate", &sealed).is_err());
        assert!(r.open("idgate", "").is_err());
        assert!(r.open("idgate", "!!!").is_err());
    }

    #[test]
    fn previous_secret_still_opens() {
        let old = ring("old-secret-old-secret-old-secret!");
        let sealed = old.seal("idgate", b"x");
        let rotated = KeyRing::new(
            &Secret::new("new-secret-new-secret-new-secret!"),
            &[Secret::new("old-secret-old-secret-old-secret!")],
            Purpose::Session,
        );
        assert_eq!(rotated.open("idgate", &sealed).unwrap(), b"x");
        // New seals use the new key: the old ring cannot open them.
        assert!(old.open("idgate", &rotated.seal("idgate", b"y")).is_err());
    }

    #[test]
    fn an_empty_value_seals_to_the_shortest_openable_form() {
        let r = ring("0123456789abcdef0123456789abcdef");
        let raw = r.seal_raw("idgate", b"");
        assert_eq!(raw.len(), 29, "version, nonce and tag");
        assert_eq!(raw[0], 1, "version byte");
        assert_eq!(r.open_raw("idgate", &raw).unwrap(), b"");
        for short in 0..29 {
            assert_eq!(r.open_raw("idgate", &raw[..short]), Err(Unsealable), "{short} bytes");
        }
        let mut v2 = raw.clone();
        v2[0] = 2;
        assert_eq!(r.open_raw("idgate", &v2), Err(Unsealable));
        // The layout: version ‖ nonce ‖ ciphertext ‖ tag, the ciphertext as long as the plaintext.
        let raw = r.seal_raw("idgate", b"abc");
        assert_eq!(raw.len(), 1 + 12 + 3 + 16);
        assert_eq!(r.open_raw("idgate", &raw).unwrap(), b"abc");
        assert_eq!(URL_SAFE_NO_PAD.decode(r.seal("idgate", b"abc")).unwrap().len(), raw.len());
    }

    #[test]
    fn each_seal_takes_a_fresh_nonce() {
        let r = ring("0123456789abcdef0123456789abcdef");
        let (a, b) = (r.seal_raw("idgate", b"same"), r.seal_raw("idgate", b"same"));
        assert_ne!(a[1..13], b[1..13]);
        assert_ne!(a, b);
    }

    #[test]
    fn debug_shows_the_ring_size_only() {
        let r = KeyRing::new(
            &Secret::new("new-secret-new-secret-new-secret!"),
            &[Secret::new("old-secret-old-secret-old-secret!"), Secret::new("older-secret-older-secret-older!")],
            Purpose::Flow,
        );
        assert_eq!(format!("{r:?}"), "KeyRing(1 current, 2 previous)");
    }
}
