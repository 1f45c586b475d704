//! Renewal (R16): shortly before the ID token's `exp`, a session holding a refresh token gets a new ID token at the
//! token endpoint, validated by the same rules (same `sub`; a `nonce`, if present, must still be the login's).
//! Concurrent requests of one session share one refresh (single flight in-process; a Redis lock across replicas,
//! whose lease is renewed while the refresh runs), and the result is kept for a minute, so a rotated refresh token
//! never kills a session that had requests in flight.

use std::{sync::Arc, time::Duration};

use aws_lc_rs::digest::{SHA256, digest};
use http::{HeaderMap, HeaderValue};

use crate::{
    app::State,
    config::Secret,
    id_token::Claims,
    oidc::{Provider, ProviderError, TokenError},
    session::{NewSession, Session, SessionError},
    telemetry::metrics::Event,
};

/// Tokens from one refresh, shared by every request that waited for it.
#[derive(Debug)]
pub struct Refreshed {
    id_token: Secret,
    claims: Claims,
    refresh_token: Option<Secret>,
    access_token: Option<Secret>,
}

/// The cross-replica refresh lock's lease, renewed every [`LOCK_RENEW_EVERY`] while the refresh runs: a holder that
/// dies frees it within this time, a slow token endpoint never lets a second replica in.
pub const LOCK_LEASE_MS: u64 = 3_000;
/// How often the holder renews its lease.
const LOCK_RENEW_EVERY: Duration = Duration::from_millis(1_000);

/// Why a refresh did not give a new session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshFailure {
    /// The issuer refused the refresh token (`invalid_grant`): the session is over.
    #[error("refresh token refused: {0}")]
    Refused(String),
    /// The new ID token failed validation or names another subject: the session is over.
    #[error("refreshed ID token rejected: {0}")]
    Rejected(String),
    /// The issuer could not be reached: keep the session until its `exp`.
    #[error("issuer unavailable for refresh: {0}")]
    Unavailable(String),
}

/// What the pipeline does with a session after the renewal check.
#[derive(Debug)]
pub enum Renewal {
    /// Use the session as it is (not due, or the issuer is unavailable).
    Keep(Session),
    /// Use the renewed session and send these cookies.
    Renewed(Session, Vec<HeaderValue>),
    /// The session is over.
    Ended(SessionError),
}

/// The in-process flights: refresh-token hash → outcome, kept briefly.
pub type Flights = moka::future::Cache<[u8; 32], Arc<Result<Refreshed, RefreshFailure>>>;

/// A cache for [`Flights`].
pub fn flights() -> Flights {
    moka::future::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build()
}

/// Refreshes `session` when it is due.
pub async fn renew_if_due(state: &State, headers: &HeaderMap, session: Session, now: i64) -> Renewal {
    let Some(refresh_token) = session.refresh_token() else { return Renewal::Keep(session) };
    // The session's own provider refreshes it (the pipeline has checked that it is allowed here).
    let Some(provider) = state.providers.recorded(session.provider()).and_then(|i| state.providers.entry(i)) else {
        return Renewal::Keep(session);
    };
    let provider = Arc::clone(provider.provider());
    let exp = session.expires_at();
    let iat = session.claims().get("iat").and_then(|v| v.as_i64()).unwrap_or(exp);
    let margin = (state.settings.session.refresh_margin.as_secs() as i64).min((exp - iat) / 2);
    if now < exp - margin {
        return Renewal::Keep(session);
    }
    // Boxed: the exchange at the token endpoint is a large state machine, and every logged-in request's future
    // would carry its size (and have it copied) for a step that is rarely due.
    let rt = refresh_token.to_owned();
    Box::pin(renew(state, headers, session, &provider, rt, now)).await
}

/// Renews a session that is due with its refresh token `rt`: one refresh per refresh token at a time
/// (`state.refreshes`), then the session renewed with what the provider answered.
async fn renew(
    state: &State,
    headers: &HeaderMap,
    session: Session,
    provider: &Provider,
    rt: String,
    now: i64,
) -> Renewal {
    let mut flight = [0u8; 32];
    flight.copy_from_slice(digest(&SHA256, rt.as_bytes()).as_ref());
    let outcome = state
        .refreshes
        .get_with(flight, async { Arc::new(refresh(state, provider, headers, &session, &rt, flight, now).await) })
        .await;
    match outcome.as_ref() {
        Ok(r) => match state.sessions.renew(headers, &session, &as_new(r, &session), now).await {
            Ok((renewed, cookies)) => Renewal::Renewed(renewed, cookies),
            Err(e) => Renewal::Ended(e),
        },
        Err(RefreshFailure::Unavailable(why)) => {
            tracing::warn!(error = %why, "refresh failed; the session lasts until its exp");
            Renewal::Keep(session)
        }
        Err(fatal) => {
            tracing::info!(error = %fatal, sub = session.claims().sub(), "refresh ended the session");
            Renewal::Ended(SessionError::Expired)
        }
    }
}

/// One refresh at the token endpoint, under a cross-replica lock when sessions live server-side: whoever gets the
/// lock second finds the session already renewed in the store and uses that.
async fn refresh(
    state: &State,
    provider: &Provider,
    headers: &HeaderMap,
    session: &Session,
    rt: &str,
    flight: [u8; 32],
    now: i64,
) -> Result<Refreshed, RefreshFailure> {
    let Some(store) = state.sessions.store() else { return redeem(provider, session, rt, now).await };
    let lock = crate::session::store::hex(&flight);
    // A holder keeps the lock for at most one token request (plus the store write): wait a little longer.
    let patience = provider.settings().http_timeout + Duration::from_secs(5);
    let mut waited = Duration::ZERO;
    let lease = loop {
        match store.try_lock(&lock, LOCK_LEASE_MS).await.map_err(|e| RefreshFailure::Unavailable(e.to_string()))? {
            Some(lease) => break lease,
            None if waited > patience => {
                return Err(RefreshFailure::Unavailable("refresh lock held too long".into()));
            }
            None => {
                tokio::time::sleep(Duration::from_millis(25)).await;
                waited += Duration::from_millis(25);
            }
        }
    };
    let work = async {
        match state.sessions.open(headers, now).await {
            Ok(current) if current.refresh_token() != Some(rt) => Ok(Refreshed {
                id_token: Secret::new(current.id_token_hint()),
                claims: current.claims().clone(),
                refresh_token: current.refresh_token().map(Secret::new),
                access_token: current.access_token().map(Secret::new),
            }),
            _ => match redeem(provider, session, rt, now).await {
                // Store the renewed session before the lock is released: the next holder must find it.
                Ok(r) => state
                    .sessions
                    .store_renewal(session, &as_new(&r, session), now)
                    .await
                    .map_err(|e| RefreshFailure::Unavailable(e.to_string()))
                    .and_then(|stored| {
                        // Signed out or logged out by the issuer meanwhile: the refresh must not revive it.
                        stored.then_some(r).ok_or_else(|| {
                            RefreshFailure::Refused("the session was ended while it was being refreshed".into())
                        })
                    }),
                Err(e) => Err(e),
            },
        }
    };
    // Renew the lease while the refresh runs: a slow token endpoint must not let a second replica redeem the same
    // (rotating) refresh token, which would end the session.
    let renewing = async {
        loop {
            tokio::time::sleep(LOCK_RENEW_EVERY).await;
            match store.renew(&lease, LOCK_LEASE_MS).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "refresh lock lost while refreshing (lease lapsed); another replica may refresh too"
                    );
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the refresh lock"),
            }
        }
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        r = work => r,
        () = renewing => unreachable!("the renewal loop never finishes"),
    };
    if !store.unlock(&lease).await {
        tracing::warn!("refresh lock already taken over by another holder; left in place");
    }
    result
}

/// The session to keep after refresh `r` of `session`.
fn as_new<'a>(r: &'a Refreshed, session: &'a Session) -> NewSession<'a> {
    NewSession {
        id_token: r.id_token.expose(),
        claims: &r.claims,
        refresh_token: r.refresh_token.as_ref().map(Secret::expose),
        access_token: r.access_token.as_ref().map(Secret::expose),
        nonce: session.nonce(),
        userinfo: session.userinfo(),
        provider: session.provider(),
    }
}

async fn redeem(provider: &Provider, session: &Session, rt: &str, now: i64) -> Result<Refreshed, RefreshFailure> {
    let metrics = provider.metrics();
    let tokens = match provider.refresh(rt).await {
        Ok(t) => t,
        Err(ProviderError::Refused { status, error, .. }) if status < 500 => {
            metrics.event(Event::Refresh("refused"));
            return Err(RefreshFailure::Refused(error));
        }
        Err(e) => {
            metrics.event(Event::Refresh("unavailable"));
            return Err(RefreshFailure::Unavailable(e.to_string()));
        }
    };
    let Some(id_token) = tokens.id_token else {
        metrics.event(Event::Refresh("no_id_token"));
        return Err(RefreshFailure::Unavailable("the issuer returned no ID token on refresh".into()));
    };
    // The JWS (decrypted when the issuer encrypts ID tokens) is what the session keeps.
    let (claims, id_token) = match provider.validate_id_token(id_token.expose(), None, now).await {
        Ok(valid) => valid,
        Err(TokenError::Provider(e)) => return Err(RefreshFailure::Unavailable(e.to_string())),
        Err(TokenError::Rejected(r)) => {
            metrics.event(Event::Refresh("rejected"));
            return Err(RefreshFailure::Rejected(r.to_string()));
        }
    };
    if claims.sub() != session.claims().sub() {
        metrics.event(Event::Refresh("rejected"));
        return Err(RefreshFailure::Rejected("the refreshed ID token names another subject".into()));
    }
    let nonce = claims.get("nonce").and_then(|n| n.as_str());
    if nonce.is_some() && nonce != session.nonce() {
        metrics.event(Event::Refresh("rejected"));
        return Err(RefreshFailure::Rejected("the refreshed ID token carries another nonce".into()));
    }
    metrics.event(Event::Refresh("success"));
    tracing::info!(target: "idgate::audit", event = "refresh", sub = claims.sub(), expires_at = claims.exp(), "session refreshed");
    Ok(Refreshed {
        id_token: Secret::new(id_token),
        claims,
        // Issuers that do not rotate refresh tokens return none: keep using the old one.
        refresh_token: tokens.refresh_token.or_else(|| Some(Secret::new(rt))),
        access_token: if provider.settings().forward_access_token { tokens.access_token } else { None },
    })
}
