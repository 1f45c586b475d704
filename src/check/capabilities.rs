//! What the issuer's discovery document offers against what is configured: client authentication, ID-token
//! encryption, PAR and DPoP — one finding each, with the fix. Pure: settings and metadata in, findings out.

use crate::{
    config::{TokenAuthMethod, settings::OidcSettings},
    id_token::jwe::KeyAlg,
    oidc::Metadata,
};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Configured and offered.
    Ok,
    /// Information, or something that could be used.
    Note,
    /// Works, but not as configured or meant.
    Warn,
    /// Logins cannot work this way.
    Error,
}

/// One line of `idgate check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

impl Finding {
    /// The text is shown with control and bidi characters escaped: it quotes the issuer's discovery document,
    /// which must not drive the operator's terminal (ANSI/OSC escapes, a carriage return rewriting the line).
    fn new(level: Level, text: impl Into<String>) -> Self {
        Self { level, text: shown(&text.into()) }
    }
}

/// `text` with control characters (C0, DEL, C1) and bidi overrides/isolates escaped (`\u{1b}`), the rest as is.
fn shown(text: &str) -> String {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return text.to_owned();
    }
    text.chars().map(|c| if unsafe_char(c) { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The discovery name of a client authentication method.
pub fn method_name(m: TokenAuthMethod) -> &'static str {
    match m {
        TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
        TokenAuthMethod::ClientSecretPost => "client_secret_post",
        TokenAuthMethod::PrivateKeyJwt => "private_key_jwt",
    }
}

/// The findings for `s` against `m`. `jwks_url` is where idgate publishes its keys (`{origin}{prefix}/jwks`).
pub fn findings(s: &OidcSettings, m: &Metadata, jwks_url: &str) -> Vec<Finding> {
    vec![client_auth(s, m, jwks_url), encryption(s, m, jwks_url), par(s, m), dpop(s, m)]
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

fn client_auth(s: &OidcSettings, m: &Metadata, jwks_url: &str) -> Finding {
    let name = method_name(s.token_auth_method);
    // Discovery §3: without the list, client_secret_basic is what the issuer supports.
    let supported =
        m.token_endpoint_auth_methods_supported.clone().unwrap_or_else(|| vec!["client_secret_basic".into()]);
    if !supported.iter().any(|x| x == name) {
        return Finding::new(
            Level::Error,
            format!(
                "client auth: the issuer does not list {name} in token_endpoint_auth_methods_supported ({}): set \
                 oidc.token_auth_method to one it supports",
                list(&supported)
            ),
        );
    }
    let Some(key) = s.client_key.as_ref().filter(|_| s.token_auth_method == TokenAuthMethod::PrivateKeyJwt) else {
        let hint = if supported.iter().any(|x| x == "private_key_jwt") {
            "; the issuer also accepts private_key_jwt (no shared secret: oidc.client_key_file)"
        } else {
            ""
        };
        return Finding::new(Level::Ok, format!("client auth: {name}, supported by the issuer{hint}"));
    };
    let alg = key.0.alg().name();
    if let Some(algs) = &m.token_endpoint_auth_signing_alg_values_supported
        && !algs.iter().any(|a| a == alg)
    {
        return Finding::new(
            Level::Error,
            format!(
                "client auth: the issuer accepts client assertions signed with {} but the key signs {alg}: use a key \
                 and oidc.client_key_alg it accepts",
                list(algs)
            ),
        );
    }
    Finding::new(
        Level::Ok,
        format!(
            "client auth: private_key_jwt ({alg}, kid {}), supported by the issuer; register jwks_uri = {jwks_url}",
            key.0.kid()
        ),
    )
}

fn encryption(s: &OidcSettings, m: &Metadata, jwks_url: &str) -> Finding {
    let advertised = m.id_token_encryption_alg_values_supported.clone().unwrap_or_default();
    let d = &s.id_token_decryption;
    let Some(keys) = &d.keys else {
        return if advertised.is_empty() {
            Finding::new(Level::Note, "encryption: the issuer offers no ID token encryption; none configured")
        } else {
            Finding::new(
                Level::Note,
                format!(
                    "encryption: the issuer can encrypt ID tokens ({}): to use it, set \
                     oidc.id_token_decryption_key_file and register its public half ({jwks_url})",
                    list(&advertised)
                ),
            )
        };
    };
    let bad = if d.required { Level::Error } else { Level::Warn };
    if advertised.is_empty() {
        return Finding::new(
            bad,
            "encryption: a decryption key is given but the issuer advertises no id_token_encryption_alg_values_supported: \
             enable encryption for the client at the issuer, or remove oidc.id_token_decryption_key_file",
        );
    }
    let ktys: Vec<String> =
        keys.public_jwks().iter().filter_map(|k| k["kty"].as_str().map(str::to_owned)).collect::<Vec<_>>();
    let fits = |a: &KeyAlg| {
        let rsa = a.name().starts_with("RSA");
        ktys.iter().any(|k| if rsa { k == "RSA" } else { k == "EC" })
    };
    let usable: Vec<&str> = d
        .allowed
        .algs
        .iter()
        .filter(|a| fits(a) && advertised.iter().any(|x| x == a.name()))
        .map(|a| a.name())
        .collect();
    if usable.is_empty() {
        return Finding::new(
            bad,
            format!(
                "encryption: the issuer encrypts with {}, none of which fits the key(s) given ({}) and \
                 oidc.id_token_encryption_algs: give a key of a type it uses (RSA for RSA-OAEP*, EC P-256 for ECDH-ES*) \
                 or allow one of its algorithms",
                list(&advertised),
                ktys.join(", ")
            ),
        );
    }
    let encs_advertised = m.id_token_encryption_enc_values_supported.clone().unwrap_or_default();
    let encs: Vec<&str> = d
        .allowed
        .encs
        .iter()
        .map(|e| e.name())
        .filter(|e| encs_advertised.is_empty() || encs_advertised.iter().any(|x| x == e))
        .collect();
    if encs.is_empty() {
        return Finding::new(
            bad,
            format!(
                "encryption: the issuer's content encryption ({}) is not in oidc.id_token_encryption_encs: allow one",
                list(&encs_advertised)
            ),
        );
    }
    Finding::new(
        Level::Ok,
        format!(
            "encryption: usable with {} + {}{}; the public key is at {jwks_url}",
            usable.join("/"),
            encs.join("/"),
            if d.required { ", required" } else { "" }
        ),
    )
}

fn par(s: &OidcSettings, m: &Metadata) -> Finding {
    let endpoint = m.pushed_authorization_request_endpoint.as_deref();
    match (endpoint, s.par, m.require_pushed_authorization_requests) {
        (None, _, true) => Finding::new(
            Level::Error,
            "PAR: the issuer requires pushed authorization requests but names no pushed_authorization_request_endpoint",
        ),
        (None, true, _) => Finding::new(
            Level::Error,
            "PAR: oidc.par = true but the issuer has no pushed_authorization_request_endpoint: set oidc.par = false",
        ),
        (None, false, false) => Finding::new(Level::Note, "PAR: not offered by the issuer; not used"),
        (Some(e), _, true) => {
            Finding::new(Level::Ok, format!("PAR: required by the issuer, every login pushes its parameters to {e}"))
        }
        (Some(e), true, false) => Finding::new(Level::Ok, format!("PAR: on, parameters pushed to {e}")),
        (Some(_), false, false) => Finding::new(
            Level::Note,
            "PAR: the issuer supports it: oidc.par = true keeps the authorization parameters off the browser's URL",
        ),
    }
}

/// DPoP (RFC 9449): what the issuer accepts against `oidc.dpop` and the key's algorithms.
fn dpop(s: &OidcSettings, m: &Metadata) -> Finding {
    use crate::oidc::dpop::DpopMode;
    let offered = m.dpop_signing_alg_values_supported.as_deref().filter(|a| !a.is_empty());
    match (s.dpop.mode, offered) {
        (DpopMode::On, None) => Finding::new(
            Level::Warn,
            "DPoP: oidc.dpop = true, but the issuer lists no dpop_signing_alg_values_supported: if it answers Bearer \
             tokens, logins fail; enable DPoP for the client at the issuer or set oidc.dpop = false",
        ),
        (DpopMode::On, Some(algs)) => {
            // A generated key is P-256.
            let ours = s.dpop.key.as_ref().map(|k| k.algs()).unwrap_or_else(|| vec!["ES256"]);
            let key = if s.dpop.key.is_some() { "oidc.dpop_key_file" } else { "a P-256 key generated at start" };
            match ours.iter().find(|a| algs.iter().any(|x| x == *a)) {
                Some(alg) => Finding::new(Level::Ok, format!("DPoP: on, proofs signed {alg} with {key}")),
                None => Finding::new(
                    Level::Error,
                    format!(
                        "DPoP: {key} signs {}, the issuer accepts {}: give oidc.dpop_key_file a key of an accepted \
                         type",
                        ours.join(", "),
                        list(algs)
                    ),
                ),
            }
        }
        (DpopMode::Off, Some(algs)) => Finding::new(
            Level::Note,
            format!(
                "DPoP: off (oidc.dpop = false); the issuer accepts proofs signed with {}: oidc.dpop = true binds its \
                 tokens to idgate's key",
                list(algs)
            ),
        ),
        (_, Some(algs)) => Finding::new(
            Level::Note,
            format!(
                "DPoP: the issuer accepts proofs signed with {}: oidc.dpop = true binds its tokens to idgate's key \
                 (unset: proofs only once the issuer demands them)",
                list(algs)
            ),
        ),
        (_, None) => Finding::new(
            Level::Note,
            "DPoP: not offered by the issuer (no dpop_signing_alg_values_supported): leave oidc.dpop off",
        ),
    }
}

#[cfg(test)]
mod tests;
