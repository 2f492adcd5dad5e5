//! Configuration: reads `db-sync.json`, substitutes `${ENV_VAR}` secrets, and validates it
//! once into typed values ([`Config`]). Validation is pure (no database, no file access
//! beyond reading the config itself); every error names the key and what to do.

pub mod file;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

pub use file::{ConfigFile, ConnectionFile, ConnectionKind, TableFile, TableOrder};

use crate::model::Value;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}; create it or pass --config PATH")]
    Read {
        /// Config path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("config file {path} is not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// Config path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Parser message.
        message: String,
    },
    /// A key that db-sync does not know.
    #[error("config file {path}: unknown key `{key}` at `{location}`{}", suggestion_text(.suggestion))]
    UnknownKey {
        /// Config path.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// JSON path of the object holding it.
        location: String,
        /// Closest valid key.
        suggestion: Option<String>,
    },
    /// A `${VAR}` reference to an unset environment variable.
    #[error(
        "config file {path}: `{location}` refers to environment variable {var}, which is not set; export it before running"
    )]
    MissingEnv {
        /// Config path.
        path: PathBuf,
        /// JSON path of the string.
        location: String,
        /// Variable name.
        var: String,
    },
    /// A value of the wrong shape or out of range.
    #[error("config file {path}: `{location}`: {message}")]
    Invalid {
        /// Config path.
        path: PathBuf,
        /// JSON path of the value.
        location: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file.
    pub path: PathBuf,
    /// Folder that relative paths resolve against.
    pub base_dir: PathBuf,
    /// Where rows come from.
    pub source: Endpoint,
    /// Where rows go to.
    pub target: Endpoint,
    /// Tables in config order.
    pub tables: Vec<TableSpec>,
    /// Run-wide settings.
    pub run: RunSettings,
    /// Fingerprint of the file's meaning (after env substitution of non-secret keys),
    /// used to tell whether a stored plan still fits.
    pub fingerprint: u64,
}

/// Run-wide settings.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Print the plan and stop.
    pub only_sync_plan: bool,
    /// Check every table even when `min_rows_to_sync` would skip it.
    pub check_all_tables: bool,
    /// Table names to sync; empty = all.
    pub sync_table: Vec<String>,
    /// Stop once this many errors were recorded.
    pub max_error_count: usize,
    /// Stop after this many consecutive failing batches.
    pub max_error_loop: usize,
    /// Keep going after data errors.
    pub continue_on_error: bool,
    /// Which statements and connection changes the connectors log.
    pub sql_log: crate::connector::sql_log::SqlLog,
    /// The daemon's schedule (`sleep_seconds` or `run_at_time`).
    pub schedule: crate::schedule::Schedule,
    /// Longest single sleep of the daemon (`max_sleep_chunk_seconds`).
    pub max_sleep_chunk: Duration,
    /// Where the daemon serves `/metrics` and `/healthz` (`metrics_listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// State store folder.
    pub state_dir: PathBuf,
    /// Finished runs to keep.
    pub keep_runs: usize,
    /// Create missing target tables.
    pub create_missing_tables: bool,
    /// Table order.
    pub table_order: TableOrder,
}

/// A validated connection.
#[derive(Clone)]
pub struct Endpoint {
    /// Backend.
    pub kind: ConnectionKind,
    /// SQLite file, resolved against the config folder.
    pub path: Option<PathBuf>,
    /// The raw connection settings (may hold secrets; never printed).
    pub raw: ConnectionFile,
    /// Deadline, retries and reconnection of every call on this connection.
    pub resilience: Resilience,
    /// PostgreSQL: the server's `statement_timeout` (`statement_timeout_secs`); `None`:
    /// the same as `resilience.timeout`; zero: no limit.
    pub statement_timeout: Option<Duration>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately omits `raw`: it may hold a password.
        f.debug_struct("Endpoint").field("kind", &self.kind).field("path", &self.path).finish()
    }
}

impl Endpoint {
    /// A description safe to print (no secrets).
    pub fn describe(&self) -> String {
        match (&self.path, &self.raw.url, &self.raw.host) {
            (Some(p), _, _) => format!("{} {}", self.kind.name(), p.display()),
            (None, Some(url), _) => format!("{} {}", self.kind.name(), redact_url(url)),
            (None, None, Some(host)) => match self.raw.port {
                Some(port) => format!("{} {host}:{port}", self.kind.name()),
                None => format!("{} {host}", self.kind.name()),
            },
            (None, None, None) => self.kind.name().to_string(),
        }
    }

    /// True for 4D, whose batch sizes have their own keys.
    pub fn is_4d(&self) -> bool {
        self.kind == ConnectionKind::FourD
    }

    /// True for a 4D connection through its REST (ORDA) server: `"protocol": "rest"`, or a
    /// `url` without `protocol` (validated when the config loads).
    pub fn is_4d_rest(&self) -> bool {
        self.is_4d()
            && self.raw.protocol.as_deref().unwrap_or(if self.raw.url.is_some() { "rest" } else { "sql" }) == "rest"
    }
}

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "***";

/// Query parameters of a connection URL that hold a secret (compared case-insensitively).
const SECRET_QUERY_KEYS: [&str; 4] = ["password", "pass", "pwd", "sslpassword"];

/// True for a query parameter or config key whose value is a secret.
pub fn is_secret_key(key: &str) -> bool {
    SECRET_QUERY_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// A connection URL safe to print or store: the password of `user:password@` and the
/// values of `password`, `pass`, `pwd` and `sslpassword` query parameters become `***`;
/// the rest is kept. A URL that does not parse is shown as its scheme and `***` only,
/// since there is no telling where a secret in it starts or ends.
pub fn redact_url(text: &str) -> String {
    let opaque = || match text.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("{scheme}://{REDACTED}")
        }
        _ => REDACTED.to_string(),
    };
    let Ok(mut url) = url::Url::parse(text) else { return opaque() };
    // Without an authority (`postgres:user:pw@host`) the whole rest is a path that may
    // hold anything.
    if url.cannot_be_a_base() {
        return opaque();
    }
    if url.password().is_some() && url.set_password(Some(REDACTED)).is_err() {
        return opaque();
    }
    if url.query_pairs().any(|(key, _)| is_secret_key(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_key(&key) { REDACTED.to_string() } else { value.into_owned() };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if url.fragment().is_some() {
        url.set_fragment(Some(REDACTED));
    }
    url.to_string()
}

/// Per-table settings after applying table overrides to the global values.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSettings {
    /// Rows per batch (non-4D sides); see [`TableSettings::rows_per_batch`].
    pub batch_size: usize,
    /// Rows per batch when a side is 4D: the table's own `batch_size` when it sets one,
    /// else the global `batch_size_4d`.
    pub batch_size_4d: usize,
    /// Keys per delete batch; see [`TableSettings::keys_per_delete`].
    pub delete_batch_size: usize,
    /// Keys per delete batch on a 4D target: the table's own `delete_batch_size` when it
    /// sets one, else the global `delete_batch_size_4d`.
    pub delete_batch_size_4d: usize,
    /// Keys per key-list read.
    pub id_array_batch_size: usize,
    /// Trust modify IDs.
    pub trust_modify_id: bool,
    /// Skip threshold.
    pub min_rows_to_sync: u64,
    /// Delete guard, percent of the target table.
    pub max_delete_percent: f64,
    /// Fill NOT NULL columns without source values.
    pub set_default_value: bool,
    /// JSON objects are copied whole rather than merged into the target's (see
    /// [`crate::transform::TableMapping::merge_into`]).
    pub copy_all_json_keys: bool,
    /// Binary search for adds.
    pub binary_search_for_add: bool,
    /// Smallest table searched by bisection.
    pub binary_search_min_table_size: u64,
    /// Directly compared range size.
    pub binary_search_read_batch: u64,
    /// Newest keys searched first.
    pub binary_search_recent_first: u64,
    /// Parts a range is split into at once (2 to 64); `None`: chosen from the
    /// connectors (see [`crate::diff::bisect::fanout`]).
    pub binary_search_fanout: Option<u64>,
    /// Full compare when a binary search leaves counts unequal.
    pub fallback_full_compare_on_mismatch: bool,
    /// Zone of wall-clock times (config `timezone`, default UTC); see
    /// [`crate::transform::exact`].
    pub timezone: jiff::tz::TimeZone,
    /// How far below the stored watermark incremental reads start.
    pub incremental_lookback: Lookback,
}

impl TableSettings {
    /// Rows per read and write batch: `batch_size_4d` when a side is 4D.
    pub fn rows_per_batch(&self, a_side_is_4d: bool) -> usize {
        if a_side_is_4d { self.batch_size_4d } else { self.batch_size }
    }

    /// Keys per delete transaction: `delete_batch_size_4d` when the target is 4D.
    pub fn keys_per_delete(&self, target_is_4d: bool) -> usize {
        if target_is_4d { self.delete_batch_size_4d } else { self.delete_batch_size }
    }
}

/// `incremental_lookback`: how far below the stored watermark incremental reads start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lookback {
    /// Start at the watermark (default).
    #[default]
    None,
    /// A modify-ID distance (numeric modify IDs).
    Distance(i64),
    /// A span of time (timestamp modify IDs).
    Duration(jiff::SignedDuration),
}

/// One validated table entry.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Entry name (e.g. `product-work`).
    pub name: String,
    /// Source table.
    pub source_table: String,
    /// Target table.
    pub target_table: String,
    /// Source key columns, in key order (one, or several for a compound key).
    pub key_fields: Vec<String>,
    /// Source modify-ID column.
    pub modify_field: Option<String>,
    /// Record-type filter, in source column names.
    pub filter: Vec<(String, Value)>,
    /// Source -> target column renames.
    pub field_mapping: Vec<(String, String)>,
    /// Source columns not synced.
    pub exclude_fields: Vec<String>,
    /// Effective settings.
    pub settings: TableSettings,
}

impl TableSpec {
    /// The key columns as people read them: `id`, or `(order_id, line_no)`.
    pub fn key_text(&self) -> String {
        match self.key_fields.as_slice() {
            [one] => one.clone(),
            many => format!("({})", many.join(", ")),
        }
    }

    /// Target name of a source column.
    pub fn target_column<'a>(&'a self, source: &'a str) -> &'a str {
        self.field_mapping.iter().find(|(s, _)| s == source).map(|(_, t)| t.as_str()).unwrap_or(source)
    }
}

impl Config {
    /// Reads, substitutes and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_str_at(&text, path, &|name| std::env::var(name).ok())
    }

    /// The state store folder a config names (`state_dir`, else `.db-sync` beside the
    /// file), without the rest of the config: `runs` and `show` read only the store, so
    /// they work without the passwords' environment variables.
    pub fn state_dir_of(path: &Path) -> Result<PathBuf, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let json = parse_json(&text, path)?;
        let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut dir = json.get("state_dir").cloned().unwrap_or(Json::String(".db-sync".into()));
        interpolate(&mut dir, "state_dir", path, &|name| std::env::var(name).ok())?;
        match dir {
            Json::String(dir) => Ok(base_dir.join(dir)),
            _ => Err(invalid(path, "state_dir", "must be a folder path (a string)")),
        }
    }

    /// Parses config text as if read from `path`, reading environment variables through
    /// `env` (tests pass a closure instead of touching the process environment).
    pub fn from_str_at(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut json = parse_json(text, path)?;
        strip_comments(&mut json);
        let fingerprint = fingerprint(&json);
        interpolate(&mut json, "", path, env)?;
        let file: ConfigFile = serde_path_to_error::deserialize(json).map_err(|e| deserialize_error(path, e))?;
        let base_dir = path
            .parent()
            .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        validate(file, path, &base_dir, fingerprint)
    }
}

/// The config text as JSON; a syntax error names the file, line and column.
fn parse_json(text: &str, path: &Path) -> Result<Json, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Connection keys that change how calls are waited for and retried, not what a run
/// plans: changing them (after a run stopped on a flaky link) keeps the run resumable.
const RESILIENCE_KEYS: [&str; 4] = ["timeout", "retry_count", "retry_delay", "reconnect_delay"];

/// Top-level keys that change when and how visibly runs happen, not what a run plans or
/// writes: the daemon's schedule and listener, the debug switches, retention.
const UNPLANNED_KEYS: [&str; 10] = [
    "sleep_seconds",
    "run_at_time",
    "max_sleep_chunk_seconds",
    "metrics_listen",
    "show_sql",
    "debug_sql",
    "show_save_sql",
    "show_sql_values",
    "debug_connection_change",
    "keep_runs",
];

/// FNV-1a over the canonical JSON text, without the connections' [`RESILIENCE_KEYS`] and
/// the [`UNPLANNED_KEYS`]. Secrets are hashed as written (`${VAR}`), so a rotated
/// password does not count as a changed config.
fn fingerprint(json: &Json) -> u64 {
    let mut json = json.clone();
    if let Some(top) = json.as_object_mut() {
        top.retain(|key, _| !UNPLANNED_KEYS.contains(&key.as_str()));
    }
    for side in ["source", "target"] {
        if let Some(connection) = json.get_mut(side).and_then(Json::as_object_mut) {
            connection.retain(|key, _| !RESILIENCE_KEYS.contains(&key.as_str()));
        }
    }
    crate::checkpoint::fnv1a(json.to_string().as_bytes())
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// Drops comment keys: those starting with `//` (JSON has no comments of its own).
fn strip_comments(json: &mut Json) {
    match json {
        Json::Array(items) => items.iter_mut().for_each(strip_comments),
        Json::Object(map) => {
            map.retain(|key, _| !key.starts_with("//"));
            map.values_mut().for_each(strip_comments);
        }
        _ => {}
    }
}

/// Replaces `${NAME}` in every string with the environment variable's value (`$${` is a
/// literal `${`).
fn interpolate(
    json: &mut Json,
    location: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match json {
        Json::String(s) if s.contains("${") => {
            *s = substitute(s, location, path, env)?;
        }
        Json::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{location}[{i}]"), path, env)?;
            }
        }
        Json::Object(map) => {
            for (key, value) in map.iter_mut() {
                interpolate(value, &join_path(location, key), path, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Characters percent-encoded when a variable's value is put inside a URL: all but
/// RFC 3986's unreserved ones.
const URL_COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn substitute(
    s: &str,
    location: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| ConfigError::Invalid {
                path: path.to_path_buf(),
                location: location.to_string(),
                message: "`${` without a closing `}`; write `$${` for a literal `${`".into(),
            })?;
            let var = &after[..end];
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    location: location.to_string(),
                    message: format!("`${{{var}}}` is not a valid environment variable name"),
                });
            }
            let value = env(var).ok_or_else(|| ConfigError::MissingEnv {
                path: path.to_path_buf(),
                location: location.to_string(),
                var: var.to_string(),
            })?;
            // Inside a URL (`postgres://user:${PW}@host`, `?password=${PW}`) the value is
            // percent-encoded, so that `@`, `/`, `#`, `?` or `:` in a password keep the
            // URL's shape; a whole URL from one variable (`"url": "${DATABASE_URL}"`) is
            // taken as it is.
            let in_url = location.rsplit('.').next() == Some("url") && s.trim() != format!("${{{var}}}");
            if in_url {
                out.extend(percent_encoding::utf8_percent_encode(&value, URL_COMPONENT));
            } else {
                out.push_str(&value);
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a key error with the
/// closest valid key; other errors keep their message with the JSON path.
fn deserialize_error(path: &Path, e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let location = e.path().to_string();
    let message = strip_position(&e.inner().to_string());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default().to_string();
        let expected: Vec<&str> = rest.split('`').skip(1).skip(1).step_by(2).collect();
        let suggestion = closest(&key, &expected);
        let location = location
            .rsplit_once('.')
            .map(|(parent, _)| parent.to_string())
            .unwrap_or_else(|| "(top level)".to_string());
        return ConfigError::UnknownKey { path: path.to_path_buf(), key, location, suggestion };
    }
    // serde quotes the value it refused (`invalid type: integer `123``); a secret's value
    // must not reach the message.
    let last_key = location.rsplit('.').next().unwrap_or_default();
    if last_key == "url" || is_secret_key(last_key) {
        let message = "must be a string".to_string();
        return ConfigError::Invalid { path: path.to_path_buf(), location, message };
    }
    ConfigError::Invalid { path: path.to_path_buf(), location, message }
}

/// The candidate most like `key`, if any is close enough to be a likely typo.
pub fn closest(key: &str, candidates: &[&str]) -> Option<String> {
    // The same name in another case first (`id` for 4D's `ID`).
    if let Some(same) = candidates.iter().find(|c| c.eq_ignore_ascii_case(key)) {
        return Some(same.to_string());
    }
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(key, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

fn invalid(path: &Path, location: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), location: location.into(), message: message.into() }
}

fn validate(file: ConfigFile, path: &Path, base_dir: &Path, fingerprint: u64) -> Result<Config, ConfigError> {
    let positive = |value: usize, key: &str| -> Result<(), ConfigError> {
        if value == 0 { Err(invalid(path, key, "must be at least 1")) } else { Ok(()) }
    };
    positive(file.batch_size, "batch_size")?;
    positive(file.batch_size_4d, "batch_size_4d")?;
    positive(file.delete_batch_size, "delete_batch_size")?;
    positive(file.delete_batch_size_4d, "delete_batch_size_4d")?;
    positive(file.id_array_batch_size, "id_array_batch_size")?;
    check_percent(path, "max_delete_percent", file.max_delete_percent)?;
    if file.binary_search_read_batch == 0 {
        return Err(invalid(path, "binary_search_read_batch", "must be at least 1"));
    }
    check_fanout(path, "binary_search_fanout".into(), file.binary_search_fanout)?;

    let source = endpoint(&file.source, "source", path, base_dir)?;
    let target = endpoint(&file.target, "target", path, base_dir)?;
    if file.create_missing_tables && target.is_4d() {
        return Err(invalid(
            path,
            "create_missing_tables",
            "`create_missing_tables` is not supported yet for a 4d target: create the tables in 4D and leave it out",
        ));
    }

    if file.tables.is_empty() {
        return Err(invalid(path, "tables", "lists no table; add at least one entry"));
    }
    let mut names = HashSet::new();
    let mut tables = Vec::with_capacity(file.tables.len());
    for (i, table) in file.tables.iter().enumerate() {
        let location = format!("tables[{i}]");
        let spec = table_spec(&file, table, &location, path)?;
        if !names.insert(spec.name.clone()) {
            return Err(invalid(
                path,
                format!("{location}.name"),
                format!("table name `{}` appears twice; names must be unique", spec.name),
            ));
        }
        tables.push(spec);
    }
    let known: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for (i, name) in file.sync_table.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            let hint = closest(name, &known).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(invalid(
                path,
                format!("sync_table[{i}]"),
                format!("`{name}` is not a table `name` in `tables`{hint}"),
            ));
        }
    }

    let schedule = schedule(&file, path)?;
    let max_sleep_chunk = match &file.max_sleep_chunk_seconds {
        None => Duration::from_secs(file::default_max_sleep_chunk_seconds()),
        Some(value) => match duration_setting(value, Duration::from_secs(1)) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => return Err(invalid(path, "max_sleep_chunk_seconds", "must be at least 1 second")),
            Err(e) => return Err(invalid(path, "max_sleep_chunk_seconds", e)),
        },
    };
    let metrics_listen = match &file.metrics_listen {
        None => None,
        Some(text) => Some(text.trim().parse::<std::net::SocketAddr>().map_err(|_| {
            invalid(
                path,
                "metrics_listen",
                format!("`{text}` is not an address and port such as \"127.0.0.1:9187\" or \"[::1]:9187\""),
            )
        })?),
    };
    let state_dir = match &file.state_dir {
        Some(dir) => base_dir.join(dir),
        None => base_dir.join(".db-sync"),
    };

    Ok(Config {
        path: path.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        source,
        target,
        tables,
        run: RunSettings {
            only_sync_plan: file.only_sync_plan,
            check_all_tables: file.check_all_tables,
            sync_table: file.sync_table.clone(),
            max_error_count: file.max_error_count,
            max_error_loop: file.max_error_loop,
            continue_on_error: file.continue_on_error,
            sql_log: crate::connector::sql_log::SqlLog {
                show_sql: file.show_sql,
                debug_sql: file.debug_sql,
                show_save_sql: file.show_save_sql,
                show_sql_values: file.show_sql_values,
                debug_connection_change: file.debug_connection_change,
            },
            schedule,
            max_sleep_chunk,
            metrics_listen,
            state_dir,
            keep_runs: file.keep_runs,
            create_missing_tables: file.create_missing_tables,
            table_order: file.table_order,
        },
        fingerprint,
    })
}

/// The daemon's schedule: `sleep_seconds` (seconds or a duration, at least 1 s) or
/// `run_at_time` (`HH:MM` in `timezone`, default the machine's zone), not both.
fn schedule(file: &ConfigFile, path: &Path) -> Result<crate::schedule::Schedule, ConfigError> {
    use crate::schedule::Schedule;
    if file.sleep_seconds.is_some() && file.run_at_time.is_some() {
        return Err(invalid(path, "run_at_time", "set either `sleep_seconds` or `run_at_time`, not both"));
    }
    if let Some(value) = &file.sleep_seconds {
        return match duration_setting(value, Duration::from_secs(1)) {
            Ok(d) if d >= Duration::from_secs(1) => Ok(Schedule::Every(d)),
            Ok(_) => Err(invalid(path, "sleep_seconds", "must be at least 1 second")),
            Err(e) => Err(invalid(path, "sleep_seconds", e)),
        };
    }
    let Some(text) = &file.run_at_time else { return Ok(Schedule::Once) };
    let (hour, minute) = parse_hh_mm(text)
        .ok_or_else(|| invalid(path, "run_at_time", format!("`{text}` is not a time of day like \"02:00\"")))?;
    let zone = time_zone(file, path)?.unwrap_or_else(jiff::tz::TimeZone::system);
    Ok(Schedule::Daily { hour, minute, zone })
}

/// The config's `timezone`, when it names one (IANA name).
fn time_zone(file: &ConfigFile, path: &Path) -> Result<Option<jiff::tz::TimeZone>, ConfigError> {
    let Some(name) = &file.timezone else { return Ok(None) };
    jiff::tz::TimeZone::get(name).map(Some).map_err(|_| {
        invalid(path, "timezone", format!("`{name}` is not an IANA time zone name such as \"Europe/Paris\" or \"UTC\""))
    })
}

fn check_percent(path: &Path, location: &str, value: f64) -> Result<(), ConfigError> {
    if !(0.0..=100.0).contains(&value) {
        return Err(invalid(path, location, format!("{value} is not a percentage from 0 to 100")));
    }
    Ok(())
}

/// `binary_search_fanout`, when given, is 2 to 64.
fn check_fanout(path: &Path, location: String, value: Option<u64>) -> Result<(), ConfigError> {
    match value {
        Some(fanout) if !(2..=64).contains(&fanout) => Err(invalid(
            path,
            location,
            format!("is {fanout}; give 2 (halves, the manual's search) to 64, or leave it out"),
        )),
        _ => Ok(()),
    }
}

fn parse_hh_mm(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.split_once(':')?;
    let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

fn endpoint(conn: &ConnectionFile, location: &str, path: &Path, base_dir: &Path) -> Result<Endpoint, ConfigError> {
    let mut resolved = None;
    // 4D's server: `rest` or `sql` (`None` for other backends).
    let mut protocol = None;
    match conn.kind {
        ConnectionKind::Sqlite => {
            let file = conn
                .path
                .as_deref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| invalid(path, location, "a sqlite connection needs \"path\": \"file.sqlite\""))?;
            resolved = Some(base_dir.join(file));
        }
        ConnectionKind::Postgres | ConnectionKind::Rest => {
            if conn.url.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(path, location, format!("a {} connection needs \"url\"", conn.kind.name())));
            }
        }
        ConnectionKind::FourD => {
            let fourd_protocol = match conn.protocol.as_deref() {
                None if conn.url.is_some() => "rest",
                None if conn.host.is_some() => "sql",
                None => {
                    return Err(invalid(
                        path,
                        location,
                        "a 4d connection needs \"url\" (REST) or \"host\" (SQL server)",
                    ));
                }
                Some(p @ ("rest" | "sql")) => p,
                Some(other) => {
                    return Err(invalid(
                        path,
                        format!("{location}.protocol"),
                        format!("`{other}` is not a 4D protocol: write \"rest\" or \"sql\""),
                    ));
                }
            };
            protocol = Some(fourd_protocol);
            if fourd_protocol == "rest" {
                let url = conn.url.as_deref().unwrap_or_default();
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                    _ => {
                        return Err(invalid(
                            path,
                            format!("{location}.url"),
                            format!(
                                "a 4d REST connection needs \"url\": \"http://host:port\" or \"https://host:port\", not \"{}\"",
                                redact_url(url)
                            ),
                        ));
                    }
                }
            } else if conn.host.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    path,
                    location,
                    "a 4d SQL connection needs \"host\" (and \"port\", default 19812)",
                ));
            }
            if conn.password.is_some() && conn.user.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    path,
                    location,
                    "a 4d connection with \"password\" needs \"user\": without a user db-sync does not log in",
                ));
            }
            if let Some(unit) = conn.time_unit.as_deref()
                && !matches!(unit, "ms" | "s")
            {
                return Err(invalid(
                    path,
                    format!("{location}.time_unit"),
                    format!("`{unit}` is not a time unit of 4D Time values: write \"ms\" or \"s\""),
                ));
            }
        }
    }
    let backend = match conn.kind {
        ConnectionKind::Sqlite => Backend::Sqlite,
        ConnectionKind::Postgres => Backend::Postgres,
        ConnectionKind::FourD if protocol == Some("sql") => Backend::FourDSql,
        ConnectionKind::FourD => Backend::FourDRest,
        ConnectionKind::Rest => Backend::Rest,
    };
    for key in conn_keys_given(conn) {
        if let Some(refusal) = refusal(backend, key) {
            let message = match refusal {
                Refusal::DoesNotApply(why) => {
                    format!("`{key}` does not apply to {} connections: {why}; leave it out", backend.name())
                }
                Refusal::NotSupportedYet(instead) => {
                    format!("`{key}` is not supported yet for {} connections; {instead}", backend.name())
                }
            };
            return Err(invalid(path, format!("{location}.{key}"), message));
        }
    }
    if let Some(mode) = conn.sslmode.as_deref()
        && !SSL_MODES.contains(&mode)
    {
        return Err(invalid(
            path,
            format!("{location}.sslmode"),
            format!("`{mode}` is not an sslmode: write one of {}", SSL_MODES.join(", ")),
        ));
    }
    if conn.pool_size == Some(0) {
        return Err(invalid(
            path,
            format!("{location}.pool_size"),
            "`pool_size` is at least 1 (connections in the pool)",
        ));
    }
    let resilience = Resilience::parse(conn, location, path)?;
    let statement_timeout = match &conn.statement_timeout_secs {
        None => None,
        Some(value) => {
            let error = |message: String| invalid(path, format!("{location}.statement_timeout_secs"), message);
            let d = duration_setting(value, Duration::from_secs(1)).map_err(error)?;
            // PostgreSQL counts it in whole milliseconds, in a 32-bit integer.
            let most = Duration::from_millis(i32::MAX as u64);
            if (!d.is_zero() && d < Duration::from_millis(1)) || d > most {
                return Err(error(format!(
                    "{} is out of range: give 0 (no limit) or 1ms to {}",
                    humantime::format_duration(d),
                    humantime::format_duration(most)
                )));
            }
            Some(d)
        }
    };
    Ok(Endpoint { kind: conn.kind, path: resolved, raw: conn.clone(), resilience, statement_timeout })
}

/// The `sslmode` values PostgreSQL (and sqlx) know.
const SSL_MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/// A connection's backend as far as its keys go: 4D's REST and SQL servers take
/// different keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    FourDRest,
    FourDSql,
    Rest,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::FourDRest => "4d REST (protocol rest)",
            Backend::FourDSql => "4d SQL (protocol sql)",
            Backend::Rest => "rest",
        }
    }
}

/// Why a connection key given for a backend is refused.
enum Refusal {
    /// The key means nothing for the backend (why).
    DoesNotApply(&'static str),
    /// The key could mean something for the backend but db-sync does not do it (what to
    /// do instead).
    NotSupportedYet(&'static str),
}

/// The optional connection keys a connection entry sets (`type` is always there; the
/// resilience keys apply to every backend).
fn conn_keys_given(conn: &ConnectionFile) -> Vec<&'static str> {
    [
        ("path", conn.path.is_some()),
        ("url", conn.url.is_some()),
        ("protocol", conn.protocol.is_some()),
        ("time_unit", conn.time_unit.is_some()),
        ("schema", conn.schema.is_some()),
        ("host", conn.host.is_some()),
        ("port", conn.port.is_some()),
        ("user", conn.user.is_some()),
        ("password", conn.password.is_some()),
        ("database", conn.database.is_some()),
        ("pool_size", conn.pool_size.is_some()),
        ("statement_timeout_secs", conn.statement_timeout_secs.is_some()),
        ("sslmode", conn.sslmode.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, given)| given.then_some(key))
    .collect()
}

/// Whether `key` is refused for `backend`: every connection key either takes effect for
/// the backend it is given for or is refused here, so that no key is silently ignored.
/// The reference config (`fixtures/db-sync.reference.json`) says the same per key.
fn refusal(backend: Backend, key: &str) -> Option<Refusal> {
    use Backend::*;
    use Refusal::*;
    // `rest` is refused as a whole when it connects ("not supported yet").
    if backend == Rest {
        return None;
    }
    let no_login = "a sqlite file has no login";
    match (key, backend) {
        ("path", Sqlite) => None,
        ("path", _) => Some(DoesNotApply("`path` is the file of a sqlite connection")),
        ("url", Sqlite) => Some(DoesNotApply("a sqlite connection is the file at `path`")),
        ("url", FourDSql) => Some(DoesNotApply(
            "4D's SQL server is reached at `host` and `port`; `url` is 4D's REST server (\"protocol\": \"rest\")",
        )),
        ("protocol", Sqlite | Postgres) => {
            Some(DoesNotApply("`protocol` chooses between a 4D server's REST and SQL servers"))
        }
        ("time_unit", FourDRest) => None,
        ("time_unit", FourDSql) => Some(DoesNotApply("4D's SQL server sends Time values in milliseconds")),
        ("time_unit", _) => Some(DoesNotApply("`time_unit` is the unit of Time values on 4D's REST wire")),
        ("schema", Postgres) => None,
        ("schema", Sqlite) => Some(DoesNotApply("a sqlite file holds its tables in one schema")),
        ("schema", _) => Some(NotSupportedYet("db-sync reads the tables 4D shows by default; leave it out")),
        ("host" | "port", FourDSql) => None,
        ("host" | "port", Sqlite) => Some(DoesNotApply("a sqlite connection is the file at `path`")),
        ("host" | "port", Postgres) => Some(NotSupportedYet("write the host and port in `url`")),
        ("host" | "port", _) => Some(DoesNotApply(
            "4D's REST server is reached at `url`; `host` and `port` are 4D's SQL server (\"protocol\": \"sql\")",
        )),
        ("user" | "password", Sqlite) => Some(DoesNotApply(no_login)),
        ("database", Postgres) => None,
        ("database", Sqlite) => Some(DoesNotApply("a sqlite connection is the file at `path`")),
        ("database", _) => Some(NotSupportedYet("db-sync syncs the database the 4D server serves; leave it out")),
        ("pool_size", Postgres | FourDSql) => None,
        ("pool_size", Sqlite) => Some(NotSupportedYet("db-sync uses one connection per sqlite file; leave it out")),
        ("pool_size", _) => Some(NotSupportedYet("4D over REST uses one session per run; leave it out")),
        ("statement_timeout_secs", Postgres) => None,
        ("statement_timeout_secs", _) => {
            Some(NotSupportedYet("`timeout` bounds every call of this connection; use it instead"))
        }
        ("sslmode", Postgres) => None,
        ("sslmode", Sqlite) => Some(DoesNotApply("a sqlite file is not reached over a network")),
        ("sslmode", FourDRest) => Some(DoesNotApply("TLS follows the `url`: write https:// for it")),
        ("sslmode", _) => Some(NotSupportedYet("db-sync reaches 4D's SQL server without TLS; leave it out")),
        _ => None,
    }
}

/// Deadline, retries and reconnection of one connection (keys `timeout`, `retry_count`,
/// `retry_delay`, `reconnect_delay`), applied by the resilience layer around every
/// connector (`connector::resilient`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resilience {
    /// Longest a single call may take before it counts as a lost connection (default
    /// 300 s, as the manual's example).
    pub timeout: Duration,
    /// Retries of a call that failed with a retryable error (default 3, the manual's).
    pub retry_count: u32,
    /// Wait before the first retry, doubling (with jitter) after each, up to 16 times
    /// this (default 5 s, the manual's `5000` ms).
    pub retry_delay: Duration,
    /// Wait after a lost connection before connecting again (default 30 s, the manual's
    /// recovery flow: "disconnect all connections, wait 30 seconds, retry connection").
    pub reconnect_delay: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            timeout: Duration::from_secs(300),
            retry_count: 3,
            retry_delay: Duration::from_secs(5),
            reconnect_delay: Duration::from_secs(30),
        }
    }
}

impl Resilience {
    /// Reads the keys of a connection entry; defaults where it says nothing. A number is
    /// seconds (`retry_delay`: milliseconds, as the manual writes it); a string is a
    /// duration in humantime's form (`"90s"`, `"1h 30m"`, `"250ms"`).
    pub fn parse(conn: &ConnectionFile, location: &str, path: &Path) -> Result<Resilience, ConfigError> {
        let default = Resilience::default();
        let duration = |value: &Option<Json>, key: &str, unit: Duration, default: Duration, range: (u64, u64)| {
            let error = |message: String| invalid(path, format!("{location}.{key}"), message);
            let Some(value) = value else { return Ok(default) };
            let d = duration_setting(value, unit).map_err(error)?;
            let (least, most) = (Duration::from_millis(range.0), Duration::from_millis(range.1));
            if d < least || d > most {
                return Err(error(format!(
                    "{} is out of range: give {} to {}",
                    humantime::format_duration(d),
                    humantime::format_duration(least),
                    humantime::format_duration(most)
                )));
            }
            Ok(d)
        };
        const HOUR: u64 = 3_600_000;
        let retry_count = match &conn.retry_count {
            None => default.retry_count,
            Some(value) => value.as_u64().filter(|n| *n <= 100).map(|n| n as u32).ok_or_else(|| {
                invalid(
                    path,
                    format!("{location}.retry_count"),
                    format!("`{value}` is not a whole number from 0 to 100"),
                )
            })?,
        };
        Ok(Resilience {
            timeout: duration(&conn.timeout, "timeout", Duration::from_secs(1), default.timeout, (1_000, 24 * HOUR))?,
            retry_count,
            retry_delay: duration(
                &conn.retry_delay,
                "retry_delay",
                Duration::from_millis(1),
                default.retry_delay,
                (0, HOUR),
            )?,
            reconnect_delay: duration(
                &conn.reconnect_delay,
                "reconnect_delay",
                Duration::from_secs(1),
                default.reconnect_delay,
                (0, HOUR),
            )?,
        })
    }
}

/// A duration from config: a number of `unit`s (fractions allowed) or a humantime string.
/// At most 366 days.
pub fn duration_setting(value: &Json, unit: Duration) -> Result<Duration, String> {
    const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);
    let duration = match value {
        Json::Number(n) => number_duration(&n.to_string(), unit)?,
        // A number written as text means the same as the number.
        Json::String(text) if text.trim().parse::<f64>().is_ok() => number_duration(text.trim(), unit)?,
        Json::String(text) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("`{text}` is not a duration such as \"90s\", \"1h 30m\" or \"250ms\" ({e})"))?,
        _ => return Err("must be a number or a duration such as \"90s\"".into()),
    };
    if duration > LONGEST {
        return Err(format!("{} is longer than the longest allowed, 366 days", humantime::format_duration(duration)));
    }
    Ok(duration)
}

/// `text` (a number) of `unit`s, at most 366 days.
fn number_duration(text: &str, unit: Duration) -> Result<Duration, String> {
    const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);
    match text.parse::<f64>() {
        Ok(x) if x < 0.0 => Err(format!("`{text}` is negative; give a duration of 0 or more")),
        Ok(x) if x.is_finite() && unit.as_secs_f64() * x <= LONGEST.as_secs_f64() => Ok(unit.mul_f64(x)),
        Ok(_) => Err(format!("`{text}` is longer than the longest allowed, 366 days")),
        Err(_) => Err(format!("`{text}` is not a duration: give a number or a string such as \"90s\"")),
    }
}

fn table_spec(file: &ConfigFile, table: &TableFile, location: &str, path: &Path) -> Result<TableSpec, ConfigError> {
    let non_empty = |value: &str, key: &str| -> Result<(), ConfigError> {
        if value.trim().is_empty() {
            Err(invalid(path, format!("{location}.{key}"), "must not be empty"))
        } else {
            Ok(())
        }
    };
    non_empty(&table.name, "name")?;
    let source_table = table.source_table.clone().unwrap_or_else(|| table.name.clone());
    let target_table = table.target_table.clone().unwrap_or_else(|| table.name.clone());
    non_empty(&source_table, "source_table")?;
    non_empty(&target_table, "target_table")?;
    let key_fields: Vec<String> = match &table.primary_key_field {
        None => vec!["id".to_string()],
        Some(Json::String(column)) => vec![column.clone()],
        Some(Json::Array(columns)) if !columns.is_empty() => columns
            .iter()
            .map(|c| match c {
                Json::String(c) => Ok(c.clone()),
                _ => Err(invalid(path, format!("{location}.primary_key_field"), "lists column names as strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(
                path,
                format!("{location}.primary_key_field"),
                "must be a column name or a list of column names (a compound key)",
            ));
        }
    };
    for (i, key) in key_fields.iter().enumerate() {
        non_empty(key, "primary_key_field")?;
        if key_fields[..i].contains(key) {
            return Err(invalid(path, format!("{location}.primary_key_field"), format!("lists `{key}` twice")));
        }
    }
    if let Some(m) = &table.modify_id_field {
        non_empty(m, "modify_id_field")?;
    }

    let mut filter = Vec::new();
    for (column, value) in table.where_filter.iter().flatten() {
        let value = match value {
            Json::String(s) => Value::Text(s.clone()),
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => {
                return Err(invalid(path, format!("{location}.where.{column}"), "must be a string, number or boolean"));
            }
        };
        filter.push((column.clone(), value));
    }

    let mut field_mapping = Vec::new();
    let mut targets = HashSet::new();
    for (source, target) in table.field_mapping.iter().flatten() {
        let Json::String(target) = target else {
            return Err(invalid(
                path,
                format!("{location}.field_mapping.{source}"),
                "must be the target column name as a string",
            ));
        };
        if !targets.insert(target.clone()) {
            return Err(invalid(
                path,
                format!("{location}.field_mapping.{source}"),
                format!("two source columns map to target column `{target}`"),
            ));
        }
        field_mapping.push((source.clone(), target.clone()));
    }
    if let Some(key) = key_fields.iter().find(|k| table.exclude_fields.contains(k)) {
        return Err(invalid(
            path,
            format!("{location}.exclude_fields"),
            format!("the primary key column `{key}` cannot be excluded"),
        ));
    }

    let max_delete_percent = table.max_delete_percent.unwrap_or(file.max_delete_percent);
    check_percent(path, &format!("{location}.max_delete_percent"), max_delete_percent)?;
    let timezone = time_zone(file, path)?.unwrap_or(jiff::tz::TimeZone::UTC);
    let incremental_lookback = match &file.incremental_lookback {
        None => Lookback::None,
        Some(Json::Number(n)) => match n.as_i64() {
            Some(0) => Lookback::None,
            Some(d) if d > 0 => Lookback::Distance(d),
            _ => return Err(invalid(path, "incremental_lookback", "must be a whole number of at least 0")),
        },
        Some(Json::String(text)) => match text.parse::<jiff::SignedDuration>() {
            Ok(d) if d.is_zero() => Lookback::None,
            Ok(d) if d.is_positive() => Lookback::Duration(d),
            _ => {
                return Err(invalid(
                    path,
                    "incremental_lookback",
                    format!("`{text}` is not a duration such as \"10m\", \"90s\" or \"1h 30m\""),
                ));
            }
        },
        Some(_) => {
            return Err(invalid(
                path,
                "incremental_lookback",
                "must be a modify-ID distance (a number) or a duration such as \"10m\"",
            ));
        }
    };
    let settings = TableSettings {
        timezone,
        incremental_lookback,
        batch_size: table.batch_size.unwrap_or(file.batch_size),
        batch_size_4d: table.batch_size.unwrap_or(file.batch_size_4d),
        delete_batch_size: table.delete_batch_size.unwrap_or(file.delete_batch_size),
        delete_batch_size_4d: table.delete_batch_size.unwrap_or(file.delete_batch_size_4d),
        id_array_batch_size: table.id_array_batch_size.unwrap_or(file.id_array_batch_size),
        trust_modify_id: table.trust_modify_id.unwrap_or(file.trust_modify_id),
        min_rows_to_sync: table.min_rows_to_sync.unwrap_or(file.min_rows_to_sync),
        max_delete_percent,
        set_default_value: table.set_default_value.unwrap_or(file.set_default_value),
        copy_all_json_keys: table.copy_all_json_keys.unwrap_or(file.copy_all_json_keys),
        binary_search_for_add: table.binary_search_for_add.unwrap_or(file.binary_search_for_add),
        binary_search_min_table_size: table.binary_search_min_table_size.unwrap_or(file.binary_search_min_table_size),
        binary_search_read_batch: table.binary_search_read_batch.unwrap_or(file.binary_search_read_batch),
        binary_search_recent_first: table.binary_search_recent_first.unwrap_or(file.binary_search_recent_first),
        binary_search_fanout: table.binary_search_fanout.or(file.binary_search_fanout),
        fallback_full_compare_on_mismatch: table
            .fallback_full_compare_on_mismatch
            .unwrap_or(file.fallback_full_compare_on_mismatch),
    };
    for (value, key) in [
        (settings.batch_size, "batch_size"),
        (settings.delete_batch_size, "delete_batch_size"),
        (settings.id_array_batch_size, "id_array_batch_size"),
    ] {
        if value == 0 {
            return Err(invalid(path, format!("{location}.{key}"), "must be at least 1"));
        }
    }
    if settings.binary_search_read_batch == 0 {
        return Err(invalid(path, format!("{location}.binary_search_read_batch"), "must be at least 1"));
    }
    check_fanout(path, format!("{location}.binary_search_fanout"), table.binary_search_fanout)?;

    Ok(TableSpec {
        name: table.name.clone(),
        source_table,
        target_table,
        key_fields,
        modify_field: table.modify_id_field.clone(),
        filter,
        field_mapping,
        exclude_fields: table.exclude_fields.clone(),
        settings,
    })
}

#[cfg(test)]
mod tests;
