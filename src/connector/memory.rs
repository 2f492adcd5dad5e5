//! An in-memory connector: tables as ordered maps. It implements the whole
//! [`Connector`] contract (key order, ranges, filters, offsets, `(modify_id, key)`
//! paging) so algorithms such as the binary search can be tested exhaustively without a
//! database; the conformance suite holds it to the same rules as the real backends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Capabilities, Connector, ConnectorError, IoCounters, KeyProblems, ModifyCursor, Page};
use crate::model::{ColumnSchema, ColumnType, Key, KeyRange, Row, Storage, TableSchema, TableScope, Value};

struct Table {
    columns: Vec<String>,
    key_indexes: Vec<usize>,
    rows: BTreeMap<Key, Row>,
}

/// Tables held in memory.
#[derive(Default)]
pub struct MemoryConnector {
    /// Tables by name; a lock because the trait takes `&self` (no await while held).
    tables: Mutex<HashMap<String, Table>>,
    counters: IoCounters,
}

impl MemoryConnector {
    /// An empty database.
    pub fn new() -> MemoryConnector {
        MemoryConnector::default()
    }

    /// Creates (or replaces) a table with `columns`, keyed by `columns[key_index]`.
    pub fn create_table(&self, name: &str, columns: &[&str], key_index: usize) {
        self.create_table_keyed(name, columns, &[key_index]);
    }

    /// Creates (or replaces) a table with `columns`, keyed by the columns at
    /// `key_indexes` (several for a compound key).
    pub fn create_table_keyed(&self, name: &str, columns: &[&str], key_indexes: &[usize]) {
        let table = Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            key_indexes: key_indexes.to_vec(),
            rows: BTreeMap::new(),
        };
        self.tables.lock().expect("lock").insert(name.to_string(), table);
    }

    /// Inserts rows directly (test set-up).
    pub fn insert(&self, name: &str, rows: impl IntoIterator<Item = Row>) {
        let mut tables = self.tables.lock().expect("lock");
        let table = tables.get_mut(name).expect("table exists");
        for row in rows {
            let key = Key::from_values(table.key_indexes.iter().map(|i| &row[*i])).expect("valid key");
            table.rows.insert(key, row);
        }
    }

    /// Removes a row directly (test set-up: a concurrent change).
    pub fn remove(&self, name: &str, key: &Key) {
        self.tables.lock().expect("lock").get_mut(name).expect("table exists").rows.remove(key);
    }

    /// All keys of a table (test checks).
    pub fn keys(&self, name: &str) -> Vec<Key> {
        self.tables.lock().expect("lock")[name].rows.keys().cloned().collect()
    }

    fn with_rows<T>(
        &self,
        scope: &TableScope,
        f: impl FnOnce(&Table, Vec<(&Key, Row)>) -> T,
    ) -> Result<T, ConnectorError> {
        self.with_range(scope, &KeyRange::all(), f)
    }

    /// Runs `f` over the scope's rows inside `range`, in key order, projected on the
    /// scope's columns.
    fn with_range<T>(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        f: impl FnOnce(&Table, Vec<(&Key, Row)>) -> T,
    ) -> Result<T, ConnectorError> {
        use std::ops::Bound;
        let tables = self.tables.lock().expect("lock");
        let table = tables
            .get(&scope.table)
            .ok_or_else(|| ConnectorError::Schema(format!("memory: no such table {}", scope.table)))?;
        let mut indexes = Vec::with_capacity(scope.columns.len());
        for column in &scope.columns {
            indexes.push(table.columns.iter().position(|c| c == column).ok_or_else(|| {
                ConnectorError::Schema(format!("memory: no such column {column} in {}", scope.table))
            })?);
        }
        let filter: Vec<(usize, &Value)> = scope
            .filter
            .iter()
            .filter_map(|(c, v)| table.columns.iter().position(|x| x == c).map(|i| (i, v)))
            .collect();
        let lower = range.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let upper = range.upto.as_ref().map_or(Bound::Unbounded, Bound::Included);
        if matches!((&lower, &upper), (Bound::Excluded(a), Bound::Included(b)) if a >= b) {
            return Ok(f(table, Vec::new()));
        }
        let rows = table
            .rows
            .range((lower, upper))
            .filter(|(k, row)| filter.iter().all(|(i, v)| row[*i].same_as(v)) && !scope.skip_keys.contains(k))
            .map(|(k, row)| (k, indexes.iter().map(|i| row[*i].clone()).collect()))
            .collect();
        self.counters.queries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(f(table, rows))
    }
}

#[async_trait]
impl Connector for MemoryConnector {
    fn describe_endpoint(&self) -> String {
        "memory".into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            offset_in_range: true,
            costly_round_trips: false,
            writable: true,
            transactional_batches: true,
            concurrent_writes: 1,
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        let tables = self.tables.lock().expect("lock");
        Ok(tables.get(table).map(|t| TableSchema {
            name: table.to_string(),
            columns: t
                .columns
                .iter()
                .map(|c| ColumnSchema {
                    name: c.clone(),
                    declared_type: String::new(),
                    column_type: ColumnType::Other,
                    nullable: true,
                    has_default: false,
                    storage: Storage::default(),
                })
                .collect(),
            unique_keys: vec![t.key_indexes.iter().map(|i| t.columns[*i].clone()).collect()],
        }))
    }

    async fn key_problems(&self, scope: &TableScope, _: bool, _: usize) -> Result<KeyProblems, ConnectorError> {
        // Rows live in a map by key: a key is never NULL nor shared.
        self.with_rows(scope, |_, _| KeyProblems::default())
    }

    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        self.with_range(scope, range, |_, rows| rows.len() as u64)
    }

    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        self.with_range(scope, range, |_, rows| rows.get(offset as usize).map(|(k, _)| (*k).clone()))
    }

    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        let page = self.with_range(scope, range, |_, rows| Page {
            more: rows.len() > limit,
            items: rows.iter().take(limit).map(|(k, _)| (*k).clone()).collect::<Vec<_>>(),
        })?;
        self.counters.rows_read.fetch_add(page.items.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(page)
    }

    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        self.with_range(scope, range, |_, rows| Page {
            more: rows.len() > limit,
            items: rows.into_iter().take(limit).map(|(_, r)| r).collect(),
        })
    }

    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        self.with_rows(scope, |_, rows| rows.into_iter().filter(|(k, _)| wanted.contains(k)).map(|(_, r)| r).collect())
    }

    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        let m = scope.modify_index.ok_or_else(|| ConnectorError::Schema("no modify column".into()))?;
        self.with_rows(scope, |_, rows| {
            let mut rows: Vec<(Key, Row)> = rows
                .into_iter()
                .filter(|(k, r)| {
                    let v = &r[m];
                    if v.is_null() {
                        return false;
                    }
                    match (&cursor.modify_id, &cursor.key) {
                        (Some(c), Some(ck)) => {
                            let o = v.cmp_total(c);
                            o.is_gt() || (o.is_eq() && *k > ck)
                        }
                        (Some(c), None) => v.cmp_total(c).is_ge(),
                        (None, _) => true,
                    }
                })
                .map(|(k, r)| (k.clone(), r))
                .collect();
            rows.sort_by(|a, b| a.1[m].cmp_total(&b.1[m]).then_with(|| a.0.cmp(&b.0)));
            Page { more: rows.len() > limit, items: rows.into_iter().take(limit).map(|(_, r)| r).collect() }
        })
    }

    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        let Some(m) = scope.modify_index else { return Ok(0) };
        self.with_rows(scope, |_, rows| {
            rows.iter().filter(|(_, r)| !r[m].is_null() && modify_id.is_none_or(|c| r[m].cmp_total(c).is_gt())).count()
                as u64
        })
    }

    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        let Some(m) = scope.modify_index else { return Ok(0) };
        self.with_rows(scope, |_, rows| rows.iter().filter(|(_, r)| r[m].is_null()).count() as u64)
    }

    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        let Some(m) = scope.modify_index else { return Ok(None) };
        self.with_rows(scope, |_, rows| {
            rows.into_iter().map(|(_, r)| r[m].clone()).filter(|v| !v.is_null()).max_by(|a, b| a.cmp_total(b))
        })
    }

    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        let mut tables = self.tables.lock().expect("lock");
        let table = tables.get_mut(&scope.table).ok_or_else(|| ConnectorError::Schema("no such table".into()))?;
        let width = table.columns.len();
        for row in rows {
            let key = scope.key_of(row).ok_or_else(|| ConnectorError::Data("row without a valid key".into()))?;
            let stored = table.rows.entry(key).or_insert_with(|| vec![Value::Null; width]);
            for (value, column) in row.iter().zip(&scope.columns) {
                if let Some(i) = table.columns.iter().position(|c| c == column) {
                    stored[i] = value.clone();
                }
            }
        }
        Ok(rows.len() as u64)
    }

    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        let mut tables = self.tables.lock().expect("lock");
        let table = tables.get_mut(&scope.table).ok_or_else(|| ConnectorError::Schema("no such table".into()))?;
        let filter: Vec<(usize, Value)> = scope
            .filter
            .iter()
            .filter_map(|(c, v)| table.columns.iter().position(|x| x == c).map(|i| (i, v.clone())))
            .collect();
        let mut deleted = 0;
        for key in keys {
            let matches = table.rows.get(key).is_some_and(|row| filter.iter().all(|(i, v)| row[*i].same_as(v)));
            if matches {
                table.rows.remove(key);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
