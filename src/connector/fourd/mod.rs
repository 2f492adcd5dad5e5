//! 4D through its REST (ORDA) server: `{"type": "4d", "protocol": "rest", "url": …}`.
//! `docs/4d-rest.md` is the design reference; each rule there names its page in the
//! `4d/docs` repository.
//!
//! A table entry's table is a dataclass, its fields are storage attributes and its key is
//! one attribute (4D dataclasses have one-attribute primary keys). How each call maps to
//! requests:
//!
//! | call | request |
//! |---|---|
//! | `describe` | `GET /rest/$catalog/{T}` |
//! | `count` | `GET /rest/{T}/{K}/?$filter=…&$params=…&$top=1`, then `__COUNT` |
//! | `key_at` | the same with `$orderby="K ASC"&$skip=n` |
//! | `read_keys`, `read_rows` | `GET /rest/{T}/{attributes}/?$filter=…&$orderby="K ASC"&$top=limit` (keyset pages) |
//! | `read_rows_by_keys` | `$filter="K IN :1"`, paged with `$skip` until `__COUNT` is read |
//! | modify IDs | `$filter` on the modify attribute (`__GlobalStamp` or any number or date attribute) |
//! | `upsert` | `IN` probe, then `POST /rest/{T}?$method=update&$atomic=true` with an array |
//! | `delete` | `POST /rest/{T}/?$filter="K IN :1"&$method=delete` |
//!
//! **Text keys.** 4D compares and sorts text ignoring case and accents; db-sync orders keys
//! by bytes. For a key that is not an integer attribute, the connector reads the scope's
//! keys once (`$skip`/`$top` pages), sorts them by bytes and answers counts, offsets and
//! key ranges from that list, so the count bisection works and pages come in db-sync's
//! order. Lookups by key (`IN`) fold too, so every answer is checked byte for byte and a
//! row whose key 4D cannot tell from another (`"abc"`/`"ABC"`) is never written or
//! deleted in its place.

mod filter;
mod session;
pub mod values;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::key_list::{self, KeyLists};
use async_trait::async_trait;
use jiff::tz::TimeZone;
use reqwest::Method;
use serde_json::{Map, Value as Json};

use self::filter::Filter;
use self::session::{Session, describe_errors, errors_of};
use self::values::{AttributeType, TimeUnit};
use super::http::{HttpClient, Query, encode_path_segment};
use super::sql_log::{Logged, Rows, StatementKind};
use super::{
    Capabilities, ConnectOptions, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page, Side,
};
use crate::config::Endpoint;
use crate::model::{ColumnSchema, Key, KeyRange, Row, TableSchema, TableScope, Value};

/// Longest encoded `$filter`+`$params` put in one URL; longer key lists are split
/// (`docs/4d-rest.md` §3.4: URLs stay under 8 KB).
const MAX_FILTER_BYTES: usize = 6000;

/// 4D's global modification stamp attribute (`ORDA/global-stamp.md`).
const GLOBAL_STAMP: &str = "__GlobalStamp";

/// Entities asked for per page when the connector pages by itself (key lists, lookups).
const PAGE: usize = 1000;

/// One dataclass as `$catalog/{T}` describes it.
#[derive(Debug)]
struct DataClass {
    /// Storage attributes db-sync syncs, with their types.
    types: HashMap<String, AttributeType>,
    /// The primary key attribute.
    key: String,
    /// The schema the engine sees.
    schema: TableSchema,
}

/// A 4D database through its REST server.
pub struct FourDRest {
    session: Session,
    endpoint: String,
    side: Side,
    options: ConnectOptions,
    unit: TimeUnit,
    zone: TimeZone,
    counters: IoCounters,
    classes: Mutex<HashMap<String, Arc<DataClass>>>,
    /// Byte-sorted keys per scope with a non-integer key (see the module docs).
    key_lists: KeyLists,
}

impl FourDRest {
    /// Opens a session on the 4D REST server of `endpoint` (login when `user` is set).
    pub async fn open(endpoint: &Endpoint, side: Side, options: ConnectOptions) -> Result<FourDRest, ConnectorError> {
        let raw = &endpoint.raw;
        let text = raw.url.as_deref().unwrap_or_default();
        let described = format!("{} {}", side.name(), endpoint.describe());
        let mut base = url::Url::parse(text)
            .map_err(|e| ConnectorError::Config(format!("{described}: `url` is not a URL: {e}")))?;
        // `http://host:port/rest` and `http://host:port` name the same server.
        let path = base.path().trim_end_matches('/').trim_end_matches("/rest").to_string();
        base.set_path(&format!("{path}/"));
        base.set_query(None);
        let connect_timeout = endpoint.resilience.timeout.min(Duration::from_secs(30));
        let http = HttpClient::new(base, described.clone(), connect_timeout)?;
        let unit = if raw.time_unit.as_deref() == Some("s") { TimeUnit::Seconds } else { TimeUnit::Millis };
        let connector = FourDRest {
            session: Session::new(http, raw.user.clone(), raw.password.clone(), options.sql, side),
            endpoint: described,
            side,
            options,
            unit,
            zone: TimeZone::UTC,
            counters: IoCounters::default(),
            classes: Mutex::new(HashMap::new()),
            key_lists: KeyLists::default(),
        };
        connector.session.login().await?;
        // A login's `{"result": true}` already shows a 4D REST server; without a user, the
        // catalog (a descriptive request guests may make) is the probe.
        if !connector.session.logs_in()
            && let Err(e) =
                connector.session.call(Method::GET, "/rest/$catalog", &Query::new(), None, "reading the catalog").await
        {
            connector.session.logout().await;
            return Err(e);
        }
        Ok(connector)
    }

    /// Requests and bytes sent so far (the HTTP layer's counters).
    pub fn http_counters(&self) -> &super::http::HttpCounters {
        self.session.http().counters()
    }

    /// Logs a REST request as the debug switches ask: `$params` (the filter's values) are
    /// shown as `…`, and go with the write's `body` into the values under `show_sql_values`.
    /// The session cookie is never part of what is logged.
    fn log_request(&self, kind: StatementKind, method: &str, path: &str, query: &Query, body: Option<&Json>) -> Logged {
        if !self.options.sql.wants(kind) {
            return Logged::none();
        }
        let (shown, params) = match query.as_str().split_once("$params=") {
            Some((before, params)) => (format!("{before}$params=…"), Some(params)),
            None => (query.as_str().to_string(), None),
        };
        let values = || {
            let params = params.map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
            match (params, body) {
                (Some(p), Some(b)) => format!("$params={p} body={b}"),
                (Some(p), None) => format!("$params={p}"),
                (None, Some(b)) => format!("body={b}"),
                (None, None) => String::new(),
            }
        };
        self.options.sql.statement(self.side, &self.endpoint, kind, &format!("{method} {path}?{shown}"), values)
    }

    /// The dataclass of `table`, described once per connector.
    async fn class(&self, table: &str) -> Result<Arc<DataClass>, ConnectorError> {
        if let Some(class) = self.classes.lock().unwrap_or_else(|p| p.into_inner()).get(table) {
            return Ok(Arc::clone(class));
        }
        match self.describe(table).await? {
            Some(_) => {
                Ok(Arc::clone(self.classes.lock().unwrap_or_else(|p| p.into_inner()).get(table).expect("described")))
            }
            None => Err(ConnectorError::Schema(format!("{}: dataclass `{table}` does not exist", self.endpoint))),
        }
    }

    /// The dataclass and its key attribute's type for a scope (one key attribute).
    async fn scoped(&self, scope: &TableScope) -> Result<(Arc<DataClass>, AttributeType), ConnectorError> {
        let class = self.class(&scope.table).await?;
        let keys = scope.key_columns();
        if keys.len() != 1 {
            return Err(ConnectorError::Config(format!(
                "{}: table `{}`: a 4D key is one attribute, but primary_key_field lists {}",
                self.endpoint,
                scope.table,
                keys.len()
            )));
        }
        let key_type = *class.types.get(keys[0]).ok_or_else(|| {
            ConnectorError::Schema(format!(
                "{}: dataclass `{}` has no attribute `{}`",
                self.endpoint, scope.table, keys[0]
            ))
        })?;
        Ok((class, key_type))
    }

    fn attribute_type(
        &self,
        class: &DataClass,
        scope: &TableScope,
        name: &str,
    ) -> Result<AttributeType, ConnectorError> {
        class.types.get(name).copied().ok_or_else(|| {
            ConnectorError::Schema(format!("{}: dataclass `{}` has no attribute `{name}`", self.endpoint, scope.table))
        })
    }

    /// A key as the JSON value of its attribute.
    fn key_json(&self, key: &Key, key_type: AttributeType) -> Result<Json, ConnectorError> {
        let value = key.values().next().unwrap_or(Value::Null);
        values::write(&value, key_type, self.unit).map_err(|e| ConnectorError::Data(format!("key {key}: {e}")))
    }

    /// The scope's own conditions: record-type filters, NULL keys skipped, keys skipped.
    fn scope_filter(
        &self,
        class: &DataClass,
        scope: &TableScope,
        key_type: AttributeType,
        with_skips: bool,
    ) -> Result<Filter, ConnectorError> {
        let mut filter = Filter::new();
        for (column, value) in &scope.filter {
            let t = self.attribute_type(class, scope, column)?;
            match value {
                Value::Null => filter.is_null(column),
                // `===` reads `@` literally (`API/DataClassClass.md`, query()).
                Value::Text(_) => filter.compare(column, "===", self.json_of(value, t, column)?),
                _ => filter.compare(column, "=", self.json_of(value, t, column)?),
            };
        }
        let key = scope.key_columns()[0];
        if scope.skip_null_keys {
            filter.not_null(key);
        }
        if with_skips && !scope.skip_keys.is_empty() {
            let skipped = scope.skip_keys.iter().map(|k| self.key_json(k, key_type)).collect::<Result<_, _>>()?;
            filter.none_of(key, skipped);
        }
        Ok(filter)
    }

    fn json_of(&self, value: &Value, t: AttributeType, column: &str) -> Result<Json, ConnectorError> {
        values::write(value, t, self.unit).map_err(|e| ConnectorError::Config(format!("filter on `{column}`: {e}")))
    }

    /// `GET /rest/{T}/{attributes}/` with a filter, order and page (`$skip`, `$top`); the
    /// decoded envelope.
    async fn get(
        &self,
        scope: &TableScope,
        attributes: &[&str],
        filter: &Filter,
        orderby: Option<&str>,
        (skip, top): (u64, usize),
        what: &str,
    ) -> Result<Envelope, ConnectorError> {
        let names: Vec<String> = attributes.iter().map(|a| encode_path_segment(a)).collect();
        let path = format!("/rest/{}/{}/", encode_path_segment(&scope.table), names.join(","));
        let mut query = filter.apply(Query::new());
        if let Some(order) = orderby {
            query = query.param("$orderby", format!("\"{order}\""));
        }
        if skip > 0 {
            query = query.param("$skip", skip.to_string());
        }
        query = query.param("$top", top.max(1).to_string());
        let logged = self.log_request(StatementKind::Read, "GET", &path, &query, None);
        let (json, bytes) = self.session.call_sized(Method::GET, &path, &query, None, what).await?;
        let envelope =
            Envelope::of(json, bytes).map_err(|e| ConnectorError::Other(format!("{}: {what}: {e}", self.endpoint)))?;
        logged.done(Rows::Returned(envelope.entities.len() as u64));
        self.counters.record_read(envelope.entities.len(), envelope.bytes);
        Ok(envelope)
    }

    /// The row of `scope.columns` from one entity.
    fn row_of(&self, class: &DataClass, scope: &TableScope, entity: &Json) -> Result<Row, ConnectorError> {
        scope
            .columns
            .iter()
            .map(|c| {
                let t = self.attribute_type(class, scope, c)?;
                let json = entity.get(c.as_str()).unwrap_or(&Json::Null);
                values::read(json, t, self.unit, &self.zone)
                    .map_err(|e| ConnectorError::Other(format!("{}: `{}`.`{c}`: {e}", self.endpoint, scope.table)))
            })
            .collect()
    }

    fn key_of_entity(&self, entity: &Json, key: &str, key_type: AttributeType) -> Result<Option<Key>, ConnectorError> {
        let value = values::read(entity.get(key).unwrap_or(&Json::Null), key_type, self.unit, &self.zone)
            .map_err(|e| ConnectorError::Other(format!("{}: key `{key}`: {e}", self.endpoint)))?;
        Ok(Key::from_value(&value))
    }

    /// Every entity of `filter`, paged with `$skip` in key order until `__COUNT` is read.
    async fn get_all(
        &self,
        scope: &TableScope,
        attributes: &[&str],
        filter: &Filter,
        what: &str,
    ) -> Result<Vec<Json>, ConnectorError> {
        let order = format!("{} ASC", scope.key_columns()[0]);
        let mut all = Vec::new();
        loop {
            let page = self.get(scope, attributes, filter, Some(&order), (all.len() as u64, PAGE), what).await?;
            let done = page.entities.is_empty() || all.len() + page.entities.len() >= page.count as usize;
            all.extend(page.entities);
            if done {
                return Ok(all);
            }
        }
    }

    /// The keys of `entities` (those with a NULL key left out), in their order.
    fn keys_of(&self, entities: &[Json], key: &str, key_type: AttributeType) -> Result<Vec<Key>, ConnectorError> {
        let mut keys = Vec::with_capacity(entities.len());
        for entity in entities {
            keys.extend(self.key_of_entity(entity, key, key_type)?);
        }
        Ok(keys)
    }

    /// Byte-sorted keys of a scope whose key is not an integer (NULL keys left out, skipped
    /// keys removed), read once and kept up to date by this connector's writes.
    async fn key_list(&self, scope: &TableScope, key_type: AttributeType) -> Result<Arc<Vec<Key>>, ConnectorError> {
        self.key_lists
            .get(scope, || async {
                let class = self.class(&scope.table).await?;
                let key = scope.key_columns()[0];
                let filter = self.scope_filter(&class, scope, key_type, false)?;
                let entities = self.get_all(scope, &[key], &filter, "reading the keys").await?;
                self.keys_of(&entities, key, key_type)
            })
            .await
    }

    /// Splits keys into chunks whose `IN` filter stays short enough for a URL.
    fn chunks(&self, keys: &[Json]) -> Vec<Vec<Json>> {
        let mut chunks = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for k in keys {
            // The key as it appears in the URL, and the encoded comma after it.
            let len = super::http::encode_query_value(&k.to_string()).len() + 3;
            if !current.is_empty() && size + len > MAX_FILTER_BYTES {
                chunks.push(std::mem::take(&mut current));
                size = 0;
            }
            size += len;
            current.push(k.clone());
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        chunks
    }

    /// Every entity 4D's `IN` lookup finds for `keys` (attributes as asked), with its key.
    /// The lookup folds case and accents on text, so it may answer other keys too.
    async fn lookup(
        &self,
        scope: &TableScope,
        attributes: &[&str],
        keys: &[Key],
        with_skips: bool,
        what: &str,
    ) -> Result<Vec<(Key, Json)>, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let key = scope.key_columns()[0];
        let json_keys: Vec<Json> = keys.iter().map(|k| self.key_json(k, key_type)).collect::<Result<_, _>>()?;
        let mut found = Vec::new();
        for chunk in self.chunks(&json_keys) {
            let mut filter = self.scope_filter(&class, scope, key_type, with_skips)?;
            filter.any_of(key, chunk);
            for entity in self.get_all(scope, attributes, &filter, what).await? {
                if let Some(k) = self.key_of_entity(&entity, key, key_type)? {
                    found.push((k, entity));
                }
            }
        }
        Ok(found)
    }

    /// Entities of `keys` (attributes as asked), matched byte for byte: rows of other keys
    /// that 4D's folded lookup answers are dropped.
    async fn entities_by_keys(
        &self,
        scope: &TableScope,
        attributes: &[&str],
        keys: &[Key],
        what: &str,
    ) -> Result<Vec<(Key, Json)>, ConnectorError> {
        let wanted: BTreeSet<&Key> = keys.iter().collect();
        let mut found = self.lookup(scope, attributes, keys, true, what).await?;
        found.retain(|(k, _)| wanted.contains(k));
        Ok(found)
    }

    /// Which of `keys` 4D holds exactly, and the keys 4D cannot tell apart: asked or held
    /// keys that differ from another of them only in case or accents (text keys only).
    async fn probe(&self, scope: &TableScope, keys: &[Key]) -> Result<(BTreeSet<Key>, Vec<Key>), ConnectorError> {
        let key = scope.key_columns()[0];
        let wanted: BTreeSet<&Key> = keys.iter().collect();
        let (exact, twins): (Vec<Key>, Vec<Key>) = self
            .lookup(scope, &[key], keys, false, "finding existing keys")
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .partition(|k| wanted.contains(k));
        let exact: BTreeSet<Key> = exact.into_iter().collect();
        // Keys 4D holds or is asked for that fold to the same text: a lookup by one of
        // them may find the other.
        let mut by_fold: HashMap<String, BTreeSet<&Key>> = HashMap::new();
        for k in keys.iter().chain(&twins) {
            if let Key::Text(text) = k {
                by_fold.entry(fold(text)).or_default().insert(k);
            }
        }
        let mut ambiguous: Vec<Key> = by_fold.into_values().filter(|g| g.len() > 1).flatten().cloned().collect();
        ambiguous.sort();
        Ok((exact, ambiguous))
    }

    /// The error for keys 4D cannot tell apart.
    fn twins_error(&self, scope: &TableScope, what: &str, twins: &[Key]) -> ConnectorError {
        let shown: Vec<String> = twins.iter().take(5).map(Key::to_string).collect();
        ConnectorError::Data(format!(
            "cannot {what} `{}` by key: 4D compares text ignoring case and accents, so it cannot tell apart the \
             keys {}; rename them in 4D or in the source",
            scope.table,
            shown.join(", ")
        ))
    }

    /// One entity of an update body: the mapped attributes, `__KEY` for an update.
    fn entity_body(
        &self,
        class: &DataClass,
        scope: &TableScope,
        row: &Row,
        key: &Key,
        update: bool,
        stamp: Option<&Json>,
    ) -> Result<Json, ConnectorError> {
        let mut object = Map::new();
        if update {
            let key_type = class.types[scope.key_columns()[0]];
            let key_text = match self.key_json(key, key_type)? {
                Json::String(s) => s,
                other => other.to_string(),
            };
            object.insert("__KEY".into(), Json::String(key_text));
            if let Some(stamp) = stamp {
                object.insert("__STAMP".into(), stamp.clone());
            }
        }
        for (column, value) in scope.columns.iter().zip(row) {
            let t = self.attribute_type(class, scope, column)?;
            let json = values::write(value, t, self.unit).map_err(|e| {
                ConnectorError::Data(format!("table `{}` key {key} column `{column}`: {e}", scope.table))
            })?;
            object.insert(column.clone(), json);
        }
        Ok(Json::Object(object))
    }

    /// Writes `rows` with `$method=update&$atomic=true`: existing keys as updates (by
    /// `__KEY`), the others as creates. A key that turns out missing (1542) or present (a
    /// duplicate on create) flips and the batch goes again; a stamp conflict (1263) re-reads
    /// the stamp and goes again. Under `$atomic` nothing of a failed batch was saved.
    async fn write_rows(
        &self,
        scope: &TableScope,
        rows: &[Row],
        mut existing: BTreeSet<Key>,
    ) -> Result<u64, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let keys: Vec<Key> = rows
            .iter()
            .map(|r| {
                scope
                    .key_of(r)
                    .ok_or_else(|| ConnectorError::Data(format!("table `{}`: a row without a key", scope.table)))
            })
            .collect::<Result<_, _>>()?;
        let mut stamps: HashMap<Key, Json> = HashMap::new();
        let path = format!("/rest/{}", encode_path_segment(&scope.table));
        let query = Query::new().param("$method", "update").param("$atomic", "true");
        for _ in 0..4 {
            let body: Vec<Json> = rows
                .iter()
                .zip(&keys)
                .map(|(row, key)| self.entity_body(&class, scope, row, key, existing.contains(key), stamps.get(key)))
                .collect::<Result<_, _>>()?;
            let body = Json::Array(body);
            let logged = self.log_request(StatementKind::Write, "POST", &path, &query, Some(&body));
            // A crash here leaves the batch unsent: nothing of it is saved.
            crate::failpoint::hit("mid_write");
            let answer = self.session.call(Method::POST, &path, &query, Some(&body), "writing rows").await?;
            let answers = entity_answers(&answer);
            logged.done(Rows::Affected(answers.len() as u64));
            let (mut missing, mut stale, mut duplicate, mut refused) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (key, entity) in keys.iter().zip(&answers) {
                let errors = errors_of(entity);
                if errors.is_empty() {
                    continue;
                }
                let status = entity.pointer("/__STATUS/status").and_then(Json::as_i64);
                if errors.iter().any(|e| e.code == 1542) || status == Some(5) {
                    missing.push(key.clone());
                } else if errors.iter().any(|e| e.code == 1263) || status == Some(2) {
                    stale.push(key.clone());
                } else if status == Some(3) {
                    return Err(ConnectorError::Busy {
                        endpoint: self.endpoint.clone(),
                        message: format!(
                            "table `{}` key {key} is locked in 4D: {}",
                            scope.table,
                            describe_errors(&errors)
                        ),
                    });
                } else if status == Some(4) && !existing.contains(key) && is_duplicate(&errors) {
                    duplicate.push(key.clone());
                } else if errors.iter().all(|e| matches!(e.code, 1046 | 1517)) && answers.len() > 1 {
                    // Only the general "cannot save" codes: refused because another entity
                    // of the atomic batch was; nothing of its own to report.
                    continue;
                } else {
                    refused.push(format!("key {key}: {}", describe_errors(&errors)));
                }
            }
            if !refused.is_empty() {
                return Err(ConnectorError::Data(format!(
                    "4D refused rows of `{}`: {}",
                    scope.table,
                    refused.join("; ")
                )));
            }
            if missing.is_empty() && stale.is_empty() && duplicate.is_empty() {
                if answers.is_empty() && !errors_of(&answer).is_empty() {
                    let errors = describe_errors(&errors_of(&answer));
                    return Err(ConnectorError::Data(format!("4D refused the batch for `{}`: {errors}", scope.table)));
                }
                self.key_lists.update(&scope.table, &keys, &[]);
                self.counters.rows_written.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
                return Ok(rows.len() as u64);
            }
            // Under `$atomic` nothing was saved: fix what 4D said and send the batch again.
            for key in &missing {
                existing.remove(key);
                stamps.remove(key);
            }
            if !duplicate.is_empty() {
                if key_type.is_integer() {
                    existing.extend(duplicate);
                } else {
                    // A text key may collide with a key 4D holds in another case or accent.
                    let (exact, twins) = self.probe(scope, &duplicate).await?;
                    if !twins.is_empty() {
                        return Err(self.twins_error(scope, "write to", &twins));
                    }
                    existing.extend(exact);
                }
            }
            if !stale.is_empty() {
                let key = scope.key_columns()[0];
                for (k, entity) in self.entities_by_keys(scope, &[key], &stale, "re-reading stamps").await? {
                    if let Some(stamp) = entity.get("__STAMP") {
                        stamps.insert(k, stamp.clone());
                    }
                }
            }
        }
        Err(ConnectorError::Other(format!(
            "{}: writing rows of `{}`: 4D kept refusing the batch after re-reading keys and stamps",
            self.endpoint, scope.table
        )))
    }
}

/// Text as 4D's default comparison sees it: canonical decomposition (NFD), combining marks
/// removed, lower case (`Concepts/dt_string.md`: comparisons ignore case and accents).
fn fold(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    text.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

fn is_duplicate(errors: &[session::FourDError]) -> bool {
    errors.iter().any(|e| {
        let m = e.message.to_lowercase();
        m.contains("duplicate") || m.contains("unique") || m.contains("already exists")
    })
}

/// The per-entity answers of an update: `{"__ENTITIES": [...]}`, an array, or one object
/// (`REST/$method.md`, `REST/$atomic_$atonce.md`; `docs/4d-rest.md` §4.1).
fn entity_answers(answer: &Json) -> Vec<Json> {
    match answer {
        Json::Array(items) => items.clone(),
        Json::Object(o) => match o.get("__ENTITIES").and_then(Json::as_array) {
            Some(items) => items.clone(),
            None if o.contains_key("__KEY") || o.contains_key("__STATUS") => vec![answer.clone()],
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A read answer (`REST/{dataClass}.md`): `__COUNT` entities in the selection, `__SENT` in
/// this answer starting at `__FIRST`.
struct Envelope {
    count: u64,
    entities: Vec<Json>,
    bytes: usize,
}

impl Envelope {
    fn of(json: Json, bytes: usize) -> Result<Envelope, String> {
        let Json::Object(mut o) = json else { return Err("the answer is not a JSON object".into()) };
        let entities = match o.remove("__ENTITIES") {
            Some(Json::Array(items)) => items,
            None | Some(Json::Null) => Vec::new(),
            Some(_) => return Err("`__ENTITIES` is not an array".into()),
        };
        let count = match o.get("__COUNT") {
            Some(n) => n.as_u64().ok_or("`__COUNT` is not a count")?,
            None => entities.len() as u64,
        };
        Ok(Envelope { count, entities, bytes })
    }
}

#[async_trait]
impl Connector for FourDRest {
    fn describe_endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            offset_in_range: true,
            costly_round_trips: true,
            writable: self.side == Side::Target,
            transactional_batches: true,
            concurrent_writes: 1,
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    fn supports_scope(&self, scope: &TableScope) -> Result<(), String> {
        match scope.key_indexes.len() {
            1 => Ok(()),
            n => Err(format!(
                "a 4D key is one attribute (dataclasses have no compound primary keys), but primary_key_field lists {n}"
            )),
        }
    }

    async fn connect(&self) -> Result<(), ConnectorError> {
        self.session.reconnect().await
    }

    async fn health_check(&self) -> Result<(), ConnectorError> {
        self.session.call(Method::GET, "/rest/$catalog", &Query::new(), None, "reading the catalog").await.map(|_| ())
    }

    async fn close(&self) {
        self.session.logout().await;
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        let path = format!("/rest/$catalog/{}", encode_path_segment(table));
        let json = match self.session.call(Method::GET, &path, &Query::new(), None, "describing the dataclass").await {
            Ok(json) => json,
            Err(ConnectorError::Schema(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut class = catalog_class(&json, table, self.unit)
            .map_err(|e| ConnectorError::Schema(format!("{}: {e}", self.endpoint)))?;
        if self.side == Side::Target {
            // 4D writes the global modification stamp itself on every save
            // (`ORDA/global-stamp.md`): a target column for it could never be written.
            class.schema.columns.retain(|c| c.name != GLOBAL_STAMP);
            class.types.remove(GLOBAL_STAMP);
        }
        let schema = class.schema.clone();
        self.classes.lock().unwrap_or_else(|p| p.into_inner()).insert(table.to_string(), Arc::new(class));
        Ok(Some(schema))
    }

    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        if !key_type.is_integer() {
            let list = self.key_list(scope, key_type).await?;
            return Ok(key_list::listed(&list, scope, range).count() as u64);
        }
        let key = scope.key_columns()[0];
        let filter = self.range_filter(&class, scope, range, key_type)?;
        Ok(self.get(scope, &[key], &filter, None, (0, 1), "counting rows").await?.count)
    }

    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        if !key_type.is_integer() {
            let list = self.key_list(scope, key_type).await?;
            return Ok(key_list::listed(&list, scope, range).nth(offset as usize).cloned());
        }
        let key = scope.key_columns()[0];
        let filter = self.range_filter(&class, scope, range, key_type)?;
        let order = format!("{key} ASC");
        let page = self.get(scope, &[key], &filter, Some(&order), (offset, 1), "finding a key by offset").await?;
        match page.entities.first() {
            Some(entity) => self.key_of_entity(entity, key, key_type),
            None => Ok(None),
        }
    }

    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<KeyProblems, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let key = scope.key_columns()[0];
        let mut filter = self.scope_filter(&class, scope, key_type, true)?;
        filter.is_null(key);
        let null_rows = self.get(scope, &[key], &filter, None, (0, 1), "counting NULL keys").await?.count;
        let mut problems = KeyProblems { null_rows, duplicates: Vec::new() };
        // The dataclass's primary key is unique in 4D; another attribute may repeat.
        let identifying = class.key == key;
        if duplicates && !(identifying && key_type.is_integer()) {
            let list = self.key_list(scope, key_type).await?;
            problems.duplicates = key_list::duplicates(&list, scope, limit);
        }
        Ok(problems)
    }

    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        if !key_type.is_integer() {
            let list = self.key_list(scope, key_type).await?;
            return Ok(key_list::key_page(&list, scope, range, limit));
        }
        let key = scope.key_columns()[0];
        let filter = self.range_filter(&class, scope, range, key_type)?;
        let order = format!("{key} ASC");
        let page = self.get(scope, &[key], &filter, Some(&order), (0, limit), "reading keys").await?;
        let more = self.more_after(&page)?;
        Ok(Page { items: self.keys_of(&page.entities, key, key_type)?, more })
    }

    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        if !key_type.is_integer() {
            let keys = self.read_keys(scope, range, limit).await?;
            let rows = self.read_rows_by_keys(scope, &keys.items).await?;
            return key_list::rows_page(&self.endpoint, scope, keys, rows);
        }
        let key = scope.key_columns()[0];
        let filter = self.range_filter(&class, scope, range, key_type)?;
        let order = format!("{key} ASC");
        let attributes: Vec<&str> = scope.columns.iter().map(String::as_str).collect();
        let page = self.get(scope, &attributes, &filter, Some(&order), (0, limit), "reading rows").await?;
        let more = self.more_after(&page)?;
        let rows = page.entities.iter().map(|e| self.row_of(&class, scope, e)).collect::<Result<_, _>>()?;
        Ok(Page { items: rows, more })
    }

    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let class = self.class(&scope.table).await?;
        let attributes: Vec<&str> = scope.columns.iter().map(String::as_str).collect();
        let found = self.entities_by_keys(scope, &attributes, keys, "reading rows by key").await?;
        found.iter().map(|(_, e)| self.row_of(&class, scope, e)).collect()
    }

    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let (modify, m_type, m_index) = self.modify(&class, scope)?;
        let key = scope.key_columns()[0];
        let order = &format!("{modify} ASC, {key} ASC");
        let attributes: &Vec<&str> = &scope.columns.iter().map(String::as_str).collect();
        let class: &DataClass = &class;
        let read = |filter: Filter| async move {
            let page = self.get(scope, attributes, &filter, Some(order), (0, limit), "reading changed rows").await?;
            let more = self.more_after(&page)?;
            let rows: Vec<Row> =
                page.entities.iter().map(|e| self.row_of(class, scope, e)).collect::<Result<_, ConnectorError>>()?;
            Ok::<_, ConnectorError>((rows, more))
        };
        if key_type.is_integer() {
            // 4D and db-sync agree on integer order: the server's page is the answer.
            let mut filter = self.scope_filter(class, scope, key_type, true)?;
            match (&cursor.modify_id, &cursor.key) {
                (None, _) => filter.not_null(&modify),
                (Some(m), Some(k)) => {
                    filter.after_pair(&modify, self.json_of(m, m_type, &modify)?, key, self.key_json(k, key_type)?)
                }
                (Some(m), None) => filter.compare(&modify, ">=", self.json_of(m, m_type, &modify)?),
            };
            let (items, more) = read(filter).await?;
            return Ok(Page { items, more });
        }
        // Other keys: 4D orders ties of the modify ID by folded text; db-sync by key bytes.
        let modify = &modify;
        let floor_filter = |floor: &Option<(Value, bool)>| {
            let mut filter = self.scope_filter(class, scope, key_type, true)?;
            match floor {
                None => filter.not_null(modify),
                Some((m, true)) => filter.compare(modify, ">=", self.json_of(m, m_type, modify)?),
                Some((m, false)) => filter.compare(modify, ">", self.json_of(m, m_type, modify)?),
            };
            Ok::<_, ConnectorError>(filter)
        };
        key_list::changed_since(
            scope,
            cursor,
            m_index,
            |floor| async move { read(floor_filter(&floor)?).await },
            |m| async move {
                let mut group = self.scope_filter(class, scope, key_type, true)?;
                group.compare(modify, "=", self.json_of(&m, m_type, modify)?);
                let entities = self.get_all(scope, attributes, &group, "reading changed rows").await?;
                entities.iter().map(|e| self.row_of(class, scope, e)).collect::<Result<_, _>>()
            },
        )
        .await
    }

    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let (modify, m_type, _) = self.modify(&class, scope)?;
        let mut filter = self.scope_filter(&class, scope, key_type, true)?;
        match modify_id {
            Some(m) => filter.compare(&modify, ">", self.json_of(m, m_type, &modify)?),
            None => filter.not_null(&modify),
        };
        Ok(self.get(scope, &[&modify], &filter, None, (0, 1), "counting changed rows").await?.count)
    }

    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let (modify, _, _) = self.modify(&class, scope)?;
        let mut filter = self.scope_filter(&class, scope, key_type, true)?;
        filter.is_null(&modify);
        Ok(self.get(scope, &[&modify], &filter, None, (0, 1), "counting rows without a modify ID").await?.count)
    }

    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        let (class, key_type) = self.scoped(scope).await?;
        let (modify, m_type, _) = self.modify(&class, scope)?;
        let mut filter = self.scope_filter(&class, scope, key_type, true)?;
        filter.not_null(&modify);
        let order = format!("{modify} DESC");
        let page = self.get(scope, &[&modify], &filter, Some(&order), (0, 1), "reading the largest modify ID").await?;
        match page.entities.first() {
            Some(entity) => {
                values::read(entity.get(modify.as_str()).unwrap_or(&Json::Null), m_type, self.unit, &self.zone)
                    .map(|v| (!v.is_null()).then_some(v))
                    .map_err(|e| ConnectorError::Other(format!("{}: `{modify}`: {e}", self.endpoint)))
            }
            None => Ok(None),
        }
    }

    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let keys: Vec<Key> = rows.iter().filter_map(|r| scope.key_of(r)).collect();
        let (existing, twins) = self.probe(scope, &keys).await?;
        if !twins.is_empty() {
            return Err(self.twins_error(scope, "write to", &twins));
        }
        self.write_rows(scope, rows, existing).await
    }

    async fn insert_new(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let (_, key_type) = self.scoped(scope).await?;
        if !key_type.is_integer() {
            // A new text key may still collide with one 4D holds in another case.
            return self.upsert(scope, rows).await;
        }
        // The caller has just seen these keys missing: send creates; a key that exists
        // after all comes back as a duplicate and goes again as an update.
        self.write_rows(scope, rows, BTreeSet::new()).await
    }

    async fn create_table(&self, name: &str, columns: &[ColumnSchema], keys: &[String]) -> Result<(), ConnectorError> {
        let _ = (columns, keys);
        Err(ConnectorError::Schema(format!(
            "{}: dataclass `{name}` does not exist, and 4D's REST server cannot create one; add the table in 4D's \
             structure editor and expose it as a REST resource",
            self.endpoint
        )))
    }

    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (class, key_type) = self.scoped(scope).await?;
        let key = scope.key_columns()[0];
        // Count what the filter will delete first: 4D's answer gives no count
        // (`REST/$method.md`). For text keys, only keys 4D holds exactly as asked.
        let present: Vec<Key> = if key_type.is_integer() {
            keys.to_vec()
        } else {
            let (exact, twins) = self.probe(scope, keys).await?;
            if !twins.is_empty() {
                return Err(self.twins_error(scope, "delete from", &twins));
            }
            exact.into_iter().collect()
        };
        if present.is_empty() {
            return Ok(0);
        }
        let json_keys: Vec<Json> = present.iter().map(|k| self.key_json(k, key_type)).collect::<Result<_, _>>()?;
        let mut deleted = 0;
        for chunk in self.chunks(&json_keys) {
            let mut filter = self.scope_filter(&class, scope, key_type, false)?;
            let chunk_len = chunk.len() as u64;
            filter.any_of(key, chunk);
            deleted += self.get(scope, &[key], &filter, None, (0, 1), "counting rows to delete").await?.count;
            let path = format!("/rest/{}/", encode_path_segment(&scope.table));
            let query = filter.apply(Query::new()).param("$method", "delete");
            let logged = self.log_request(StatementKind::Write, "POST", &path, &query, None);
            let answer = self.session.call(Method::POST, &path, &query, None, "deleting rows").await?;
            logged.done(Rows::Affected(chunk_len));
            let errors = errors_of(&answer);
            if answer.get("ok").and_then(Json::as_bool) != Some(true) || !errors.is_empty() {
                return Err(ConnectorError::Busy {
                    endpoint: self.endpoint.clone(),
                    message: format!("deleting from `{}` stopped: {}", scope.table, describe_errors(&errors)),
                });
            }
        }
        self.key_lists.update(&scope.table, &[], &present);
        self.counters.rows_written.fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
        Ok(deleted)
    }
}

impl FourDRest {
    /// Whether a keyset page (`$skip` 0) leaves rows to read: fewer entities than
    /// `__COUNT` (a server cap on `$top` included). An empty page of a selection that is
    /// not empty would never advance, so it is an error rather than an endless read.
    fn more_after(&self, page: &Envelope) -> Result<bool, ConnectorError> {
        if page.entities.is_empty() && page.count > 0 {
            return Err(ConnectorError::Other(format!(
                "{}: 4D answered no entities although __COUNT says {} match",
                self.endpoint, page.count
            )));
        }
        Ok((page.entities.len() as u64) < page.count)
    }

    /// The scope's conditions and `key > after AND key <= upto` (integer keys).
    fn range_filter(
        &self,
        class: &DataClass,
        scope: &TableScope,
        range: &KeyRange,
        key_type: AttributeType,
    ) -> Result<Filter, ConnectorError> {
        let mut filter = self.scope_filter(class, scope, key_type, true)?;
        let key = scope.key_columns()[0];
        if let Some(after) = &range.after {
            filter.compare(key, ">", self.key_json(after, key_type)?);
        }
        if let Some(upto) = &range.upto {
            filter.compare(key, "<=", self.key_json(upto, key_type)?);
        }
        Ok(filter)
    }

    /// The modify attribute of a scope: name, type and index in the row.
    fn modify(&self, class: &DataClass, scope: &TableScope) -> Result<(String, AttributeType, usize), ConnectorError> {
        let index = scope
            .modify_index
            .ok_or_else(|| ConnectorError::Config(format!("table `{}` has no modify_id_field", scope.table)))?;
        let name = scope.columns[index].clone();
        let t = self.attribute_type(class, scope, &name)?;
        Ok((name, t, index))
    }
}

/// A dataclass from its `$catalog/{T}` answer (`REST/$catalog.md`): storage attributes as
/// columns (pictures and BLOBs left out, with a warning), the key from `identifying` and
/// `key[0]`.
fn catalog_class(json: &Json, table: &str, unit: TimeUnit) -> Result<DataClass, String> {
    let class = match json.get("dataClasses").and_then(Json::as_array) {
        Some(list) => list.iter().find(|c| c.get("name").and_then(Json::as_str) == Some(table)).unwrap_or(json),
        None => json,
    };
    let attributes = class
        .get("attributes")
        .and_then(Json::as_array)
        .ok_or_else(|| format!("the catalog of `{table}` lists no attributes"))?;
    let mut types = HashMap::new();
    let mut columns = Vec::new();
    let mut identifying = None;
    for attribute in attributes {
        let name = attribute.get("name").and_then(Json::as_str).unwrap_or_default();
        if attribute.get("kind").and_then(Json::as_str).unwrap_or("storage") != "storage" {
            continue;
        }
        let type_name = attribute.get("type").and_then(Json::as_str).unwrap_or_default();
        if attribute.get("identifying").and_then(Json::as_bool) == Some(true) {
            identifying = Some(name.to_string());
        }
        let Some(t) = AttributeType::parse(type_name) else {
            if matches!(type_name, "image" | "blob" | "picture") {
                tracing::warn!(
                    table,
                    attribute = name,
                    "4D {type_name} attribute skipped: pictures and BLOBs are not synced"
                );
                continue;
            }
            return Err(format!("`{table}`.`{name}` has a 4D type db-sync does not know: `{type_name}`"));
        };
        let (column_type, storage) = t.column(unit);
        types.insert(name.to_string(), t);
        columns.push(ColumnSchema {
            name: name.to_string(),
            declared_type: type_name.to_string(),
            column_type,
            // The catalog says nothing of nullability (`docs/4d-rest.md` §2).
            nullable: true,
            has_default: false,
            storage,
        });
    }
    let key_name = class.pointer("/key/0/name").and_then(Json::as_str).map(str::to_string);
    let key = match (identifying, key_name) {
        (Some(a), Some(b)) if a != b => return Err(format!("`{table}`: the catalog names two keys, `{a}` and `{b}`")),
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => return Err(format!("`{table}` has no primary key attribute in the catalog")),
    };
    for column in &mut columns {
        if column.name == key {
            column.nullable = false;
        }
    }
    Ok(DataClass {
        types,
        key: key.clone(),
        schema: TableSchema { name: table.to_string(), columns, unique_keys: vec![vec![key]] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_gives_columns_and_key() {
        let json: Json = serde_json::from_str(
            r#"{"name": "Employee", "dataURI": "/rest/Employee", "defaultTopSize": 100, "key": [{"name": "ID"}],
                "attributes": [{"name": "ID", "kind": "storage", "type": "long", "indexed": true, "identifying": true},
                               {"name": "photo", "kind": "storage", "type": "image"},
                               {"name": "born", "kind": "storage", "type": "date"},
                               {"name": "fullName", "kind": "calculated", "type": "string", "readOnly": true},
                               {"name": "employer", "kind": "relatedEntity", "type": "Company", "path": "Company"}]}"#,
        )
        .unwrap();
        let class = catalog_class(&json, "Employee", TimeUnit::Millis).unwrap();
        assert_eq!(class.key, "ID");
        let names: Vec<&str> = class.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ID", "born"]);
        assert!(!class.schema.columns[0].nullable);
        assert_eq!(class.types["born"], AttributeType::Date);
    }

    #[test]
    fn unknown_types_and_missing_keys_are_schema_errors() {
        let json: Json =
            serde_json::from_str(r#"{"attributes": [{"name": "x", "kind": "storage", "type": "vector"}]}"#).unwrap();
        assert!(catalog_class(&json, "T", TimeUnit::Millis).unwrap_err().contains("vector"));
        let json: Json =
            serde_json::from_str(r#"{"attributes": [{"name": "x", "kind": "storage", "type": "long"}]}"#).unwrap();
        assert!(catalog_class(&json, "T", TimeUnit::Millis).unwrap_err().contains("no primary key"));
    }
}
