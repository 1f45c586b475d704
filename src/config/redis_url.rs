//! `session.redis_url`: one Redis (`redis://`, `rediss://`, parsed by the `redis` crate), a Sentinel-managed
//! primary (`redis+sentinel://`, `rediss+sentinel://`) or a Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
//! The multi-host forms list several addresses after the credentials:
//!
//! ```text
//! redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/SERVICE[/DB][?sentinel_username=U&sentinel_password=P]
//! redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…][/]
//! ```
//!
//! The credentials in front are the data nodes' (the primary's and replicas'); sentinels are asked with the
//! `sentinel_*` ones, or without any. `rediss+` uses TLS (system roots) to every node. Ports default to 26379 for
//! sentinels and 6379 otherwise. The reasons given for a bad URL never repeat it: it may hold a password.

use std::fmt;

use super::Secret;

/// Which Redis deployment a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (the `redis` crate's own URL: `redis://`, `rediss://`).
    Node,
    /// A primary found through Redis Sentinel by its service (master) name.
    Sentinel { service: String },
    /// A Redis Cluster, found through its seed nodes.
    Cluster,
}

/// A parsed multi-host URL; passwords are [`Secret`]s, so `Debug` never shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiHost {
    pub topology: Topology,
    pub tls: bool,
    /// Sentinels (sentinel form) or seed nodes (cluster form), in the order given.
    pub hosts: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The database (sentinel form; a cluster has only database 0).
    pub db: i64,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<Secret>,
}

impl MultiHost {
    /// The URL as it would be written, with every password shown as `***` (for `idgate check`).
    pub fn redacted(&self) -> String {
        let scheme = match (&self.topology, self.tls) {
            (Topology::Sentinel { .. }, false) => "redis+sentinel",
            (Topology::Sentinel { .. }, true) => "rediss+sentinel",
            (_, false) => "redis+cluster",
            (_, true) => "rediss+cluster",
        };
        let user = self.username.as_deref().unwrap_or("");
        let auth = match (&self.username, &self.password) {
            (_, Some(_)) => format!("{user}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(h, p)| if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") })
            .collect();
        let mut out = format!("{scheme}://{auth}{}", hosts.join(","));
        if let Topology::Sentinel { service } = &self.topology {
            out.push_str(&format!("/{service}/{}", self.db));
        }
        let mut query = Vec::new();
        if let Some(u) = &self.sentinel_username {
            query.push(format!("sentinel_username={u}"));
        }
        if self.sentinel_password.is_some() {
            query.push("sentinel_password=***".to_owned());
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }
}

/// A parsed `session.redis_url`.
#[derive(Clone, PartialEq)]
pub enum RedisUrl {
    /// One server: the URL as given, for the `redis` crate.
    Node(Secret),
    /// Sentinel or Cluster.
    Multi(MultiHost),
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisUrl::Node(url) => f.debug_tuple("Node").field(url).finish(),
            RedisUrl::Multi(m) => m.fmt(f),
        }
    }
}

/// Why a URL was refused (never containing the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

fn bad<T>(why: impl Into<String>) -> Result<T, UrlError> {
    Err(UrlError(why.into()))
}

const SCHEMES: &str =
    "redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://";

/// Parses and checks a `session.redis_url`.
pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
    let Some((scheme, rest)) = url.split_once("://") else { return bad(format!("must start with {SCHEMES}")) };
    let (tls, sentinel) = match scheme {
        "redis" | "rediss" => return node(url),
        "redis+sentinel" => (false, true),
        "rediss+sentinel" => (true, true),
        "redis+cluster" => (false, false),
        "rediss+cluster" => (true, false),
        _ => return bad(format!("must start with {SCHEMES}")),
    };
    let form = if sentinel { "redis+sentinel://" } else { "redis+cluster://" };
    if rest.contains('#') {
        return bad(format!("{form}: a fragment (#) is not allowed"));
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = u.split_once(':').map_or((u, None), |(a, b)| (a, Some(b)));
            let user = Some(decode(user, form, "user name")?).filter(|s| !s.is_empty());
            let pass = pass.map(|p| decode(p, form, "password")).transpose()?.filter(|s| !s.is_empty());
            (user, pass.map(Secret::new))
        }
    };
    let default_port = if sentinel { 26379 } else { 6379 };
    let mut hosts = Vec::new();
    for h in hostlist.split(',') {
        hosts.push(host(h, default_port, form)?);
    }
    let mut segments: Vec<&str> = path.split('/').collect();
    if segments.last() == Some(&"") {
        segments.pop();
    }
    let (topology, db) = if sentinel {
        let Some(service) = segments.first() else {
            return bad(format!("{form}: names no service: add /SERVICE (the sentinels' master name) after the hosts"));
        };
        let service = decode(service, form, "service name")?;
        if service.is_empty() {
            return bad(format!("{form}: the service name is empty"));
        }
        let db = match segments.get(1) {
            None => 0,
            Some(d) => match d.parse::<i64>() {
                Ok(n) if (0..=15_000).contains(&n) => n,
                _ => return bad(format!("{form}: the database after the service must be a number")),
            },
        };
        if segments.len() > 2 {
            return bad(format!("{form}: the path is /SERVICE or /SERVICE/DB"));
        }
        (Topology::Sentinel { service }, db)
    } else {
        match segments.as_slice() {
            [] | ["0"] => {}
            _ => return bad(format!("{form}: a cluster has only database 0 and takes no path")),
        }
        (Topology::Cluster, 0)
    };
    let (mut sentinel_username, mut sentinel_password) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, sentinel) {
            ("sentinel_username", true) => sentinel_username = Some(decode(v, form, "sentinel_username")?),
            ("sentinel_password", true) => sentinel_password = Some(Secret::new(decode(v, form, "sentinel_password")?)),
            _ if sentinel => {
                return bad(format!(
                    "{form}: unknown parameter {:?} (expected sentinel_username, sentinel_password)",
                    printable(k)
                ));
            }
            _ => return bad(format!("{form}: unknown parameter {:?} (it takes none)", printable(k))),
        }
    }
    Ok(RedisUrl::Multi(MultiHost {
        topology,
        tls,
        hosts,
        username,
        password,
        db,
        sentinel_username: sentinel_username.filter(|s| !s.is_empty()),
        sentinel_password: sentinel_password.filter(|s| !s.expose().is_empty()),
    }))
}

/// The single-server form: checked by the `redis` crate's own parser (which redacts passwords in its errors).
fn node(url: &str) -> Result<RedisUrl, UrlError> {
    use redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(_) => Ok(RedisUrl::Node(Secret::new(url))),
        Err(e) => bad(format!("not a valid redis:// URL: {e}")),
    }
}

/// `HOST[:PORT]` or `[IPV6][:PORT]`.
fn host(h: &str, default_port: u16, form: &str) -> Result<(String, u16), UrlError> {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return bad(format!("{form}: an IPv6 host lacks its ']'")) };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return bad(format!("{form}: {:?} is not an IPv6 address", printable(v6)));
        }
        match after.strip_prefix(':') {
            Some(p) => (v6, Some(p)),
            None if after.is_empty() => (v6, None),
            None => return bad(format!("{form}: unexpected text after an IPv6 host")),
        }
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    if name.is_empty() {
        return bad(format!("{form}: an empty host in the host list"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return bad(format!("{form}: {:?} is not a host name", printable(name)));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return bad(format!("{form}: {:?} is not a port", printable(p))),
        },
    };
    Ok((name.to_owned(), port))
}

fn decode(s: &str, form: &str, what: &str) -> Result<String, UrlError> {
    match percent_encoding::percent_decode_str(s).decode_utf8() {
        Ok(v) => Ok(v.into_owned()),
        Err(_) => bad(format!("{form}: the {what} is not UTF-8 once percent-decoded")),
    }
}

/// A short, printable excerpt of a non-secret part (host, port, parameter name) for a reason.
fn printable(s: &str) -> String {
    s.chars().take(64).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi(url: &str) -> MultiHost {
        match parse(url) {
            Ok(RedisUrl::Multi(m)) => m,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn sentinel_form() {
        let m = multi("redis+sentinel://:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]:5000/mymaster/2?sentinel_password=sp");
        assert_eq!(m.topology, Topology::Sentinel { service: "mymaster".into() });
        assert!(!m.tls);
        assert_eq!(m.hosts, [("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26380), ("::1".into(), 5000)]);
        assert_eq!(m.username, None);
        assert_eq!(m.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(m.sentinel_password.as_ref().map(Secret::expose), Some("sp"));
        assert_eq!(m.db, 2);
        let t = multi("rediss+sentinel://app:pw@s1/svc?sentinel_username=watch&sentinel_password=x");
        assert!(t.tls);
        assert_eq!(t.username.as_deref(), Some("app"));
        assert_eq!(t.sentinel_username.as_deref(), Some("watch"));
        assert_eq!(t.db, 0);
    }

    #[test]
    fn cluster_form() {
        let m = multi("redis+cluster://u:pw@a:7000,b:7001,c");
        assert_eq!(m.topology, Topology::Cluster);
        assert_eq!(m.hosts, [("a".into(), 7000), ("b".into(), 7001), ("c".into(), 6379)]);
        assert_eq!(m.username.as_deref(), Some("u"));
        assert!(multi("rediss+cluster://a:7000/").tls);
    }

    #[test]
    fn single_node_is_the_redis_crates_url() {
        assert!(matches!(parse("redis://:pw@127.0.0.1:6379/3"), Ok(RedisUrl::Node(_))));
        assert!(matches!(parse("rediss://h/"), Ok(RedisUrl::Node(_))));
    }

    #[test]
    fn refusals_name_the_reason_and_never_the_password() {
        for (url, reason) in [
            ("http://h", "must start with redis://"),
            ("redis+sentinel://:hunter2@h1,h2", "names no service"),
            ("redis+sentinel://:hunter2@h1/", "names no service"),
            ("redis+sentinel://:hunter2@h1/svc/x", "database after the service must be a number"),
            ("redis+sentinel://:hunter2@h1/svc/1/2", "/SERVICE or /SERVICE/DB"),
            ("redis+sentinel://:hunter2@h1/svc?password=hunter2", "unknown parameter \"password\""),
            ("redis+cluster://:hunter2@h1,h2/3", "only database 0"),
            ("redis+cluster://:hunter2@h1?x=1", "unknown parameter \"x\""),
            ("redis+cluster://:hunter2@h1,,h2", "empty host"),
            ("redis+cluster://:hunter2@h1:99999", "\"99999\" is not a port"),
            ("redis+cluster://:hunter2@h1:0", "is not a port"),
            ("redis+cluster://:hunter2@[::1", "lacks its ']'"),
            ("redis+cluster://:hunter2@h%20x", "is not a host name"),
            ("redis+cluster://:hunter2@h#frag", "fragment"),
            ("redis+sentinel://:%ff@h/svc", "password is not UTF-8"),
            ("redis://:hunter2@:6379/", "not a valid redis:// URL"),
            ("redis://:hunter2@h:port/", "not a valid redis:// URL"),
            ("redis://:hunter2@h/x", "not a valid redis:// URL"),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.contains(reason), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }

    #[test]
    fn redacted_shows_everything_but_the_passwords() {
        let m = multi("redis+sentinel://app:hunter2@s1,[::1]:26380/mymaster?sentinel_password=hunter2");
        assert_eq!(m.redacted(), "redis+sentinel://app:***@s1:26379,[::1]:26380/mymaster/0?sentinel_password=***");
        assert_eq!(multi("rediss+cluster://n1:7000,n2").redacted(), "rediss+cluster://n1:7000,n2:6379");
    }

    #[test]
    fn debug_never_shows_a_password() {
        for url in ["redis+sentinel://u:hunter2@h/svc?sentinel_password=hunter2", "redis://:hunter2@h/"] {
            let d = format!("{:?}", parse(url).unwrap());
            assert!(!d.contains("hunter2"), "{d}");
        }
    }
}
