//! `db-sync verify`: a read-only comparison of every row of every selected table, in key
//! order over bounded windows, through the same mapping and type-aware equality the sync
//! uses. Writes nothing; reports per table the rows compared, missing, extra and
//! differing, with the first differing keys.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::{Engine, EngineError, TableJob};
use crate::model::Key;

/// Keys listed per kind of difference.
const SAMPLE: usize = 5;

/// What the comparison found in one table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableDiff {
    /// Table entry name.
    pub name: String,
    /// Source rows compared.
    pub compared: u64,
    /// Source rows missing from the target.
    pub missing: u64,
    /// Target rows not in the source.
    pub extra: u64,
    /// Rows whose values differ.
    pub differing: u64,
    /// First keys of each kind.
    pub sample: Vec<String>,
}

impl TableDiff {
    /// True when the table is equal on both sides.
    pub fn is_equal(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.differing == 0
    }
}

fn db(context: &str) -> impl FnOnce(crate::connector::ConnectorError) -> EngineError {
    let context = context.to_string();
    move |source| EngineError::Database { context, source }
}

async fn compare_table(engine: &Engine, job: &TableJob, window: usize) -> Result<TableDiff, EngineError> {
    let (source, target) = (engine.source(), engine.target());
    let (s_scope, t_scope) = (&job.mapping.source, &job.mapping.target);
    let mut diff = TableDiff { name: job.spec.name.clone(), ..TableDiff::default() };
    let mut after: Option<Key> = None;
    let note = |diff: &mut TableDiff, what: &str, key: &Key| {
        if diff.sample.len() < SAMPLE * 3 {
            diff.sample.push(format!("{what} {key}"));
        }
    };
    loop {
        let crate::diff::Window { source: src, target: tgt, upper } =
            crate::diff::row_window(source.as_ref(), target.as_ref(), (s_scope, t_scope), &after, window)
                .await
                .map_err(db("reading rows"))?;
        let (mut i, mut j) = (0, 0);
        while i < src.len() || j < tgt.len() {
            let sk = src.get(i).and_then(|r| s_scope.key_of(r));
            let tk = tgt.get(j).and_then(|r| t_scope.key_of(r));
            match (sk, tk) {
                (Some(s), Some(t)) if s == t => {
                    diff.compared += 1;
                    let equal = job.mapping.convert(&src[i]).is_ok_and(|c| job.mapping.rows_equal(&c, &tgt[j]));
                    if !equal {
                        diff.differing += 1;
                        note(&mut diff, "differs", &s);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(s), t) if t.as_ref().is_none_or(|t| s < *t) => {
                    diff.compared += 1;
                    diff.missing += 1;
                    note(&mut diff, "missing", &s);
                    i += 1;
                }
                (_, Some(t)) => {
                    diff.extra += 1;
                    note(&mut diff, "extra", &t);
                    j += 1;
                }
                _ => break,
            }
        }
        match upper {
            Some(u) => after = Some(u),
            None => return Ok(diff),
        }
    }
}

/// Compares every selected table.
pub async fn compare(engine: &Engine) -> Result<Vec<TableDiff>, EngineError> {
    let (mut jobs, _) = engine.prepare().await?;
    engine.check_keys(&mut jobs).await?;
    let a_side_is_4d = engine.config().source.is_4d() || engine.config().target.is_4d();
    let mut out = Vec::with_capacity(jobs.len());
    for job in &jobs {
        out.push(compare_table(engine, job, job.spec.settings.rows_per_batch(a_side_is_4d)).await?);
    }
    Ok(out)
}

/// The comparison as text.
pub fn render(diffs: &[TableDiff]) -> String {
    let mut out = String::new();
    let width = diffs.iter().map(|d| d.name.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10} {:>9} {:>9} {:>9}  first differences",
        "table", "compared", "missing", "extra", "differing"
    );
    for d in diffs {
        let _ = writeln!(
            out,
            "{:<width$}  {:>10} {:>9} {:>9} {:>9}  {}",
            d.name,
            d.compared,
            d.missing,
            d.extra,
            d.differing,
            if d.is_equal() { "equal".to_string() } else { d.sample.join(", ") }
        );
    }
    out
}
