//! Reading request cookies and writing `Set-Cookie` values: attributes, chunking of large values over
//! `NAME_0`, `NAME_1`, … with a hard cap on how many chunks are ever read, and clearing.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, header::COOKIE};

/// Largest value put in one cookie; with the name and attributes it stays under the browsers' 4096 bytes.
pub const CHUNK_BYTES: usize = 3800;
/// At most this many chunks are read or written (≈ 30 KB): a cookie claiming thousands costs nothing.
pub const MAX_CHUNKS: usize = 8;

/// Iterates over `(name, value)` pairs of every `Cookie` header.
pub fn iter(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).filter_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        Some((n.trim(), v.trim()))
    })
}

/// The first value of cookie `name`.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    iter(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// Reads a possibly chunked value: `NAME` whole, or `NAME_0`, `NAME_1`, … in order up to [`MAX_CHUNKS`].
/// A gap ends the chunk list; the result is then opened (and fails) as a truncated value.
pub fn get_chunked<'h>(headers: &'h HeaderMap, name: &str) -> Option<Cow<'h, str>> {
    if let Some(v) = get(headers, name) {
        return Some(Cow::Borrowed(v));
    }
    let mut parts: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let prefix_len = name.len() + 1;
    for (n, v) in iter(headers) {
        if n.len() == prefix_len + 1
            && n.starts_with(name)
            && n.as_bytes()[name.len()] == b'_'
            && let Some(i) = (n.as_bytes()[prefix_len] as char).to_digit(10)
            && (i as usize) < MAX_CHUNKS
            && parts[i as usize].is_none()
        {
            parts[i as usize] = Some(v);
        }
    }
    let mut out = String::new();
    for p in parts.iter().map_while(|p| *p) {
        out.push_str(p);
    }
    (!out.is_empty()).then_some(Cow::Owned(out))
}

/// Cookie attributes shared by every cookie idgate sets.
#[derive(Debug, Clone)]
pub struct Attributes {
    pub secure: bool,
    pub domain: Option<String>,
}

impl Attributes {
    fn write(&self, out: &mut String, path: &str, max_age: i64) {
        out.push_str("; Path=");
        out.push_str(path);
        out.push_str("; Max-Age=");
        out.push_str(&max_age.max(0).to_string());
        if let Some(d) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(d);
        }
        out.push_str("; HttpOnly; SameSite=Lax");
        if self.secure {
            out.push_str("; Secure");
        }
    }

    /// `Set-Cookie` for one cookie.
    pub fn set(&self, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
        let mut s = String::with_capacity(name.len() + value.len() + 96);
        s.push_str(name);
        s.push('=');
        s.push_str(value);
        self.write(&mut s, path, max_age);
        // The name, domain and path come from validated settings and the value is sealed base64url, so this holds;
        // should a setting built in code break it, the cookie is not set, and the request still gets an answer.
        HeaderValue::try_from(s).unwrap_or_else(|_| {
            tracing::error!(cookie = name, "a Set-Cookie value was not header-safe; the cookie was not set");
            HeaderValue::from_static("idgate_invalid_cookie=; Max-Age=0")
        })
    }

    /// `Set-Cookie` that deletes a cookie.
    pub fn clear(&self, name: &str, path: &str) -> HeaderValue {
        self.set(name, "", path, 0)
    }

    /// `Set-Cookie` values storing `value` under `name`, chunked when large, and clearing whatever chunks or whole
    /// cookie of that name the request carried and the new value does not overwrite. `None` when the value is too
    /// large even for [`MAX_CHUNKS`] chunks.
    pub fn set_chunked(
        &self,
        req: &HeaderMap,
        name: &str,
        value: &str,
        path: &str,
        max_age: i64,
    ) -> Option<Vec<HeaderValue>> {
        let mut out = Vec::new();
        if value.len() <= CHUNK_BYTES {
            out.push(self.set(name, value, path, max_age));
            for i in present_chunks(req, name) {
                out.push(self.clear(&chunk_name(name, i), path));
            }
            return Some(out);
        }
        let chunks: Vec<&str> =
            value.as_bytes().chunks(CHUNK_BYTES).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
        if chunks.len() > MAX_CHUNKS {
            return None;
        }
        for (i, c) in chunks.iter().enumerate() {
            out.push(self.set(&chunk_name(name, i), c, path, max_age));
        }
        if get(req, name).is_some() {
            out.push(self.clear(name, path));
        }
        for i in present_chunks(req, name).filter(|i| *i >= chunks.len()) {
            out.push(self.clear(&chunk_name(name, i), path));
        }
        Some(out)
    }

    /// `Set-Cookie` values clearing `name` and every chunk of it the request carried.
    pub fn clear_chunked(&self, req: &HeaderMap, name: &str, path: &str) -> Vec<HeaderValue> {
        std::iter::once(self.clear(name, path))
            .chain(present_chunks(req, name).map(|i| self.clear(&chunk_name(name, i), path)))
            .collect()
    }
}

fn chunk_name(name: &str, i: usize) -> String {
    format!("{name}_{i}")
}

fn present_chunks<'a>(req: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = usize> + 'a {
    (0..MAX_CHUNKS).filter(move |i| get(req, &chunk_name(name, *i)).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    #[test]
    fn reads_whole_and_chunked_values() {
        assert_eq!(get_chunked(&headers("a=1; idgate=xyz"), "idgate").as_deref(), Some("xyz"));
        assert_eq!(get_chunked(&headers("idgate_1=def; idgate_0=abc"), "idgate").as_deref(), Some("abcdef"));
        // A gap ends the list: the caller then fails to open a truncated value.
        assert_eq!(get_chunked(&headers("idgate_0=abc; idgate_2=ghi"), "idgate").as_deref(), Some("abc"));
        assert_eq!(get_chunked(&headers("idgate_flow_x=1"), "idgate"), None);
    }

    #[test]
    fn thousands_of_chunks_read_at_most_the_cap() {
        let many: Vec<String> = (0..3000).map(|i| format!("idgate_{i}=x")).collect();
        let h = headers(&many.join("; "));
        let value = get_chunked(&h, "idgate").unwrap();
        assert_eq!(value.len(), MAX_CHUNKS);
    }

    #[test]
    fn chunking_splits_and_clears_leftovers() {
        let a = Attributes { secure: true, domain: None };
        let big = "v".repeat(CHUNK_BYTES * 2 + 10);
        let set = a.set_chunked(&headers("idgate=old; idgate_5=old"), "idgate", &big, "/", 60).unwrap();
        let text: Vec<&str> = set.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(text.iter().filter(|s| s.contains("Max-Age=60")).count(), 3);
        assert!(text.iter().any(|s| s.starts_with("idgate=; ") && s.contains("Max-Age=0")));
        assert!(text.iter().any(|s| s.starts_with("idgate_5=; ") && s.contains("Max-Age=0")));
        assert!(text.iter().all(|s| s.contains("HttpOnly") && s.contains("SameSite=Lax") && s.contains("Secure")));
        assert!(
            a.set_chunked(&HeaderMap::new(), "idgate", &"v".repeat(CHUNK_BYTES * MAX_CHUNKS + 1), "/", 60).is_none()
        );
    }
}
