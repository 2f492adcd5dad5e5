//! A modeled network link in front of any connector: every call waits a round trip plus
//! the time its answer takes at a given bandwidth. Benchmarks use it to show what a
//! strategy costs where db-sync is meant to run (a database behind a slow link) without
//! a network; results are labelled as modeled, never as measured over a real link.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Capabilities, Connector, ConnectorError, IoCounters, ModifyCursor, Page};
use crate::model::{Key, KeyRange, Row, TableSchema, TableScope, Value};

/// Latency and bandwidth of a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkModel {
    /// Round trip per call.
    pub round_trip: Duration,
    /// Bytes per second of answers.
    pub bytes_per_second: f64,
}

impl LinkModel {
    fn delay(&self, bytes: usize) -> Duration {
        self.round_trip + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second)
    }
}

/// A connector behind a [`LinkModel`].
pub struct ModeledLink {
    /// The connector.
    pub inner: Arc<dyn Connector>,
    /// The link.
    pub model: LinkModel,
}

fn key_bytes(keys: &[Key]) -> usize {
    keys.iter()
        .flat_map(Key::parts)
        .map(|k| match k {
            Key::Text(s) => s.len() + 4,
            Key::Bytes(b) => b.len() + 4,
            _ => 8,
        })
        .sum()
}

fn row_bytes(rows: &[Row]) -> usize {
    rows.iter().map(|r| r.iter().map(Value::wire_size).sum::<usize>()).sum()
}

impl ModeledLink {
    async fn wait(&self, bytes: usize) {
        tokio::time::sleep(self.model.delay(bytes)).await;
    }
}

#[async_trait]
impl Connector for ModeledLink {
    fn describe_endpoint(&self) -> String {
        format!("{} (modeled link)", self.inner.describe_endpoint())
    }
    fn supports_scope(&self, scope: &TableScope) -> Result<(), String> {
        self.inner.supports_scope(scope)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn counters(&self) -> &IoCounters {
        self.inner.counters()
    }
    async fn describe(&self, table: &str) -> Result<Option<TableSchema>, ConnectorError> {
        self.wait(256).await;
        self.inner.describe(table).await
    }
    async fn key_problems(
        &self,
        scope: &TableScope,
        duplicates: bool,
        limit: usize,
    ) -> Result<super::KeyProblems, ConnectorError> {
        self.wait(8).await;
        self.inner.key_problems(scope, duplicates, limit).await
    }
    async fn count(&self, scope: &TableScope, range: &KeyRange) -> Result<u64, ConnectorError> {
        self.wait(8).await;
        self.inner.count(scope, range).await
    }
    async fn key_at(&self, scope: &TableScope, range: &KeyRange, offset: u64) -> Result<Option<Key>, ConnectorError> {
        self.wait(8).await;
        self.inner.key_at(scope, range, offset).await
    }
    async fn count_ranges(&self, scope: &TableScope, ranges: &[KeyRange]) -> Result<Vec<u64>, ConnectorError> {
        self.wait(8 * ranges.len()).await;
        self.inner.count_ranges(scope, ranges).await
    }
    async fn keys_at(
        &self,
        scope: &TableScope,
        range: &KeyRange,
        offsets: &[u64],
    ) -> Result<Vec<Option<Key>>, ConnectorError> {
        self.wait(8 * offsets.len()).await;
        self.inner.keys_at(scope, range, offsets).await
    }
    async fn read_keys(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Key>, ConnectorError> {
        let keys = self.inner.read_keys(scope, range, limit).await?;
        self.wait(key_bytes(&keys.items)).await;
        Ok(keys)
    }
    async fn read_rows(&self, scope: &TableScope, range: &KeyRange, limit: usize) -> Result<Page<Row>, ConnectorError> {
        let rows = self.inner.read_rows(scope, range, limit).await?;
        self.wait(row_bytes(&rows.items)).await;
        Ok(rows)
    }
    async fn read_rows_by_keys(&self, scope: &TableScope, keys: &[Key]) -> Result<Vec<Row>, ConnectorError> {
        let rows = self.inner.read_rows_by_keys(scope, keys).await?;
        self.wait(row_bytes(&rows) + key_bytes(keys)).await;
        Ok(rows)
    }
    async fn read_changed_since(
        &self,
        scope: &TableScope,
        cursor: &ModifyCursor,
        limit: usize,
    ) -> Result<Page<Row>, ConnectorError> {
        let rows = self.inner.read_changed_since(scope, cursor, limit).await?;
        self.wait(row_bytes(&rows.items)).await;
        Ok(rows)
    }
    async fn count_changed_since(&self, scope: &TableScope, modify_id: Option<&Value>) -> Result<u64, ConnectorError> {
        self.wait(8).await;
        self.inner.count_changed_since(scope, modify_id).await
    }
    async fn count_null_modify(&self, scope: &TableScope) -> Result<u64, ConnectorError> {
        self.wait(8).await;
        self.inner.count_null_modify(scope).await
    }
    async fn max_modify(&self, scope: &TableScope) -> Result<Option<Value>, ConnectorError> {
        self.wait(8).await;
        self.inner.max_modify(scope).await
    }
    async fn upsert(&self, scope: &TableScope, rows: &[Row]) -> Result<u64, ConnectorError> {
        self.wait(row_bytes(rows)).await;
        self.inner.upsert(scope, rows).await
    }
    async fn delete(&self, scope: &TableScope, keys: &[Key]) -> Result<u64, ConnectorError> {
        self.wait(key_bytes(keys)).await;
        self.inner.delete(scope, keys).await
    }
}
