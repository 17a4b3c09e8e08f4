//! Layered configuration: built-in defaults < a TOML file < `GIM_`-prefixed environment variables.
//!
//! Environment keys name a path with `__` between levels: `GIM_MYSQL__URL`,
//! `GIM_CONN__MAX_CONNECTIONS`. A value is read with the type of the default at that path (so
//! `GIM_CONN__NODE_NAME=123` stays a string); arrays take comma-separated values. The environment is
//! passed in as a map, so tests never touch the process environment.
//!
//! Every error names the key and the reason in one line, and `main` exits non-zero with it.
//! Unknown keys are errors too: a typo must not silently fall back to a default.

mod conn;
mod logic;

pub use conn::{ConnConfig, ConnSection};
pub use logic::{LogicConfig, LogicSection};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

/// Prefix of the environment variables read as config.
pub const ENV_PREFIX: &str = "GIM_";

/// `GIM_` variables that are not config keys: the binaries read the config file's path from it,
/// so the loader must not treat it as an unknown key.
pub const ENV_NOT_KEYS: &[&str] = &["GIM_CONFIG_FILE"];

/// A config problem, always naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Semantic checks that serde cannot express (ranges, non-empty strings, relations between keys).
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` from its defaults, then `file` (if given), then the `GIM_` entries of `env`.
pub fn load<T>(file: Option<&Path>, env: &HashMap<String, String>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let mut merged = toml::Value::try_from(T::default())
        .map_err(|e| ConfigError::new("<defaults>", e.to_string()))?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let from_file: toml::Value = toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                e.message().trim().to_string() + &line_of(&text, e.span()),
            )
        })?;
        merge(&mut merged, from_file);
    }
    let mut keys: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
        .collect();
    keys.sort();
    for key in keys {
        apply_env(&mut merged, key, &env[key])?;
    }
    let cfg: T = serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::new(
            if path == "." { "<root>".into() } else { path },
            inner.message().trim().to_string(),
        )
    })?;
    cfg.validate()?;
    Ok(cfg)
}

/// Loads config for a binary: `file` from its `--config` flag, env from the process.
pub fn load_from_process<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load(file, &std::env::vars().collect())
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
        .unwrap_or_default()
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn apply_env(root: &mut toml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let key = path.join(".");
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::new(var, "empty path segment"));
    }
    let mut node = root;
    for seg in &path[..path.len() - 1] {
        let table = node
            .as_table_mut()
            .ok_or_else(|| ConfigError::new(&key, "not a section"))?;
        node = table
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| ConfigError::new(&key, "not a section"))?;
    let last = path.last().expect("non-empty");
    let value = typed_like(table.get(last), raw).map_err(|r| ConfigError::new(&key, r))?;
    table.insert(last.clone(), value);
    Ok(())
}

/// Parses an environment value as the type of the existing default, or guesses for unknown keys
/// (which then fail deserialization with an "unknown field" error naming the key).
fn typed_like(existing: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    use toml::Value as V;
    let raw = raw.trim();
    Ok(match existing {
        Some(V::String(_)) | None => V::String(raw.to_string()),
        Some(V::Integer(_)) => V::Integer(
            raw.parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        Some(V::Float(_)) => V::Float(
            raw.parse()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        Some(V::Boolean(_)) => V::Boolean(match raw {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("expected true or false, got {raw:?}")),
        }),
        Some(V::Array(_)) => V::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| V::String(s.to_string()))
                .collect(),
        ),
        Some(other) => {
            return Err(format!(
                "cannot be set from the environment ({})",
                other.type_str()
            ));
        }
    })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (readable lines) or `json` (one object per line, for log collectors).
    pub format: LogFormat,
    /// `RUST_LOG`-style filter, e.g. `info,gim_logic=debug`. `RUST_LOG` itself wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database`.
    pub url: String,
    /// Pool size of each logic process: MySQL must allow this many times the logic replicas.
    pub max_connections: u32,
    /// A call that cannot get a connection within this fails with UNAVAILABLE instead of hanging.
    pub acquire_timeout_ms: u64,
    /// Deadline of a batch of statements (and of an id-segment refill): a hung connection fails
    /// the calls waiting on it with UNAVAILABLE instead of holding them forever.
    pub statement_timeout_ms: u64,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        Self {
            url: "mysql://gim:gim@127.0.0.1:3306/gim".into(),
            max_connections: 32,
            acquire_timeout_ms: 2_000,
            statement_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Single-server URL, `redis://host:port/db`. Ignored when `cluster_nodes` is set.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port`); empty = single server.
    pub cluster_nodes: Vec<String>,
    /// Per-command timeout: Redis down fails calls fast instead of hanging them.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            cluster_nodes: Vec::new(),
            timeout_ms: 1_000,
        }
    }
}

/// How conn and logic prove to each other that a call on an internal listener (`LogicInt`,
/// `ConnInt`) comes from the other tier: one secret per cluster, sent with every call and
/// compared in constant time (see [`crate::internal`] for why a secret and not mutual TLS).
/// Set one of the two keys; the file form is for a mounted Kubernetes Secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct InternalConfig {
    /// The cluster's shared secret (at least 16 visible ASCII characters), e.g. from
    /// `GIM_INTERNAL__SECRET`. Empty = none. Never written out (the operator's ConfigMap
    /// names only the file).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// A file holding the secret (surrounding whitespace ignored), or several, one per line: the
    /// first is sent, all are accepted. Read again every 10 s, so a rotation needs no restart.
    /// Empty = none.
    pub secret_file: String,
}

impl std::fmt::Debug for InternalConfig {
    // The secret never reaches a log line through a `{:?}` of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalConfig")
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

impl InternalConfig {
    /// Whether a secret is configured (inline or as a file).
    pub fn is_set(&self) -> bool {
        !self.secret.is_empty() || !self.secret_file.is_empty()
    }

    /// The checks that need no file access. `listen_key`/`listen` name the internal listener
    /// this process serves: without a secret it must be a loopback address, so that a node
    /// reachable from the network never takes unauthenticated internal calls.
    pub fn validate_for(&self, listen_key: &str, listen: SocketAddr) -> Result<(), ConfigError> {
        if !self.secret.is_empty() && !self.secret_file.is_empty() {
            return Err(ConfigError::new(
                "internal.secret",
                "set either internal.secret or internal.secret_file, not both",
            ));
        }
        if !self.secret.is_empty() {
            crate::internal::check_secret(&self.secret)
                .map_err(|r| ConfigError::new("internal.secret", r))?;
        }
        if !self.is_set() && !listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "internal.secret",
                format!(
                    "required when {listen_key} ({listen}) is not a loopback address: set \
                     internal.secret_file or GIM_INTERNAL__SECRET to the cluster's shared secret"
                ),
            ));
        }
        Ok(())
    }
}

/// A config string that is a credential: `{:?}` of a config never shows it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl SecretString {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

pub(crate) fn check_url(key: &str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let ok = schemes.iter().any(|s| {
        url.strip_prefix(s)
            .and_then(|r| r.strip_prefix("://"))
            .is_some_and(|r| !r.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("expected a {}:// URL, got {url:?}", schemes.join(":// or ")),
        ))
    }
}

pub(crate) fn check_positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

impl Validate for LogConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map(|_| ())
            .map_err(|e| ConfigError::new("log.filter", e.to_string()))
    }
}

impl Validate for MysqlConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_url("mysql.url", &self.url, &["mysql", "mariadb"])?;
        check_positive("mysql.max_connections", self.max_connections.into())?;
        check_positive("mysql.acquire_timeout_ms", self.acquire_timeout_ms)?;
        check_positive("mysql.statement_timeout_ms", self.statement_timeout_ms)
    }
}

impl Validate for RedisConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_nodes.is_empty() {
            check_url("redis.url", &self.url, &["redis", "rediss"])?;
        }
        for n in &self.cluster_nodes {
            check_url("redis.cluster_nodes", n, &["redis", "rediss"])?;
        }
        check_positive("redis.timeout_ms", self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logic.toml");
        std::fs::write(
            &path,
            "[mysql]\nurl = \"mysql://a@h/db\"\nmax_connections = 5\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let cfg: LogicConfig = load(
            Some(&path),
            &env(&[
                ("GIM_MYSQL__MAX_CONNECTIONS", "9"),
                ("OTHER", "x"),
                ("GIM_CONFIG_FILE", "/elsewhere.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.mysql.url, "mysql://a@h/db", "file over default");
        assert_eq!(cfg.mysql.max_connections, 9, "env over file");
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.redis, RedisConfig::default(), "untouched defaults");
    }

    #[test]
    fn env_value_takes_the_type_of_the_default() {
        let cfg: ConnConfig = load(
            None,
            &env(&[
                ("GIM_CONN__NODE_NAME", "123"),
                ("GIM_REDIS__CLUSTER_NODES", "redis://a:1, redis://b:2"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.conn.node_name, "123");
        assert_eq!(cfg.redis.cluster_nodes, ["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn bad_env_number_names_the_key() {
        let err =
            load::<LogicConfig>(None, &env(&[("GIM_MYSQL__MAX_CONNECTIONS", "lots")])).unwrap_err();
        assert_eq!(err.key, "mysql.max_connections");
        assert!(err.reason.contains("integer"), "{err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = load::<LogicConfig>(None, &env(&[("GIM_MYSQL__URLL", "x")])).unwrap_err();
        assert_eq!(err.key, "mysql.urll", "{err}");
        assert!(err.reason.contains("urll"), "{err}");
    }

    #[test]
    fn wrong_type_in_file_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[redis]\ntimeout_ms = \"soon\"\n").unwrap();
        let err = load::<LogicConfig>(Some(&path), &HashMap::new()).unwrap_err();
        assert_eq!(err.key, "redis.timeout_ms");
    }

    #[test]
    fn invalid_toml_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[redis]\n\ntimeout_ms = = 3\n").unwrap();
        let err = load::<LogicConfig>(Some(&path), &HashMap::new()).unwrap_err();
        assert!(err.key.ends_with("c.toml"));
        assert!(err.reason.contains("line 3"), "{err}");
    }

    #[test]
    fn semantic_checks_name_the_key() {
        let err =
            load::<LogicConfig>(None, &env(&[("GIM_MYSQL__URL", "postgres://x")])).unwrap_err();
        assert_eq!(err.key, "mysql.url");
        let err = load::<LogicConfig>(None, &env(&[("GIM_LOG__FILTER", "[[[")])).unwrap_err();
        assert_eq!(err.key, "log.filter");
        let err = load::<LogicConfig>(None, &env(&[("GIM_LOG__FORMAT", "xml")])).unwrap_err();
        assert_eq!(err.key, "log.format");
    }

    #[test]
    fn internal_secret_comes_from_env_and_is_required_off_loopback() {
        let cfg: LogicConfig = load(
            None,
            &env(&[
                ("GIM_INTERNAL__SECRET", "0123456789abcdef0123"),
                ("GIM_LOGIC__INT_LISTEN", "0.0.0.0:50000"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.internal.secret, "0123456789abcdef0123");
        let err = load::<ConnConfig>(None, &env(&[("GIM_CONN__GRPC_LISTEN", "10.0.0.5:50100")]))
            .unwrap_err();
        assert_eq!(err.key, "internal.secret");
        assert!(err.reason.contains("conn.grpc_listen"), "{err}");
        let cfg: ConnConfig = load(
            None,
            &env(&[
                ("GIM_INTERNAL__SECRET_FILE", "/run/secrets/gim"),
                ("GIM_CONN__GRPC_LISTEN", "0.0.0.0:50100"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.internal.secret_file, "/run/secrets/gim");
        // Loopback defaults need none.
        assert!(load::<ConnConfig>(None, &HashMap::new()).is_ok());
        assert!(LogicSection::default().int_listen.ip().is_loopback());
        assert!(ConnSection::default().admin_listen.ip().is_loopback());
    }

    #[test]
    fn admin_token_is_checked_and_never_shown() {
        let token = "admin-token-0123456789";
        let cfg: LogicConfig = load(None, &env(&[("GIM_LOGIC__ADMIN_TOKEN", token)])).unwrap();
        assert_eq!(cfg.logic.admin_token.expose(), token);
        assert!(!format!("{cfg:?}").contains(token), "Debug leaks the token");
        let err =
            load::<LogicConfig>(None, &env(&[("GIM_LOGIC__ADMIN_TOKEN", "short")])).unwrap_err();
        assert_eq!(err.key, "logic.admin_token");
        let err = load::<LogicConfig>(
            None,
            &env(&[
                ("GIM_LOGIC__ADMIN_TOKEN", token),
                ("GIM_LOGIC__ADMIN_TOKEN_FILE", "/run/secrets/admin"),
            ]),
        )
        .unwrap_err();
        assert!(err.reason.contains("not both"), "{err}");
        // Unset by default, and left out of a written config when unset.
        let toml = toml::to_string(&LogicConfig::default()).unwrap();
        assert!(!toml.contains("admin_token"), "{toml}");
    }

    #[test]
    fn example_files_in_config_dir_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("logic") && name.ends_with(".toml") {
                load::<LogicConfig>(Some(&path), &HashMap::new()).unwrap();
                seen += 1;
            } else if name.starts_with("conn") && name.ends_with(".toml") {
                load::<ConnConfig>(Some(&path), &HashMap::new()).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected logic and conn examples in {dir:?}");
    }
}
