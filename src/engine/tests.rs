//! Engine behaviour that needs control over the databases: a source that changes while a
//! binary search runs, which no count-based search can see, triggers the manual's
//! "counts mismatch after binary delete" and, with `fallback_full_compare_on_mismatch`,
//! the full compare.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::*;
use crate::connector::memory::MemoryConnector;
use crate::connector::{Capabilities, IoCounters, ModifyCursor, Page};
use crate::model::{Key, Row, TableSchema};
use crate::report::ProgressMode;

use crate::model::TableScope;

/// Source keys 1..=20000; the target has them plus three extras below them. After the
/// search has dismissed the upper half, source key 20000 disappears: the search finds
/// the three extras, yet the target still has one row too many afterwards.
fn setup(fallback: bool) -> (Engine, Arc<MemoryConnector>) {
    let source = MemoryConnector::new();
    let target = Arc::new(MemoryConnector::new());
    for db in [&source, target.as_ref()] {
        db.create_table("t", &["id", "v"], 0);
        db.insert("t", (1..=20_000).map(|i| vec![Value::Int(i), Value::Int(i * 2)]));
    }
    target.insert("t", [-5, -3, -1].map(|i| vec![Value::Int(i), Value::Int(0)]));
    let text = format!(
        r#"{{"source": {{"type": "sqlite", "path": "unused"}}, "target": {{"type": "sqlite", "path": "unused"}},
            "tables": [{{"name": "t"}}], "fallback_full_compare_on_mismatch": {fallback},
            "binary_search_read_batch": 100}}"#
    );
    let config = Config::from_str_at(&text, std::path::Path::new("c.json"), &|_| None).unwrap();
    // Count calls: survey (1), choice of strategy (2), first split (3), second split (4).
    let source = TestDb::shrinking(source, 4, Key::Int(20_000));
    let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
    let engine = Engine::with_connectors(config, source, target.clone() as Arc<dyn Connector>, options);
    (engine, target)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// With the fallback, the step falls back to a full compare and the target ends equal.
#[test]
fn mismatch_after_binary_delete_falls_back_to_full_compare() {
    let (engine, target) = setup(true);
    let report = block_on(engine.run(&mut NoObserver)).map_err(|(e, _)| e).unwrap();
    assert_eq!(report.metrics.binarySearchCountAll, 1);
    assert_eq!(report.tables[0].deleted, 4, "three extras by the search, one by the full compare");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let keys = target.keys("t");
    assert_eq!(keys.len(), 19_999);
    assert_eq!(keys.first(), Some(&Key::Int(1)));
    assert_eq!(keys.last(), Some(&Key::Int(19_999)));
}

/// Without the fallback the mismatch is an error of the run (the plan's `changed` step,
/// a full compare, still fixes the table).
#[test]
fn mismatch_after_binary_delete_without_fallback_is_an_error() {
    let (engine, target) = setup(false);
    let report = block_on(engine.run(&mut NoObserver)).map_err(|(e, _)| e).unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].message.contains("counts mismatch after binary delete"), "{:?}", report.errors);
    assert_eq!(report.tables[0].deleted, 4, "{report:#?}");
    assert_eq!(target.keys("t").len(), 19_999);
}

/// An in-memory database with two behaviours of real ones, each optional:
/// - a server that caps every page at `cap` items, whatever the limit asked for (as 4D's
///   REST answers 100 entities unless told otherwise): its pages say whether more follow,
///   and a short page is not the end;
/// - a row (`victim`) that disappears after `delete_after` count queries, as if a user
///   deleted it while the sync ran.
struct TestDb {
    inner: Arc<MemoryConnector>,
    cap: usize,
    counts: AtomicU64,
    delete_after: u64,
    victim: Option<Key>,
}

impl TestDb {
    /// Pages capped at `cap` items.
    fn capped(inner: &Arc<MemoryConnector>, cap: usize) -> Arc<dyn Connector> {
        Arc::new(TestDb { inner: inner.clone(), cap, counts: AtomicU64::new(0), delete_after: 0, victim: None })
    }

    /// `victim` disappears at count query number `delete_after`.
    fn shrinking(inner: MemoryConnector, delete_after: u64, victim: Key) -> Arc<dyn Connector> {
        let inner = Arc::new(inner);
        Arc::new(TestDb { inner, cap: usize::MAX, counts: AtomicU64::new(0), delete_after, victim: Some(victim) })
    }
}

#[async_trait]
impl Connector for TestDb {
    fn describe_endpoint(&self) -> String {
        "test memory".into()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn counters(&self) -> &IoCounters {
        self.inner.counters()
    }
    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        self.inner.describe(table).await
    }
    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<crate::connector::KeyProblems, ConnectorError> {
        self.inner.key_problems(scope, duplicates, limit).await
    }
    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        if let Some(victim) = &self.victim
            && self.counts.fetch_add(1, Ordering::SeqCst) + 1 == self.delete_after
        {
            self.inner.remove(&scope.table, victim);
        }
        self.inner.count(scope, range).await
    }
    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        self.inner.key_at(scope, range, offset).await
    }
    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        self.inner.read_keys(scope, range, limit.min(self.cap)).await
    }
    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        self.inner.read_rows(scope, range, limit.min(self.cap)).await
    }
    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        self.inner.read_rows_by_keys(scope, keys).await
    }
    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        self.inner.read_changed_since(scope, cursor, limit.min(self.cap)).await
    }
    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        self.inner.count_changed_since(scope, modify_id).await
    }
    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        self.inner.count_null_modify(scope).await
    }
    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        self.inner.max_modify(scope).await
    }
    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.inner.upsert(scope, rows).await
    }
    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        self.inner.delete(scope, keys).await
    }
}

/// Every row of `t`, read uncapped.
fn all_rows(db: &MemoryConnector) -> Vec<Row> {
    let scope = TableScope {
        table: "t".into(),
        columns: vec!["id".into(), "v".into(), "m".into()],
        key_indexes: vec![0],
        modify_index: Some(2),
        filter: vec![],
        skip_null_keys: false,
        skip_keys: vec![],
    };
    block_on(db.read_rows(&scope, &KeyRange::all(), usize::MAX)).unwrap().items
}

/// Issue 10: a server that caps its pages (7 rows here, against batches of 50 and key
/// windows of 40) never ends a step early: a plain copy, a binary search for deletes and
/// adds, the incremental read and the full compare all reach the end of the table.
#[test]
fn capped_pages_do_not_end_a_step_early() {
    let source = Arc::new(MemoryConnector::new());
    let target = Arc::new(MemoryConnector::new());
    for db in [&source, &target] {
        db.create_table("t", &["id", "v", "m"], 0);
    }
    source.insert("t", (1..=2_000).map(|i| vec![Value::Int(i), Value::Int(i * 2), Value::Int(i)]));
    let run = |extra: &str| {
        let text = format!(
            r#"{{"source": {{"type": "sqlite", "path": "unused"}}, "target": {{"type": "sqlite", "path": "unused"}},
                "tables": [{{"name": "t", "modify_id_field": "m"}}], "batch_size": 50, "id_array_batch_size": 40,
                "binary_search_min_table_size": 100, "binary_search_read_batch": 10, "max_delete_percent": 100 {extra}}}"#
        );
        let config = Config::from_str_at(&text, std::path::Path::new("c.json"), &|_| None).unwrap();
        let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
        let engine = Engine::with_connectors(config, TestDb::capped(&source, 7), TestDb::capped(&target, 7), options);
        let report = block_on(engine.run(&mut NoObserver)).map_err(|(e, _)| e).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(all_rows(&source), all_rows(&target), "{extra}");
        report
    };
    assert_eq!(run("").tables[0].added, 2_000, "plain copy");
    for key in [3, 777, 1999] {
        source.remove("t", &Key::Int(key));
    }
    let report = run("");
    assert_eq!((report.tables[0].deleted, report.metrics.binarySearchCountAll), (3, 1), "binary search for deletes");
    source.insert("t", [5_000, 6_000].map(|i| vec![Value::Int(i), Value::Int(0), Value::Int(i)]));
    source.insert("t", [(3, 1), (777, 1)].map(|(i, v)| vec![Value::Int(i), Value::Int(v), Value::Int(3_000 + i)]));
    assert_eq!(run("").tables[0].added, 4, "binary search for adds");
    source.insert("t", (100..=140).map(|i| vec![Value::Int(i), Value::Int(-i), Value::Int(10_000 + i)]));
    assert_eq!(run(r#", "trust_modify_id": true"#).tables[0].modified, 41, "incremental");
    source.insert("t", (1_500..=1_560).map(|i| vec![Value::Int(i), Value::Int(-i), Value::Int(i)]));
    assert_eq!(run("").tables[0].modified, 61, "full compare");
}

/// The delete guard measures the table as it stands: a row deleted from the source while a
/// first copy runs is removed afterwards, not refused as "1 of 0 target rows".
#[test]
fn delete_guard_counts_the_rows_a_copy_added() {
    let source = MemoryConnector::new();
    let target = Arc::new(MemoryConnector::new());
    for db in [&source, target.as_ref()] {
        db.create_table("t", &["id", "v"], 0);
    }
    source.insert("t", (1..=1_000).map(|i| vec![Value::Int(i), Value::Int(i)]));
    let text = r#"{"source": {"type": "sqlite", "path": "unused"}, "target": {"type": "sqlite", "path": "unused"},
                   "tables": [{"name": "t"}]}"#;
    let config = Config::from_str_at(text, std::path::Path::new("c.json"), &|_| None).unwrap();
    // Count calls: the plan's survey (1; the copy's choice reuses its counts), the table's
    // verification (2).
    let source = TestDb::shrinking(source, 2, Key::Int(5));
    let options = RunOptions { progress: ProgressMode::Off, ..RunOptions::default() };
    let engine = Engine::with_connectors(config, source, target.clone() as Arc<dyn Connector>, options);
    let report = block_on(engine.run(&mut NoObserver)).map_err(|(e, _)| e).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.tables[0].added, report.tables[0].deleted), (1_000, 1));
    assert!(!target.keys("t").contains(&Key::Int(5)));
}
