//! A login in progress: state, nonce, PKCE verifier and return path, sealed into a short-lived cookie named after
//! the state, so several tabs can log in at once. At most `session.max_flows` exist; starting one more drops the
//! oldest.

use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::session::{
    cookie::{self, Attributes},
    seal::KeyRing,
};

/// How long a login may take.
pub const FLOW_TTL_SECS: i64 = 600;
/// Length of a state value (16 random bytes, base64url).
const STATE_LEN: usize = 22;

/// One login in progress.
#[derive(Debug, Serialize, Deserialize)]
pub struct Flow {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub verifier: crate::config::Secret,
    #[serde(rename = "r")]
    pub return_to: String,
    #[serde(rename = "t")]
    pub created: i64,
    /// Sent with `prompt=none`: a `login_required` answer restarts the login interactively.
    #[serde(rename = "q", default)]
    pub silent: bool,
    /// A form post was kept for this login (`super::preserved_post`): the callback sends it on.
    #[serde(rename = "p", default, skip_serializing_if = "std::ops::Not::not")]
    pub post: bool,
}

/// Seals, opens and names flow cookies.
#[derive(Debug)]
pub struct Flows {
    pub ring: KeyRing,
    pub prefix: String,
    pub path: String,
    pub attrs: Attributes,
    pub max: usize,
}

impl Flows {
    fn name(&self, state: &str) -> String {
        format!("{}{}", self.prefix, state)
    }

    /// A state value is the only part of a cookie name taken from the request: check its shape first.
    pub fn is_state(state: &str) -> bool {
        state.len() == STATE_LEN && state.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// `Set-Cookie` for a new flow, plus deletions of the oldest flows beyond the limit.
    pub fn begin(&self, req: &HeaderMap, flow: &Flow) -> Vec<HeaderValue> {
        let mut existing: Vec<(i64, String)> = cookie::iter(req)
            .filter_map(|(n, v)| {
                let state = n.strip_prefix(self.prefix.as_str())?;
                let created = self.open_named(n, v).filter(|f| f.state == state).map(|f| f.created).unwrap_or(i64::MIN);
                Some((created, n.to_owned()))
            })
            .collect();
        existing.sort();
        existing.dedup_by(|a, b| a.1 == b.1);
        let excess = (existing.len() + 1).saturating_sub(self.max);
        let mut out: Vec<HeaderValue> =
            existing.iter().take(excess).map(|(_, n)| self.attrs.clear(n, &self.path)).collect();
        let name = self.name(&flow.state);
        let value = self.ring.seal(&name, &serde_json::to_vec(flow).unwrap_or_default());
        out.push(self.attrs.set(&name, &value, &self.path, FLOW_TTL_SECS));
        out
    }

    fn open_named(&self, name: &str, value: &str) -> Option<Flow> {
        serde_json::from_slice(&self.ring.open(name, value).ok()?).ok()
    }

    /// The flow for `state`, if its cookie is present and opens.
    pub fn find(&self, req: &HeaderMap, state: &str) -> Option<Flow> {
        let name = self.name(state);
        let flow = self.open_named(&name, cookie::get(req, &name)?)?;
        (flow.state == state).then_some(flow)
    }

    /// `Set-Cookie` deleting the flow for `state`.
    pub fn end(&self, state: &str) -> HeaderValue {
        self.attrs.clear(&self.name(state), &self.path)
    }

    /// `Set-Cookie` deleting every flow cookie the request carried.
    pub fn end_all(&self, req: &HeaderMap) -> Vec<HeaderValue> {
        cookie::iter(req)
            .filter(|(n, _)| n.starts_with(self.prefix.as_str()))
            .map(|(n, _)| self.attrs.clear(n, &self.path))
            .collect()
    }
}
