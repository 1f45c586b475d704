//! The claims of a validated ID token. Holds claims only: no token, so nothing built from `Claims` can carry one.

use serde_json::{Map, Value};

/// Claims of a validated ID token (or a session opened from one).
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// Wraps a claim map. Only [`super::validate`] and the session opener (which re-reads a token it validated and
    /// sealed itself) build one.
    pub(crate) fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// Claims from arbitrary JSON, for the fuzz targets only (`cargo fuzz` builds with `--cfg fuzzing`).
    #[cfg(fuzzing)]
    pub fn for_fuzzing(map: Map<String, Value>) -> Self {
        Self(map)
    }

    /// The subject.
    pub fn sub(&self) -> &str {
        self.0.get("sub").and_then(Value::as_str).unwrap_or("")
    }

    /// Expiry, seconds since the epoch (validated to exist).
    pub fn exp(&self) -> i64 {
        self.0.get("exp").and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))).unwrap_or(0)
    }

    /// A claim by name. A name that is not a top-level claim and contains dots is read as a path into nested
    /// objects (`address.country`); URL-shaped names (`https://example.com/roles`) are looked up whole.
    pub fn get(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(name) {
            return Some(v);
        }
        if name.contains("://") {
            return None;
        }
        let mut parts = name.split('.');
        let mut cur = self.0.get(parts.next()?)?;
        for part in parts {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur)
    }

    /// A claim as a list of strings: a string is one value, an array its string/number/bool members, a number or
    /// bool its text. Objects and nulls give nothing.
    pub fn values(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(scalar_text).collect(),
            Some(v) => scalar_text(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Adds claims the token does not carry (userinfo enrichment); the token's own claims always win.
    pub(crate) fn add_missing(&mut self, extra: Map<String, Value>) {
        for (k, v) in extra {
            self.0.entry(k).or_insert(v);
        }
    }

    /// The whole claim map, for `/oauth2/userinfo`.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_urls_and_dotted_paths() {
        let c = Claims::new(
            json!({"sub": "u", "https://example.com/roles": ["a", 1, true, {"x": 1}], "address": {"country": "NO"}, "a.b": "flat"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(c.values("https://example.com/roles"), ["a", "1", "true"]);
        assert_eq!(c.values("address.country"), ["NO"]);
        assert_eq!(c.values("a.b"), ["flat"], "a top-level claim with a dot wins");
        assert!(c.values("address.missing").is_empty());
        assert!(c.values("https://example.com/other").is_empty());
        assert!(c.values("address").is_empty(), "objects give no header value");
    }

    fn of(v: Value) -> Claims {
        Claims::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn enrichment_adds_only_what_the_token_lacks() {
        let mut c = of(json!({"sub": "u1", "email": "token@example.com"}));
        c.add_missing(
            json!({"sub": "other", "email": "userinfo@example.com", "name": "Alice"}).as_object().unwrap().clone(),
        );
        assert_eq!(c.as_map(), of(json!({"sub": "u1", "email": "token@example.com", "name": "Alice"})).as_map());
        assert_eq!(c.as_map().len(), 3);
    }

    #[test]
    fn sub_and_exp_accessors() {
        assert_eq!(of(json!({"sub": "u1", "exp": 1_800_000_000})).exp(), 1_800_000_000);
        assert_eq!(of(json!({"exp": 1_800_000_000.9})).exp(), 1_800_000_000, "fractions truncated");
        assert_eq!(of(json!({})).exp(), 0);
        assert_eq!(of(json!({})).sub(), "");
        assert_eq!(of(json!({"sub": 5})).sub(), "");
        // A name with `://` is a whole claim name, never a path, even when a path would resolve.
        let c = of(json!({"https:": {"": {"x": 1}}}));
        assert_eq!(c.get("https://x"), None);
        assert_eq!(c.values("x.y"), Vec::<String>::new());
    }
}
