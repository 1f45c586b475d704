//! Sessions: a validated ID token (and, where configured, the refresh and access tokens) sealed with AEAD, living
//! exactly until the ID token's `exp`. With the cookie store (default) the sealed session is the cookie; with the
//! memory or Redis store the cookie holds only a random 256-bit id and the sealed session lives server-side under a
//! hash of that id, so a session can really be ended. Opening re-checks expiry on every request; a cookie that does
//! not open is no session.

pub mod cookie;
pub mod opened;
pub mod seal;
pub mod signed_out;
pub mod store;

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    config::{Secret, StoreKind, settings::SessionSettings},
    id_token::Claims,
};
use cookie::Attributes;
use seal::{KeyRing, Purpose};
use store::{Key, Owner, Store, StoreError};

/// An open, unexpired session. Only [`Sessions`] makes one; clones share it.
#[derive(Debug, Clone)]
pub struct Session(Arc<Contents>);

#[derive(Debug)]
struct Contents {
    claims: Claims,
    id_token: Secret,
    refresh_token: Option<Secret>,
    access_token: Option<Secret>,
    nonce: Option<String>,
    login: Login,
    userinfo: Option<Map<String, Value>>,
    /// The server-side key, when a store holds the session.
    key: Option<Key>,
    identity: crate::identity::Memo,
    /// The `[[providers]]` name that made the session (none with `[oidc]`).
    provider: Option<String>,
}

impl Session {
    /// The ID token's claims.
    pub fn claims(&self) -> &Claims {
        &self.0.claims
    }
    /// When the session ends: the ID token's `exp`.
    pub fn expires_at(&self) -> i64 {
        self.0.claims.exp()
    }
    /// The ID token, for RP-initiated logout's `id_token_hint` only. Never forwarded.
    pub fn id_token_hint(&self) -> &str {
        self.0.id_token.expose()
    }
    /// The access token, forwarded only when `oidc.forward_access_token` is on.
    pub fn access_token(&self) -> Option<&str> {
        self.0.access_token.as_ref().map(Secret::expose)
    }
    /// The refresh token, for renewal only.
    pub fn refresh_token(&self) -> Option<&str> {
        self.0.refresh_token.as_ref().map(Secret::expose)
    }
    /// The login this session comes from (kept through refreshes).
    pub fn login(&self) -> &Login {
        &self.0.login
    }
    /// The nonce of the login that made the session (a refreshed ID token may repeat it, never change it).
    pub fn nonce(&self) -> Option<&str> {
        self.0.nonce.as_deref()
    }
    /// Userinfo claims kept with the session.
    pub fn userinfo(&self) -> Option<&Map<String, Value>> {
        self.0.userinfo.as_ref()
    }
    /// The claim headers of this session, kept by the header plan after the first request.
    pub fn identity_memo(&self) -> &crate::identity::Memo {
        &self.0.identity
    }
    /// The `[[providers]]` name whose login made this session (`None` with `[oidc]`).
    pub fn provider(&self) -> Option<&str> {
        self.0.provider.as_deref()
    }
    /// The server-side key, when a store holds the session.
    fn key(&self) -> Option<&Key> {
        self.0.key.as_ref()
    }
    /// Roughly how many bytes the session holds (the token, its decoded claims and the other tokens).
    fn approximate_size(&self) -> usize {
        let c = &self.0;
        256 + 3 * c.id_token.expose().len()
            + c.refresh_token.as_ref().map_or(0, |t| t.expose().len())
            + c.access_token.as_ref().map_or(0, |t| t.expose().len())
            + c.userinfo.as_ref().map_or(0, |u| 64 * u.len())
    }
}

/// The login a session comes from: a random id naming the session through all its refreshes (what a sign-out
/// revokes), and when the issuer made it (the login ID token's `iat`; a back-channel logout token issued before it
/// cannot end it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    id: String,
    at: i64,
}

impl Login {
    /// A new login, made by the ID token with `claims` at `now`.
    fn fresh(claims: &Claims, now: i64) -> Self {
        Login { id: crate::random::token(16), at: claims.get("iat").and_then(|v| v.as_i64()).unwrap_or(now) }
    }
    /// The random id of the login.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// When the issuer made the login (seconds since the epoch).
    pub fn at(&self) -> i64 {
        self.at
    }
}

/// Tokens to keep after a login or refresh. The ID token must already be validated. `Debug` shows no token.
pub struct NewSession<'a> {
    pub id_token: &'a str,
    pub claims: &'a Claims,
    pub refresh_token: Option<&'a str>,
    pub access_token: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// Claims from the userinfo endpoint (same `sub`, checked by the caller) that the ID token lacks.
    pub userinfo: Option<&'a Map<String, Value>>,
    /// The `[[providers]]` name whose login this is (`None` with `[oidc]`).
    pub provider: Option<&'a str>,
}

impl std::fmt::Debug for NewSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("sub", &self.claims.sub())
            .field("refresh_token", &self.refresh_token.is_some())
            .field("access_token", &self.access_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Why there is no session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("no session cookie")]
    Missing,
    #[error("session cookie does not open")]
    Tampered,
    #[error("session expired")]
    Expired,
    #[error("session signed out (a copy of its cookie replayed)")]
    SignedOut,
    #[error("session too large for the cookie store")]
    TooLarge,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sealed form, field names kept short: with the cookie store it travels in every request.
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    #[serde(borrow, rename = "t")]
    id_token: &'a str,
    #[serde(borrow, rename = "r", default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(borrow, rename = "a", default, skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(borrow, rename = "n", default, skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    userinfo: Option<Map<String, Value>>,
    /// The login (sessions sealed before these fields existed get one derived from their ID token).
    #[serde(borrow, rename = "i", default, skip_serializing_if = "Option::is_none")]
    login_id: Option<&'a str>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    login_at: Option<i64>,
    /// The `[[providers]]` name (absent with `[oidc]`).
    #[serde(borrow, rename = "p", default, skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
}

/// Seals, opens, saves and ends sessions; built once at start.
#[derive(Debug)]
pub struct Sessions {
    ring: KeyRing,
    name: String,
    attrs: Attributes,
    store: Option<Arc<Store>>,
    signed_out: Arc<signed_out::SignedOut>,
    opened: opened::OpenedCache,
}

/// What a reload keeps of [`Sessions`]: the server-side store and the signed-out cookie sessions.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    store: Option<Arc<Store>>,
    signed_out: Arc<signed_out::SignedOut>,
}

impl Sessions {
    /// Derives the session keys from the settings and sets up the store.
    pub fn new(s: &SessionSettings) -> Result<Self, StoreError> {
        let store = match &s.store {
            StoreKind::Cookie => None,
            StoreKind::Memory => Some(Store::Memory(store::memory::MemoryStore::new(s.memory_capacity))),
            StoreKind::Redis { url } => Some(Store::Redis(store::redis::RedisStore::new(url.expose())?)),
        };
        Ok(Self::with_store(s, Shared { store: store.map(Arc::new), signed_out: Arc::default() }))
    }

    /// New keys and cookie settings over an existing store (a reload keeps the sessions it holds, and the
    /// sign-outs it remembers).
    pub fn with_store(s: &SessionSettings, shared: Shared) -> Self {
        Self {
            ring: KeyRing::new(&s.secret, &s.previous_secrets, Purpose::Session),
            name: s.cookie_name.clone(),
            attrs: Attributes { secure: s.cookie_secure, domain: s.cookie_domain.clone() },
            store: shared.store,
            signed_out: shared.signed_out,
            opened: opened::OpenedCache::default(),
        }
    }

    /// The store and sign-outs shared with a reloaded state.
    pub fn shared_store(&self) -> Shared {
        Shared { store: self.store.clone(), signed_out: Arc::clone(&self.signed_out) }
    }

    /// The server-side store, if sessions are kept server-side.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_deref()
    }

    /// Opens the request's session, checking expiry against `now`. Sealed bytes opened before come from
    /// [`opened::OpenedCache`] without decrypting again.
    pub async fn open(&self, headers: &HeaderMap, now: i64) -> Result<Session, SessionError> {
        let session = match &self.store {
            None => {
                let value = cookie::get_chunked(headers, &self.name).ok_or(SessionError::Missing)?;
                match self.opened.get(value.as_bytes()) {
                    Some(s) => s,
                    None => {
                        let plain = self.ring.open(&self.name, &value).map_err(|_| SessionError::Tampered)?;
                        let s = unpack(&plain, None)?;
                        self.opened.insert(value.into_owned().into_bytes(), s.clone());
                        s
                    }
                }
            }
            Some(store) => {
                let key = self.key_of(headers)?;
                let sealed = store.get(&key).await?.ok_or(SessionError::Missing)?;
                // A kept session counts only under the key it was opened under: stored bytes moved under another
                // key are opened again, and refused by the key-bound seal.
                match self.opened.get(&sealed).filter(|s| s.key() == Some(&key)) {
                    Some(s) => s,
                    None => {
                        let plain =
                            self.ring.open_raw(&store::hex(&key), &sealed).map_err(|_| SessionError::Tampered)?;
                        let s = unpack(&plain, Some(key))?;
                        self.opened.insert(sealed.to_vec(), s.clone());
                        s
                    }
                }
            }
        };
        if session.expires_at() <= now {
            return Err(SessionError::Expired);
        }
        if self.signed_out.contains(session.login().id()) {
            return Err(SessionError::SignedOut);
        }
        Ok(session)
    }

    /// The store key named by the request's cookie (a random id; the key is its hash).
    fn key_of(&self, headers: &HeaderMap) -> Result<Key, SessionError> {
        let id = cookie::get(headers, &self.name).ok_or(SessionError::Missing)?;
        let raw = URL_SAFE_NO_PAD.decode(id).map_err(|_| SessionError::Tampered)?;
        if raw.len() != 32 {
            return Err(SessionError::Tampered);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, &raw).as_ref());
        Ok(key)
    }

    /// Stores a new session and returns the `Set-Cookie` values for it, replacing whatever session cookies the
    /// request carried (a login always makes a new session: no fixation).
    pub async fn save(
        &self,
        req: &HeaderMap,
        new: &NewSession<'_>,
        now: i64,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        self.save_login(req, new, &Login::fresh(new.claims, now), now).await
    }

    async fn save_login(
        &self,
        req: &HeaderMap,
        new: &NewSession<'_>,
        login: &Login,
        now: i64,
    ) -> Result<Vec<HeaderValue>, SessionError> {
        let plain = pack(new, login);
        let max_age = new.claims.exp() - now;
        match &self.store {
            None => {
                let value = self.ring.seal(&self.name, &plain);
                self.attrs.set_chunked(req, &self.name, &value, "/", max_age).ok_or(SessionError::TooLarge)
            }
            Some(store) => {
                // A previous server-side session of this browser ends here.
                if let Ok(old) = self.key_of(req) {
                    store.delete(&old).await?;
                }
                let id = crate::random::bytes::<32>();
                let mut key = [0u8; 32];
                key.copy_from_slice(digest(&SHA256, &id).as_ref());
                self.put(store, &key, new, login, &plain, now).await?;
                let cookie = URL_SAFE_NO_PAD.encode(id);
                Ok(self.attrs.set_chunked(req, &self.name, &cookie, "/", max_age).unwrap_or_default())
            }
        }
    }

    async fn put(
        &self,
        store: &Store,
        key: &Key,
        new: &NewSession<'_>,
        login: &Login,
        plain: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let (sealed, owner) = self.stored_form(key, new, login, plain);
        store.put(key, sealed, &owner, new.claims.exp(), now).await
    }

    /// A session as a server-side store keeps it: sealed under its key, with the owner the back-channel finds it by.
    fn stored_form(&self, key: &Key, new: &NewSession<'_>, login: &Login, plain: &[u8]) -> (Vec<u8>, Owner) {
        let sealed = self.ring.seal_raw(&store::hex(key), plain);
        let owner = Owner {
            sid: new.claims.get("sid").and_then(|v| v.as_str()).map(|sid| scoped(new.provider, sid).into_owned()),
            sub: scoped(new.provider, new.claims.sub()).into_owned(),
            created: login.at,
        };
        (sealed, owner)
    }

    /// Writes a refreshed session over the old one in the server-side store (no-op for cookie sessions). The
    /// refresh flight calls this once, under its lock, before any request uses the result.
    /// Returns false when the session was ended while it was being refreshed (it stays ended).
    pub async fn store_renewal(&self, old: &Session, new: &NewSession<'_>, now: i64) -> Result<bool, SessionError> {
        let (Some(store), Some(key)) = (&self.store, old.key()) else { return Ok(true) };
        let (sealed, owner) = self.stored_form(key, new, old.login(), &pack(new, old.login()));
        Ok(store.replace(key, sealed, &owner, new.claims.exp(), now).await?)
    }

    /// The renewed session and the `Set-Cookie` values that carry it. Cookie sessions get a new sealed cookie;
    /// server-side sessions (already updated by [`Sessions::store_renewal`]) keep their id with a new `Max-Age`.
    pub async fn renew(
        &self,
        req: &HeaderMap,
        old: &Session,
        new: &NewSession<'_>,
        now: i64,
    ) -> Result<(Session, Vec<HeaderValue>), SessionError> {
        let cookies = match (&self.store, old.key()) {
            (Some(_), Some(_)) => {
                let id = cookie::get(req, &self.name).unwrap_or_default();
                vec![self.attrs.set(&self.name, id, "/", new.claims.exp() - now)]
            }
            _ => self.save_login(req, new, old.login(), now).await?,
        };
        let mut claims = new.claims.clone();
        if let Some(extra) = new.userinfo {
            claims.add_missing(extra.clone());
        }
        let renewed = Session(Arc::new(Contents {
            claims,
            id_token: Secret::new(new.id_token),
            refresh_token: new.refresh_token.map(Secret::new),
            access_token: new.access_token.map(Secret::new),
            nonce: new.nonce.map(str::to_owned),
            login: old.login().clone(),
            userinfo: new.userinfo.cloned(),
            key: old.key().copied(),
            identity: Default::default(),
            provider: new.provider.map(str::to_owned),
        }));
        Ok((renewed, cookies))
    }

    /// Ends the request's session: deletes it server-side and returns `Set-Cookie` values clearing every chunk.
    pub async fn end(&self, req: &HeaderMap) -> Result<Vec<HeaderValue>, SessionError> {
        if let (Some(store), Ok(key)) = (&self.store, self.key_of(req)) {
            store.delete(&key).await?;
        }
        Ok(self.clear(req))
    }

    /// Remembers that `session` was signed out, until its `exp`: a copy of a cookie session's cookie is refused here
    /// from now on (server-side sessions are deleted by [`Sessions::end`] instead).
    pub fn sign_out(&self, session: &Session, now: i64) {
        if self.store.is_none() {
            self.signed_out.insert(session.login().id(), session.expires_at() - now);
        }
    }

    /// `Set-Cookie` values clearing the session cookie (every chunk the request carried).
    pub fn clear(&self, req: &HeaderMap) -> Vec<HeaderValue> {
        self.attrs.clear_chunked(req, &self.name, "/")
    }
}

fn pack(new: &NewSession<'_>, login: &Login) -> Vec<u8> {
    let sealed = Sealed {
        id_token: new.id_token,
        refresh_token: new.refresh_token,
        access_token: new.access_token,
        nonce: new.nonce,
        userinfo: new.userinfo.cloned(),
        login_id: Some(&login.id),
        login_at: Some(login.at),
        provider: new.provider,
    };
    serde_json::to_vec(&sealed).unwrap_or_default()
}

fn unpack(plain: &[u8], key: Option<Key>) -> Result<Session, SessionError> {
    let sealed: Sealed = serde_json::from_slice(plain).map_err(|_| SessionError::Tampered)?;
    let mut claims = claims_of(sealed.id_token).ok_or(SessionError::Tampered)?;
    if let Some(extra) = &sealed.userinfo {
        claims.add_missing(extra.clone());
    }
    // Sessions sealed before logins were recorded: the ID token names the login.
    let login = Login {
        id: match sealed.login_id {
            Some(id) => id.to_owned(),
            None => URL_SAFE_NO_PAD.encode(&digest(&SHA256, sealed.id_token.as_bytes()).as_ref()[..16]),
        },
        at: sealed.login_at.or_else(|| claims.get("iat").and_then(|v| v.as_i64())).unwrap_or(0),
    };
    Ok(Session(Arc::new(Contents {
        claims,
        id_token: Secret::new(sealed.id_token),
        refresh_token: sealed.refresh_token.map(Secret::new),
        access_token: sealed.access_token.map(Secret::new),
        nonce: sealed.nonce.map(str::to_owned),
        login,
        userinfo: sealed.userinfo,
        key,
        identity: Default::default(),
        provider: sealed.provider.map(str::to_owned),
    })))
}

/// A `sid` or `sub` as the server-side store indexes it: within its provider's namespace with `[[providers]]` (the
/// same `sub` from two issuers is two people), as it is with `[oidc]`. Provider names hold no space, so the
/// scoped form is unambiguous.
pub fn scoped<'a>(provider: Option<&str>, value: &'a str) -> std::borrow::Cow<'a, str> {
    match provider {
        Some(p) => std::borrow::Cow::Owned(format!("{p} {value}")),
        None => std::borrow::Cow::Borrowed(value),
    }
}

/// The claims of a token this process validated and sealed: the payload segment, decoded.
fn claims_of(id_token: &str) -> Option<Claims> {
    let payload = id_token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    Some(Claims::new(serde_json::from_slice(&bytes).ok()?))
}

#[cfg(test)]
mod tests;
