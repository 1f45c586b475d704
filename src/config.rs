//! Configuration: a TOML or YAML file, `IDGATE_<SECTION>__<KEY>` environment overrides, `*_file` secrets. Loading
//! never panics: every problem is collected into one [`ConfigError`] that names the key, the value where it is not
//! a secret, and why.

pub mod providers;
pub mod assertion;
pub mod raw;
pub mod redis_url;
pub mod settings;
pub mod telemetry;

use std::{collections::HashMap, fmt, path::Path};

pub use settings::{AuthMode, LogFormat, Secret, Settings, StoreKind, TokenAuthMethod};

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`oidc.redirect_url`), or `config` for the file itself.
    pub key: String,
    pub why: String,
}

/// Every problem found in one load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", p.key, p.why)?;
        }
        Ok(())
    }
}

/// Accumulates problems while the configuration is checked.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Records a problem with `key`.
    pub fn add(&mut self, key: &str, why: impl Into<String>) {
        self.0.push(Problem { key: key.to_owned(), why: why.into() });
    }
    /// Records a problem and returns `None`, for use in `filter_map` and `match` arms.
    pub fn bad<T>(&mut self, key: &str, why: &str) -> Option<T> {
        self.add(key, why);
        None
    }
    /// Records a missing required key.
    pub fn missing<T>(&mut self, key: &str) -> Option<T> {
        self.bad(key, "missing (required)")
    }
    /// True when nothing is wrong so far.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn into_error(self) -> ConfigError {
        ConfigError { problems: self.0 }
    }
}

/// Environment variables that are not setting overrides, though they start with `IDGATE_`.
const NON_SETTING_VARS: [&str; 1] = ["IDGATE_CONFIG"];

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 5] =
    ["server.trusted_proxies", "oidc.scopes", "oidc.allowed_algs", "oidc.extra_audiences", "session.previous_secrets"];
/// More list keys: bearer access tokens and the identity assertion.
const MORE_LIST_KEYS: [&str; 3] = ["oidc.api_audiences", "assertion.previous_key_files", "assertion.claims"];

/// Loads the file at `path`, applies overrides from `env` (the process environment, or a map in tests), resolves
/// `*_file` secrets and validates the result.
pub fn load(path: &Path, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let mut p = Problems::default();
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => config::FileFormat::Toml,
        Some("yaml" | "yml") => config::FileFormat::Yaml,
        _ => {
            p.add("config", format!("{}: expected a .toml, .yaml or .yml file", path.display()));
            return Err(p.into_error());
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            p.add("config", format!("cannot read {}: {e}", path.display()));
            return Err(p.into_error());
        }
    };
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("IDGATE_") && !NON_SETTING_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut environment = config::Environment::with_prefix("IDGATE")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(overrides.clone()));
    for key in LIST_KEYS.into_iter().chain(MORE_LIST_KEYS) {
        environment = environment.with_list_parse_key(key);
    }
    for var in overrides.keys() {
        if !var["IDGATE_".len()..].contains("__") {
            p.add(var, "not a setting: overrides are named IDGATE_<SECTION>__<KEY>, e.g. IDGATE_OIDC__CLIENT_SECRET");
        }
    }
    if !p.is_empty() {
        return Err(p.into_error());
    }
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .add_source(environment)
        .build()
        .and_then(|c| c.try_deserialize::<raw::RawConfig>());
    let mut raw = match built {
        Ok(raw) => raw,
        Err(e) => {
            p.add("config", describe_config_error(&e, path));
            return Err(p.into_error());
        }
    };
    resolve_secret_files(&mut raw, &mut p);
    match Settings::from_raw(raw, &mut p) {
        Some(s) if p.is_empty() => Ok(s),
        _ => Err(p.into_error()),
    }
}

/// Loads the settings named by `--config` or `IDGATE_CONFIG`, with the process environment.
pub fn load_from_process(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let path = match path.map(Path::to_path_buf).or_else(|| env.get("IDGATE_CONFIG").map(Into::into)) {
        Some(p) => p,
        None => {
            let mut p = Problems::default();
            p.add("config", "no configuration file: pass --config FILE or set IDGATE_CONFIG");
            return Err(p.into_error());
        }
    };
    load(&path, &env)
}

fn describe_config_error(e: &config::ConfigError, path: &Path) -> String {
    // The config crate names the key and the file in its message; say which file we read.
    let msg = e.to_string();
    if msg.contains(&*path.to_string_lossy()) { msg } else { format!("{msg} (in {})", path.display()) }
}

/// A `*_file` setting's value as named in an error: quoted, unless it is key material rather than a path (PEM text
/// pasted where its file's path belongs, as an environment override fed from a secret easily does), which is
/// never echoed.
pub fn path_shown(path: &str) -> String {
    if path.contains("-----BEGIN") || path.contains('\n') {
        "(not shown: the value looks like key text, not a file path; give the path of the file holding it)".into()
    } else {
        format!("{path:?}")
    }
}

/// Replaces `client_secret_file` / `secret_file` with the file's content (trailing newline removed).
fn resolve_secret_files(raw: &mut raw::RawConfig, p: &mut Problems) {
    fn read(p: &mut Problems, key: &str, path: &str) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(s) if s.trim().is_empty() => p.bad(key, &format!("{path}: the file is empty")),
            Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => p.bad(key, &format!("{}: cannot read ({e})", path_shown(path))),
        }
    }
    if let Some(path) = raw.oidc.client_secret_file.take() {
        if raw.oidc.client_secret.is_some() {
            p.add("oidc.client_secret_file", "set either client_secret or client_secret_file, not both");
        }
        raw.oidc.client_secret = read(p, "oidc.client_secret_file", &path);
    }
    for (i, provider) in raw.providers.iter_mut().enumerate() {
        if let Some(path) = provider.oidc.client_secret_file.take() {
            let key = format!("providers[{i}].client_secret_file");
            if provider.oidc.client_secret.is_some() {
                p.add(&key, "set either client_secret or client_secret_file, not both");
            }
            provider.oidc.client_secret = read(p, &key, &path);
        }
    }
    if let Some(path) = raw.session.secret_file.take() {
        if raw.session.secret.is_some() {
            p.add("session.secret_file", "set either secret or secret_file, not both");
        }
        raw.session.secret = read(p, "session.secret_file", &path);
    }
}

#[cfg(test)]
mod tests;
