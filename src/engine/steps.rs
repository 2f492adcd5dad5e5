//! The four step kinds as resumable state machines. Each step advances an explicit
//! [`StepCursor`] and hands it to the [`Observer`] after every committed batch, so a run
//! can continue from the last cursor: everything at or before it is done.
//!
//! Comparisons stream both sides in key order over bounded windows (`id_array_batch_size`
//! keys or `batch_size` rows); no step holds a whole table in memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{EngineError, ErrorPolicy, Observer, RunOptions, RunState, TableJob, TableSurvey};
use futures::StreamExt;

use crate::connector::resilient::NetworkJournal;
use crate::connector::{Connector, ConnectorError, ModifyCursor, Page};
use crate::diff::bisect::{Direction, SearchState, Searcher, token};
use crate::model::{Key, KeyRange, Row, TableScope, Value};
use crate::plan::StepKind;
use crate::report::{ErrorKind, ProgressMode, StepProgress, TableReport};

/// Where a step stands. Everything at or before the cursor is done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepCursor {
    /// Key-ordered steps (`add`, `delete`, `changed`): keys up to `after` are done;
    /// `None` = nothing done yet.
    Keys {
        /// Last key done.
        after: Option<Key>,
    },
    /// `add`/`delete` by binary search: the search (stack, keys found) and how many of
    /// the found keys are applied.
    Bisect {
        /// The search.
        search: SearchState,
        /// Found keys already written or deleted.
        written: usize,
    },
    /// `incremental`: rows up to `(modify_id, key)` are done. With `key: None`, rows
    /// with exactly `modify_id` are read again (they may be only partly copied).
    Modify {
        /// Modify ID of the last row done (or the starting watermark).
        modify_id: Option<Value>,
        /// Key of the last row done among those with `modify_id`.
        key: Option<Key>,
    },
    /// `add` into a target table that was empty when the step began: source rows are
    /// read in key order and written without comparing keys. Keys up to `after` are done.
    Copy {
        /// Last key done; `None` = nothing done yet.
        after: Option<Key>,
    },
}

impl std::fmt::Display for StepCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepCursor::Keys { after: Some(key) } => write!(f, "after key {key}"),
            StepCursor::Keys { after: None } => write!(f, "at the first key"),
            StepCursor::Copy { after: Some(key) } => write!(f, "after key {key} (plain copy)"),
            StepCursor::Copy { after: None } => write!(f, "at the first key (plain copy)"),
            StepCursor::Modify { modify_id: Some(m), key: Some(k) } => write!(f, "after modify id {m}, key {k}"),
            StepCursor::Modify { modify_id: Some(m), key: None } => write!(f, "from modify id {m}"),
            StepCursor::Modify { modify_id: None, .. } => write!(f, "at the first modify id"),
            StepCursor::Bisect { search, written } if search.is_done() => {
                write!(f, "binary search done, {written} of {} found keys applied", search.found.len())
            }
            StepCursor::Bisect { search, .. } => write!(
                f,
                "binary search with {} ranges left, {} of {} differences found",
                search.stack.len(),
                search.found.len(),
                search.expected
            ),
        }
    }
}

impl StepCursor {
    /// The cursor a fresh step starts from.
    pub fn start(kind: StepKind, survey: &TableSurvey) -> StepCursor {
        match kind {
            StepKind::Incremental => StepCursor::Modify { modify_id: survey.watermark.clone(), key: None },
            _ => StepCursor::Keys { after: None },
        }
    }

    fn after_key(&self) -> Option<Key> {
        match self {
            StepCursor::Keys { after } | StepCursor::Copy { after } => after.clone(),
            StepCursor::Modify { .. } | StepCursor::Bisect { .. } => None,
        }
    }
}

/// Everything a step needs, borrowed from the engine for the step's duration.
pub struct StepContext<'a> {
    /// Source connector.
    pub source: &'a dyn Connector,
    /// Target connector.
    pub target: &'a dyn Connector,
    /// The table.
    pub job: &'a TableJob,
    /// Every table of the run (to name the tables of network events).
    pub jobs: &'a [TableJob],
    /// Where the resilience layers record retries and reconnections.
    pub journal: &'a NetworkJournal,
    /// Index of the table in the run state.
    pub table: usize,
    /// The run state: the table's statistics, errors, timers and cursor.
    pub state: &'a mut RunState,
    /// The run's error policy.
    pub policy: ErrorPolicy,
    /// Receives the state after every commit.
    pub observer: &'a mut dyn Observer,
    /// Run options.
    pub options: &'a RunOptions,
    /// The source is 4D (its batch size keys apply).
    pub source_is_4d: bool,
    /// The target is 4D.
    pub target_is_4d: bool,
    /// Keys of the rows the target refused (isolated one by one) since last cleared.
    pub refused_keys: Vec<Key>,
    /// Both sides' counts of the table taken just before the step with nothing written
    /// since (the plan's, or the previous step's last); the step's first count uses them.
    pub fresh_counts: Option<(u64, u64)>,
    /// Both sides' counts the step took after its last write, for the next count.
    pub counts_after: Option<(u64, u64)>,
}

/// How rows are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteMode {
    /// Insert or update by key.
    Upsert,
    /// Rows whose keys were just seen missing from the target (see
    /// [`Connector::insert_new`]).
    InsertNew,
}

impl StepContext<'_> {
    fn name(&self) -> &str {
        &self.job.spec.name
    }

    fn survey(&self) -> &TableSurvey {
        &self.state.tables[self.table].survey
    }

    fn report(&mut self) -> &mut TableReport {
        &mut self.state.tables[self.table].report
    }

    fn record_error(&mut self, kind: ErrorKind, message: String) -> Result<(), EngineError> {
        self.policy.record(self.state, kind, self.table, message)
    }

    /// Adds a compared batch to the table's counters: `added` and `modified` rows were
    /// sent (the added ones with the keys `new_keys`), `same` compared equal. Rows the
    /// target refused since [`Self::refused_keys`] was last cleared are neither added nor
    /// modified: each comes off the count its key belongs to.
    fn account(&mut self, added: u64, modified: u64, same: u64, new_keys: &HashSet<Key>) {
        let refused = std::mem::take(&mut self.refused_keys);
        let refused_new = refused.iter().filter(|k| new_keys.contains(*k)).count() as u64;
        let refused_old = refused.len() as u64 - refused_new;
        let report = self.report();
        report.modified += modified.saturating_sub(refused_old);
        report.added += added.saturating_sub(refused_new);
        report.skipped += same;
    }

    fn batch_done(&mut self, had_errors: bool) -> Result<(), EngineError> {
        self.policy.batch_done(self.state, had_errors)
    }

    fn batch_size(&self) -> usize {
        self.job.spec.settings.rows_per_batch(self.source_is_4d || self.target_is_4d)
    }

    fn delete_batch_size(&self) -> usize {
        self.job.spec.settings.keys_per_delete(self.target_is_4d)
    }

    fn check_stop(&self) -> Result<(), EngineError> {
        if self.options.stop.load(Ordering::Relaxed) { Err(EngineError::Interrupted) } else { Ok(()) }
    }

    fn db(&self, what: &str) -> impl FnOnce(ConnectorError) -> EngineError + use<> {
        let context = format!("{what} ({})", self.job.spec.name);
        move |source| EngineError::Database { context, source }
    }

    /// Records the cursor and hands the state to the observer (the checkpoint). Called
    /// only after the target committed everything up to `cursor`.
    fn commit(&mut self, cursor: StepCursor) -> Result<(), EngineError> {
        self.state.cursor = Some(cursor);
        super::absorb_network(self.journal, self.jobs, self.state);
        self.observer.checkpoint(self.state)
    }

    /// The next key window (see [`crate::diff::key_window`]), read with retries.
    async fn key_window(
        &mut self,
        after: &Option<Key>,
        limit: usize,
    ) -> Result<(Vec<Key>, Vec<Key>, Option<Key>), EngineError> {
        let started = Instant::now();
        let (source, target) = (self.source, self.target);
        let scopes = (&self.job.mapping.source, &self.job.mapping.target);
        let w = crate::diff::key_window(source, target, scopes, after, limit).await.map_err(self.db("reading keys"))?;
        self.state.timers.read += started.elapsed();
        Ok((w.source, w.target, w.upper))
    }

    /// The next row window (see [`crate::diff::row_window`]), read with retries.
    async fn row_window(
        &mut self,
        after: &Option<Key>,
        limit: usize,
    ) -> Result<(Vec<Row>, Vec<Row>, Option<Key>), EngineError> {
        let started = Instant::now();
        let (source, target) = (self.source, self.target);
        let scopes = (&self.job.mapping.source, &self.job.mapping.target);
        let w = crate::diff::row_window(source, target, scopes, after, limit).await.map_err(self.db("reading rows"))?;
        self.state.timers.read += started.elapsed();
        Ok((w.source, w.target, w.upper))
    }

    /// Converts source rows to target rows; rows that fail are recorded as data errors
    /// and left out.
    fn convert(&mut self, rows: Vec<Row>) -> Result<(Vec<Row>, bool), EngineError> {
        let started = Instant::now();
        let (out, errors) = convert_rows(self.job, rows);
        self.state.timers.compare += started.elapsed();
        let had_errors = !errors.is_empty();
        for message in errors {
            self.record_error(ErrorKind::Data, message)?;
        }
        Ok((out, had_errors))
    }

    /// Upserts rows in `batch_size` transactions. A batch the target refuses as bad data
    /// is split in halves until the bad rows are isolated; they are recorded as data
    /// errors and the rest lands. Returns `(rows written, any errors)`.
    async fn write(&mut self, rows: Vec<Row>) -> Result<(u64, bool), EngineError> {
        self.write_mode(rows, WriteMode::Upsert).await
    }

    /// [`Self::write`], choosing how the target writes.
    async fn write_mode(&mut self, rows: Vec<Row>, mode: WriteMode) -> Result<(u64, bool), EngineError> {
        let batch = self.batch_size();
        let mut pending = Vec::with_capacity(rows.len().div_ceil(batch.max(1)));
        let mut rows = rows.into_iter();
        loop {
            let chunk: Vec<Row> = rows.by_ref().take(batch.max(1)).collect();
            if chunk.is_empty() {
                break;
            }
            pending.push(chunk);
        }
        pending.reverse();
        self.write_pending(pending, mode).await
    }

    /// Writes the chunks of `pending`, last first; see [`Self::write`].
    async fn write_pending(&mut self, mut pending: Vec<Vec<Row>>, mode: WriteMode) -> Result<(u64, bool), EngineError> {
        let mut written = 0;
        let mut had_errors = false;
        while let Some(chunk) = pending.pop() {
            let started = Instant::now();
            let (target, scope) = (self.target, &self.job.mapping.target);
            let result = match mode {
                WriteMode::Upsert => target.upsert(scope, &chunk).await,
                WriteMode::InsertNew => target.insert_new(scope, &chunk).await,
            };
            self.state.timers.write += started.elapsed();
            match result {
                Ok(n) => {
                    crate::failpoint::hit("after_commit");
                    written += n;
                }
                Err(ConnectorError::Data(message)) => {
                    had_errors = true;
                    self.refused(chunk, &message, &mut pending)?;
                }
                Err(e) => return Err(self.db("writing rows")(e)),
            }
        }
        Ok((written, had_errors))
    }

    /// A chunk the target refused as bad data with `message`: one row is recorded as a
    /// data error; more go back on `pending` in halves, to be written apart.
    fn refused(&mut self, mut chunk: Vec<Row>, message: &str, pending: &mut Vec<Vec<Row>>) -> Result<(), EngineError> {
        if chunk.len() == 1 {
            let key = self.job.mapping.target.key_of(&chunk[0]);
            let shown = key.as_ref().map_or("?".into(), Key::to_string);
            self.refused_keys.extend(key);
            return self.record_error(ErrorKind::Data, format!("row {shown} was refused: {message}"));
        }
        let second = chunk.split_off(chunk.len() / 2);
        pending.push(second);
        pending.push(chunk);
        Ok(())
    }

    /// Deletes keys in `delete_batch_size` transactions, within the delete guard. A chunk
    /// the target refuses as bad data (a key it cannot address, such as 4D text keys that
    /// differ only in case) is split until the refused keys stand alone; each is recorded
    /// as a data error and the others are deleted.
    async fn delete_keys(&mut self, keys: &[Key]) -> Result<u64, EngineError> {
        let mut deleted = 0;
        let mut pending: Vec<Vec<Key>> = keys.chunks(self.delete_batch_size()).rev().map(<[Key]>::to_vec).collect();
        while let Some(mut chunk) = pending.pop() {
            let total = self.report().deleted + chunk.len() as u64;
            self.guard_deletes(total)?;
            let started = Instant::now();
            let (target, scope) = (self.target, &self.job.mapping.target);
            let result = target.delete(scope, &chunk).await;
            self.state.timers.delete += started.elapsed();
            match result {
                Ok(_) => {}
                Err(ConnectorError::Data(message)) if chunk.len() == 1 => {
                    self.record_error(ErrorKind::Data, format!("row {} could not be deleted: {message}", chunk[0]))?;
                    continue;
                }
                Err(ConnectorError::Data(_)) => {
                    let second = chunk.split_off(chunk.len() / 2);
                    pending.push(second);
                    pending.push(chunk);
                    continue;
                }
                Err(e) => return Err(self.db("deleting rows")(e)),
            }
            crate::failpoint::hit("after_commit");
            // Every key was just read from the target, and none is there any more. The
            // keys are counted, not the rows the last call deleted: a delete whose commit
            // reply was lost is sent again and then finds nothing left to delete.
            let n = chunk.len() as u64;
            self.report().deleted += n;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Deletes target rows whose keys are not in the source scope. With a record-type
    /// filter, a key may still exist in the source under another record type: such rows
    /// moved, so they are rewritten from the source (and counted as modified) instead of
    /// deleted, which also keeps foreign keys that point at them intact.
    async fn remove_extras(&mut self, extras: &[Key]) -> Result<bool, EngineError> {
        if extras.is_empty() {
            return Ok(false);
        }
        if self.job.mapping.source.filter.is_empty() {
            self.delete_keys(extras).await?;
            return Ok(false);
        }
        let started = Instant::now();
        let mut unscoped = self.job.mapping.source.clone();
        unscoped.filter.clear();
        let source = self.source;
        let moved = source.read_rows_by_keys(&unscoped, extras).await.map_err(self.db("reading source rows"))?;
        self.state.timers.read += started.elapsed();
        let moved_keys: std::collections::HashSet<Key> = moved.iter().filter_map(|r| unscoped.key_of(r)).collect();
        let gone: Vec<Key> = extras.iter().filter(|k| !moved_keys.contains(*k)).cloned().collect();
        self.delete_keys(&gone).await?;
        if moved.is_empty() {
            return Ok(false);
        }
        tracing::info!(table = %self.job.spec.name, rows = moved.len(), "rows moved to another record type");
        let (mut converted, conversion_errors) = self.convert(moved)?;
        if self.job.mapping.merges_json() {
            // The target rows being rewritten keep their own JSON keys, as in any update.
            let mut scope = self.job.mapping.target.clone();
            scope.filter.clear();
            let target = self.target;
            let keys: Vec<Key> = moved_keys.iter().cloned().collect();
            let old = target.read_rows_by_keys(&scope, &keys).await.map_err(self.db("reading target rows"))?;
            let old = rows_by_key(&scope, old);
            converted = converted
                .into_iter()
                .map(|row| match scope.key_of(&row).and_then(|k| old.get(&k)) {
                    Some(o) => self.job.mapping.merge_into(row, o),
                    None => row,
                })
                .collect();
        }
        let (written, write_errors) = self.write(converted).await?;
        self.report().modified += written;
        Ok(conversion_errors || write_errors)
    }

    /// Refuses to delete more than `max_delete_percent` of the target table: a partial
    /// or failed source read looks exactly like a mass delete.
    fn guard_deletes(&self, total: u64) -> Result<(), EngineError> {
        if self.options.allow_mass_delete {
            return Ok(());
        }
        // The table as it stands: rows counted when the run was planned, plus the rows this
        // run added since (a first copy starts from an empty table).
        let base = self.survey().target_count + self.state.tables[self.table].report.added;
        let percent = self.job.spec.settings.max_delete_percent;
        let limit = (base as f64 * percent / 100.0).floor() as u64;
        if total > limit {
            return Err(EngineError::DeleteGuard(format!(
                "table {}: refusing to delete {total} of {base} target rows (more than max_delete_percent \
                 {percent}%); if the source really lost these rows, continue with `db-sync resume --allow-mass-delete`",
                self.name()
            )));
        }
        Ok(())
    }
}

/// Runs one step from `cursor` to its end. `full_compare_only` rules out the binary
/// search (repairs: the counts already proved unreliable).
pub async fn run_step(
    ctx: &mut StepContext<'_>,
    kind: StepKind,
    cursor: StepCursor,
    full_compare_only: bool,
) -> Result<(), EngineError> {
    let survey = ctx.survey();
    let total = match kind {
        StepKind::Delete => survey.target_count,
        StepKind::Add | StepKind::Changed => survey.source_count,
        StepKind::Incremental => survey.changed.unwrap_or(0),
    };
    let mut progress = StepProgress::start(
        ctx.options.progress,
        std::sync::Arc::clone(&ctx.options.progress_output),
        format!("{} {}", ctx.job.spec.name, kind),
        total,
    );
    tracing::info!(table = %ctx.job.spec.name, step = %kind, "step start");
    let direction = match kind {
        StepKind::Add => Some(Direction::Add),
        StepKind::Delete => Some(Direction::Delete),
        _ => None,
    };
    let cursor = match (direction, cursor) {
        (Some(direction), StepCursor::Keys { after: None }) if !full_compare_only => {
            match choose_approach(ctx, direction).await? {
                Approach::Bisect(search) => StepCursor::Bisect { search, written: 0 },
                Approach::Compare => StepCursor::Keys { after: None },
                Approach::Copy => StepCursor::Copy { after: None },
            }
        }
        (_, cursor) => cursor,
    };
    let result = match (kind, cursor) {
        (_, StepCursor::Bisect { search, written }) => {
            bisect_step(ctx, direction.expect("bisect cursor only for add and delete"), search, written, &mut progress)
                .await
        }
        (StepKind::Delete, cursor) => delete_step(ctx, cursor, &mut progress).await,
        (StepKind::Add, cursor) => add_step(ctx, cursor, &mut progress).await,
        (StepKind::Changed, cursor) => changed_step(ctx, cursor, &mut progress).await,
        (StepKind::Incremental, cursor) => incremental_step(ctx, cursor, &mut progress).await,
    };
    progress.finish();
    result
}

/// Prints a line of the step's progress display (and logs it).
fn note(ctx: &StepContext<'_>, line: &str) {
    tracing::info!(table = %ctx.job.spec.name, "{line}");
    if ctx.options.progress.effective() != ProgressMode::Off {
        ctx.options.progress_output.line(&format!("{}: {line}", ctx.job.spec.name));
    }
}

/// The binary search is chosen while `diff * binary_search_read_batch * BISECT_MAX_SHARE`
/// stays within the table size: its key reads stay under 2.5% of a full compare's.
const BISECT_MAX_SHARE: u64 = 40;

/// How a fresh `add` or `delete` step finds its rows.
enum Approach {
    /// Key windows of both sides compared in full.
    Compare,
    /// The binary search, started.
    Bisect(SearchState),
    /// Adds into an empty target table: every source row, without reading keys.
    Copy,
}

/// Decides between the binary search and a full compare for an `add` or `delete` step,
/// as the manual's log lines say; adds into a target table that is empty copy the
/// source's rows without comparing keys.
async fn choose_approach(ctx: &mut StepContext<'_>, direction: Direction) -> Result<Approach, EngineError> {
    let settings = &ctx.job.spec.settings;
    let (source, target) = (ctx.source, ctx.target);
    let (src_scope, tgt_scope) = (&ctx.job.mapping.source, &ctx.job.mapping.target);
    let all = KeyRange::all();
    let started = Instant::now();
    let (source_count, target_count) = match ctx.fresh_counts.take() {
        Some(counts) => counts,
        None => {
            let (source_count, target_count) =
                tokio::join!(source.count(src_scope, &all), target.count(tgt_scope, &all));
            (
                source_count.map_err(ctx.db("counting source rows"))?,
                target_count.map_err(ctx.db("counting target rows"))?,
            )
        }
    };
    ctx.state.timers.read += started.elapsed();
    let (from, to) = match direction {
        Direction::Add => (source_count, target_count),
        Direction::Delete => (target_count, source_count),
    };
    let diff = from.saturating_sub(to);
    let size = source_count.max(target_count);
    let what = match direction {
        Direction::Add => "adds",
        Direction::Delete => "deletes",
    };
    if direction == Direction::Add && target_count == 0 {
        note(ctx, &format!("using plain copy for adds (reason=target table empty, rows={source_count})"));
        return Ok(Approach::Copy);
    }
    let reason = if !source.capabilities().offset_in_range || !target.capabilities().offset_in_range {
        Some("backend cannot find a key by offset")
    } else if direction == Direction::Add && !settings.binary_search_for_add {
        Some("binary_search_for_add is off")
    } else if size < settings.binary_search_min_table_size {
        Some("table smaller than binary_search_min_table_size")
    } else if diff.saturating_mul(settings.binary_search_read_batch).saturating_mul(BISECT_MAX_SHARE) > size {
        // Each difference costs about log2(size) count queries and a read of up to
        // `binary_search_read_batch` keys per side; past a few percent of what a full
        // compare reads, the round trips cost more than the transfer they save.
        Some("large difference")
    } else {
        None
    };
    if let Some(reason) = reason {
        note(ctx, &format!("using full compare for {what} (reason={reason})"));
        return Ok(Approach::Compare);
    }
    note(ctx, &format!("using binary search for {what} (from={from}, to={to}, diff={diff})"));
    let searcher = searcher(ctx, direction);
    let started = Instant::now();
    let search = searcher.start(source_count, target_count).await.map_err(ctx.db("binary search"))?;
    ctx.state.timers.bisect += started.elapsed();
    Ok(Approach::Bisect(search))
}

fn searcher<'a>(ctx: &StepContext<'a>, direction: Direction) -> Searcher<'a> {
    let settings = &ctx.job.spec.settings;
    Searcher {
        source: ctx.source,
        target: ctx.target,
        source_scope: &ctx.job.mapping.source,
        target_scope: &ctx.job.mapping.target,
        direction,
        read_batch: settings.binary_search_read_batch,
        recent_first: settings.binary_search_recent_first,
        fanout: crate::diff::bisect::fanout(settings.binary_search_fanout, ctx.source, ctx.target),
    }
}

/// `add` or `delete` by binary search: search (checkpointing the stack after every
/// frame), apply the found keys in batches, then check the counts; with
/// `fallback_full_compare_on_mismatch` a mismatch falls back to a full compare.
async fn bisect_step(
    ctx: &mut StepContext<'_>,
    direction: Direction,
    mut search: SearchState,
    mut written: usize,
    progress: &mut StepProgress,
) -> Result<(), EngineError> {
    let searcher = searcher(ctx, direction);
    if !search.is_done() {
        let recent = match ctx.job.spec.settings.binary_search_recent_first {
            0 => String::new(),
            n => format!(", search {n} recent first"),
        };
        // Wider splits than the manual's halves are named (`binary_search_fanout`).
        let fanout = match searcher.fanout {
            0..=2 => String::new(),
            n => format!(", {n} parts a split"),
        };
        let header = format!(
            "{} binary search {} records{recent}{fanout}, need to find {}:",
            direction.name(),
            search.total,
            search.expected
        );
        let mut line =
            BisectLine::new(ctx.options.progress, std::sync::Arc::clone(&ctx.options.progress_output), header);
        while !search.is_done() {
            ctx.check_stop()?;
            let started = Instant::now();
            let frames = searcher.step(&mut search).await.map_err(ctx.db("binary search"))?;
            ctx.state.timers.bisect += started.elapsed();
            for frame in frames.iter().filter(|f| f.depth > 0) {
                line.push(token(frame, search.total));
            }
            if search.is_done() {
                let b = &mut ctx.state.bisect;
                b.searches += 1;
                b.iterations += search.iterations;
                b.queries += search.queries;
                b.max_depth = b.max_depth.max(search.max_depth);
                search.found.sort();
            }
            ctx.commit(StepCursor::Bisect { search: search.clone(), written: 0 })?;
        }
        line.finish(&format!(
            "found {} in {} iterations, {} queries, depth {}",
            search.found.len(),
            search.iterations,
            search.queries,
            search.max_depth
        ));
    }

    let batch = match direction {
        Direction::Add => ctx.batch_size(),
        Direction::Delete => ctx.delete_batch_size(),
    };
    while written < search.found.len() {
        ctx.check_stop()?;
        let end = (written + batch).min(search.found.len());
        let chunk = &search.found[written..end];
        let had_errors = match direction {
            Direction::Add => {
                let started = Instant::now();
                let (source, scope) = (ctx.source, &ctx.job.mapping.source);
                let rows = source.read_rows_by_keys(scope, chunk).await.map_err(ctx.db("reading source rows"))?;
                ctx.state.timers.read += started.elapsed();
                let (converted, conversion_errors) = ctx.convert(rows)?;
                let (n, write_errors) = ctx.write_mode(converted, WriteMode::InsertNew).await?;
                ctx.report().added += n;
                conversion_errors || write_errors
            }
            Direction::Delete => ctx.remove_extras(chunk).await?,
        };
        ctx.batch_done(had_errors)?;
        progress.advance(chunk.len() as u64);
        written = end;
        ctx.commit(StepCursor::Bisect { search: search.clone(), written })?;
    }

    // Counts that cancel inside one range hide differences from the search.
    let all = KeyRange::all();
    let (source, target) = (ctx.source, ctx.target);
    let (source_count, target_count) =
        tokio::join!(source.count(&ctx.job.mapping.source, &all), target.count(&ctx.job.mapping.target, &all));
    let source_count = source_count.map_err(ctx.db("counting source rows"))?;
    let target_count = target_count.map_err(ctx.db("counting target rows"))?;
    let mismatch = match direction {
        Direction::Add => source_count > target_count,
        Direction::Delete => target_count > source_count,
    };
    if !mismatch {
        ctx.counts_after = Some((source_count, target_count));
        return Ok(());
    }
    note(
        ctx,
        &format!("counts mismatch after binary {} (source={source_count}, target={target_count})", direction.name()),
    );
    if ctx.job.spec.settings.fallback_full_compare_on_mismatch {
        note(ctx, "fallback full compare on mismatch");
        ctx.commit(StepCursor::Keys { after: None })?;
        return match direction {
            Direction::Add => add_step(ctx, StepCursor::Keys { after: None }, progress).await,
            Direction::Delete => delete_step(ctx, StepCursor::Keys { after: None }, progress).await,
        };
    }
    ctx.record_error(
        ErrorKind::Logic,
        format!(
            "counts mismatch after binary {} (source {source_count}, target {target_count}); set \
             fallback_full_compare_on_mismatch to fall back to a full compare",
            direction.name()
        ),
    )
}

/// The manual's live binary-search line: a header, then one token per range searched,
/// on one line on a terminal, in lines of a dozen tokens otherwise.
struct BisectLine {
    mode: ProgressMode,
    output: std::sync::Arc<dyn crate::report::ProgressOutput>,
    terminal: bool,
    pending: Vec<String>,
}

impl BisectLine {
    fn new(
        mode: ProgressMode,
        output: std::sync::Arc<dyn crate::report::ProgressOutput>,
        header: String,
    ) -> BisectLine {
        let mode = mode.effective();
        let terminal = output.is_terminal();
        if mode != ProgressMode::Off {
            output.line(&header);
        }
        BisectLine { mode, output, terminal: terminal && mode == ProgressMode::Auto, pending: Vec::new() }
    }

    fn push(&mut self, token: String) {
        if self.mode == ProgressMode::Off {
            return;
        }
        if self.terminal {
            self.output.token(&format!("{token} "));
        } else {
            self.pending.push(token);
            if self.pending.len() == 12 {
                self.output.line(&self.pending.join(" "));
                self.pending.clear();
            }
        }
    }

    fn finish(&mut self, summary: &str) {
        if self.mode == ProgressMode::Off {
            return;
        }
        if self.terminal {
            self.output.end_tokens();
        } else if !self.pending.is_empty() {
            self.output.line(&self.pending.join(" "));
        }
        self.output.line(summary);
    }
}

async fn delete_step(
    ctx: &mut StepContext<'_>,
    cursor: StepCursor,
    progress: &mut StepProgress,
) -> Result<(), EngineError> {
    let expected = ctx.survey().target_count.saturating_sub(ctx.survey().source_count);
    let total = ctx.report().deleted + expected;
    ctx.guard_deletes(total)?;
    let limit = ctx.job.spec.settings.id_array_batch_size;
    let mut after = cursor.after_key();
    loop {
        ctx.check_stop()?;
        let (src, tgt, upper) = ctx.key_window(&after, limit).await?;
        let compare = Instant::now();
        let (_, extra) = crate::diff::key_diff(&src, &tgt);
        ctx.state.timers.compare += compare.elapsed();
        for chunk in extra.chunks(ctx.delete_batch_size()) {
            let had_errors = ctx.remove_extras(chunk).await?;
            ctx.batch_done(had_errors)?;
            ctx.commit(StepCursor::Keys { after: chunk.last().cloned() })?;
        }
        progress.advance(tgt.len() as u64);
        match upper {
            Some(u) => {
                after = Some(u);
                ctx.commit(StepCursor::Keys { after: after.clone() })?;
            }
            None => return Ok(()),
        }
    }
}

/// How the rows of one `add` chunk are read from the source.
enum Fetch {
    /// A contiguous run of source keys: read by range.
    Range(KeyRange, usize),
    /// Scattered keys: read by key list.
    Keys(Vec<Key>),
}

/// Reads the rows of a fetch plan: a range up to `n` rows, in pages until the source says
/// nothing follows (a server may cap its pages below `n`), or a key list. The page says
/// whether more rows follow the range's last one read.
async fn fetch(
    source: &dyn Connector,
    scope: &TableScope,
    fetch: &Fetch,
) -> (Result<Page<Row>, ConnectorError>, Duration) {
    let started = Instant::now();
    let rows = match fetch {
        Fetch::Range(range, n) => read_range(source, scope, range, *n).await,
        Fetch::Keys(keys) => source.read_rows_by_keys(scope, keys).await.map(|items| Page { items, more: false }),
    };
    (rows, started.elapsed())
}

/// Up to `n` rows of `range`, page after page.
async fn read_range(
    source: &dyn Connector,
    scope: &TableScope,
    range: &KeyRange,
    n: usize,
) -> Result<Page<Row>, ConnectorError> {
    let mut rows: Vec<Row> = Vec::new();
    loop {
        let after = rows.last().and_then(|r| scope.key_of(r)).or_else(|| range.after.clone());
        let part = KeyRange { after, upto: range.upto.clone() };
        let page = source.read_rows(scope, &part, n - rows.len()).await?;
        if page.more && page.items.is_empty() {
            return Err(crate::diff::empty_page_with_more());
        }
        rows.extend(page.items);
        if !page.more || rows.len() >= n {
            return Ok(Page { items: rows, more: page.more });
        }
    }
}

/// What the reading half of the add step hands the writing half, in key order.
enum Feed {
    /// One batch of missing source rows, converted; `errors` names the rows that failed
    /// conversion. Keys up to `last` are done once it is written; `keys` source keys
    /// are then done that no window end counts.
    Batch { rows: Vec<Row>, errors: Vec<String>, last: Option<Key>, keys: u64, read: Duration, convert: Duration },
    /// A key window is complete: every missing key up to `upper` was in a batch before.
    WindowEnd { upper: Option<Key>, keys: u64, read: Duration, compare: Duration },
    /// Reading failed; the step stops with this error.
    Failed(EngineError),
}

/// Batches the reading half of the add step may be ahead of the writing half.
const FEED_AHEAD: usize = 2;

/// Reads the missing rows after `after` window by window (with `copy`, every source
/// row in key order) and feeds them to `tx` until the table ends, reading fails, or the
/// writing half hangs up.
async fn feed_missing(
    source: &dyn Connector,
    target: &dyn Connector,
    job: &TableJob,
    after: Option<Key>,
    batch: usize,
    copy: bool,
    tx: tokio::sync::mpsc::Sender<Feed>,
) {
    let read = if copy {
        read_all(source, job, after, batch, &tx).await
    } else {
        read_missing(source, target, job, after, batch, &tx).await
    };
    if let Err(e) = read {
        let _ = tx.send(Feed::Failed(e)).await;
    }
}

/// The error of a failed read of `job`'s table.
fn read_failed(job: &TableJob, what: &str) -> impl Fn(ConnectorError) -> EngineError + use<> {
    let context = format!("{what} ({})", job.spec.name);
    move |e| EngineError::Database { context: context.clone(), source: e }
}

/// [`feed_missing`]'s loop for a plain copy: source rows after `after`, `batch` at a
/// time. The next page is read while the current one is converted and handed over.
async fn read_all(
    source: &dyn Connector,
    job: &TableJob,
    after: Option<Key>,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Feed>,
) -> Result<(), EngineError> {
    let scope = &job.mapping.source;
    let page = |after| async move { fetch(source, scope, &Fetch::Range(KeyRange { after, upto: None }, batch)).await };
    let mut last_done = after.clone();
    let mut next = page(after).await;
    loop {
        let (fetched, read) = next;
        let Page { items: rows, more } = fetched.map_err(read_failed(job, "reading source rows"))?;
        crate::diff::check_ascending(source, scope, &rows, last_done.as_ref(), |r| scope.key_of(r))
            .map_err(read_failed(job, "reading source rows"))?;
        let last = rows.last().and_then(|row| scope.key_of(row));
        let hand_over = async {
            if rows.is_empty() {
                return true;
            }
            let started = Instant::now();
            let keys = rows.len() as u64;
            let (rows, errors) = convert_rows(job, rows);
            let feed = Feed::Batch { rows, errors, last: last.clone(), keys, read, convert: started.elapsed() };
            tx.send(feed).await.is_ok()
        };
        if !more {
            if hand_over.await {
                let end = Feed::WindowEnd { upper: None, keys: 0, read: Duration::ZERO, compare: Duration::ZERO };
                let _ = tx.send(end).await;
            }
            return Ok(());
        }
        let (handed, ahead) = tokio::join!(hand_over, page(last.clone()));
        if !handed {
            return Ok(());
        }
        last_done = last;
        next = ahead;
    }
}

/// [`feed_missing`]'s loop; a closed channel (the writer quit) ends it quietly.
async fn read_missing(
    source: &dyn Connector,
    target: &dyn Connector,
    job: &TableJob,
    mut after: Option<Key>,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<Feed>,
) -> Result<(), EngineError> {
    let limit = job.spec.settings.id_array_batch_size;
    let scopes = (&job.mapping.source, &job.mapping.target);
    let failed = |what| read_failed(job, what);
    loop {
        let started = Instant::now();
        let w = crate::diff::key_window(source, target, scopes, &after, limit).await.map_err(failed("reading keys"))?;
        let read = started.elapsed();
        let started = Instant::now();
        let (missing, _) = crate::diff::key_diff(&w.source, &w.target);
        let plans = fetch_plans(&w.source, &missing, &after, batch);
        let compare = started.elapsed();
        for (plan, last) in plans {
            let (rows, read) = fetch(source, scopes.0, &plan).await;
            let rows = rows.map_err(failed("reading source rows"))?.items;
            let started = Instant::now();
            let (rows, errors) = convert_rows(job, rows);
            let convert = started.elapsed();
            if tx.send(Feed::Batch { rows, errors, last, keys: 0, read, convert }).await.is_err() {
                return Ok(());
            }
        }
        let keys = w.source.len() as u64;
        if tx.send(Feed::WindowEnd { upper: w.upper.clone(), keys, read, compare }).await.is_err() {
            return Ok(());
        }
        match w.upper {
            Some(u) => after = Some(u),
            None => return Ok(()),
        }
    }
}

/// How to read `missing` (ascending, a subset of the window's source keys `src` after
/// `after`) in batches, each with its last key: contiguous runs of source keys by range,
/// others by key list.
fn fetch_plans(src: &[Key], missing: &[Key], after: &Option<Key>, batch: usize) -> Vec<(Fetch, Option<Key>)> {
    let mut plans = Vec::new();
    let mut position = 0usize;
    for chunk in missing.chunks(batch) {
        let first = src[position..].iter().position(|k| *k == chunk[0]).expect("missing ⊆ src") + position;
        let last = src[first..].iter().position(|k| *k == chunk[chunk.len() - 1]).expect("ordered") + first;
        position = last + 1;
        let plan = if last - first + 1 == chunk.len() {
            let range = KeyRange {
                after: if first == 0 { after.clone() } else { Some(src[first - 1].clone()) },
                upto: Some(chunk[chunk.len() - 1].clone()),
            };
            Fetch::Range(range, chunk.len())
        } else {
            Fetch::Keys(chunk.to_vec())
        };
        plans.push((plan, chunk.last().cloned()));
    }
    plans
}

/// Rows by their key in `scope`.
fn rows_by_key(scope: &TableScope, rows: Vec<Row>) -> HashMap<Key, Row> {
    rows.into_iter().filter_map(|r| Some((scope.key_of(&r)?, r))).collect()
}

/// Converts source rows to target rows: `(converted rows, one message per row that failed)`.
fn convert_rows(job: &TableJob, rows: Vec<Row>) -> (Vec<Row>, Vec<String>) {
    let mut out = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for row in rows {
        let key = job.mapping.source.key_of(&row);
        match job.mapping.convert_owned(row) {
            Ok(r) => out.push(r),
            Err(e) => {
                let key = key.map_or("?".into(), |k| k.to_string());
                errors.push(format!("row {key} cannot be converted: {e}"));
            }
        }
    }
    (out, errors)
}

/// `add`: copies the source rows the target lacks (with a [`StepCursor::Copy`] cursor,
/// all of them). Reading (key windows, source rows, conversion) runs ahead of writing by
/// up to [`FEED_AHEAD`] batches, so the target is kept busy. A plain copy also writes up
/// to [`Capabilities::concurrent_writes`](crate::connector::Capabilities) batches at
/// once; their results are taken, and checkpointed, in key order. A crash may leave a
/// later batch committed and an earlier one not: the resume writes both again (the
/// committed one as an upsert) and counts each once.
async fn add_step(
    ctx: &mut StepContext<'_>,
    cursor: StepCursor,
    progress: &mut StepProgress,
) -> Result<(), EngineError> {
    let copy = matches!(cursor, StepCursor::Copy { .. });
    let at = move |after| if copy { StepCursor::Copy { after } } else { StepCursor::Keys { after } };
    // Key windows leave no room: keys they saw missing may be present by the time a
    // resume reads them again, and such batches would go uncounted.
    let mut limit = if copy { ctx.target.capabilities().concurrent_writes.max(1) } else { 1 };
    let (tx, mut rx) = tokio::sync::mpsc::channel(FEED_AHEAD);
    let reader = feed_missing(ctx.source, ctx.target, ctx.job, cursor.after_key(), ctx.batch_size(), copy, tx);
    let (target, scope) = (ctx.target, &ctx.job.mapping.target);
    let writer = async move {
        let mut queue = futures::stream::FuturesOrdered::new();
        // Batches in the queue, and since when at least one is.
        let mut writing = 0usize;
        let mut busy: Option<Instant> = None;
        let mut stopping = false;
        let mut ended = false;
        loop {
            if ctx.check_stop().is_err() {
                stopping = true;
            }
            if stopping && queue.is_empty() {
                return Err(EngineError::Interrupted);
            }
            tokio::select! {
                biased;
                Some(landed) = queue.next() => {
                    let mut landed = vec![landed];
                    let overlapped = limit > 1;
                    if overlapped && matches!(landed[0], (Feed::Batch { .. }, Some(Err(ConnectorError::Data(_))))) {
                        // The refused batch is written again alone, after the ones
                        // still in flight have landed (they may hold what it waits for,
                        // as a row's parent in the same table).
                        while let Some(l) = queue.next().await {
                            landed.push(l);
                        }
                    }
                    for (feed, result) in landed {
                        if matches!(feed, Feed::Batch { .. }) {
                            writing -= 1;
                        }
                        if writing == 0 && let Some(since) = busy.take() {
                            ctx.state.timers.write += since.elapsed();
                        }
                        if ctx.land(feed, result, overlapped, &mut limit, progress, at).await? {
                            return Ok(());
                        }
                    }
                }
                feed = rx.recv(), if !stopping && !ended && writing < limit => {
                    let feed = feed.expect("the add step's reader ends with the last window or an error");
                    match feed {
                        Feed::Failed(e) => return Err(e),
                        Feed::Batch { .. } => {
                            writing += 1;
                            busy.get_or_insert_with(Instant::now);
                        }
                        Feed::WindowEnd { ref upper, .. } => ended = upper.is_none(),
                    }
                    queue.push_back(write_new(target, scope, feed));
                }
            }
        }
    };
    // The writer returning drops `rx`, which ends the reader at its next batch.
    let ((), result) = tokio::join!(reader, writer);
    result
}

/// Writes a batch's rows with [`Connector::insert_new`] (the connector's resilience layer retries);
/// other feeds pass through. Returns the feed with the write's result.
async fn write_new(
    target: &dyn Connector,
    scope: &TableScope,
    feed: Feed,
) -> (Feed, Option<Result<u64, ConnectorError>>) {
    let result = match &feed {
        Feed::Batch { rows, .. } if !rows.is_empty() => Some(target.insert_new(scope, rows).await),
        Feed::Batch { .. } => Some(Ok(0)),
        _ => None,
    };
    (feed, result)
}

impl StepContext<'_> {
    /// Takes a written batch or a window end, in key order: counts, records errors and
    /// checkpoints. A batch the target refused as bad data is written again (split until
    /// the bad rows are isolated); `overlapped` says it had company in flight, so the
    /// refusal may have been only a row it depended on not being committed yet. When
    /// the batch then lands whole, its rows depend on earlier batches (a parent in the
    /// same table) and so may the next ones': `limit` drops to one batch at a time.
    /// Returns whether the step is done.
    async fn land(
        &mut self,
        feed: Feed,
        result: Option<Result<u64, ConnectorError>>,
        overlapped: bool,
        limit: &mut usize,
        progress: &mut StepProgress,
        at: impl Fn(Option<Key>) -> StepCursor,
    ) -> Result<bool, EngineError> {
        match feed {
            Feed::Batch { rows, errors, last, keys, read, convert } => {
                self.state.timers.read += read;
                self.state.timers.compare += convert;
                let conversion_errors = !errors.is_empty();
                for message in errors {
                    self.record_error(ErrorKind::Data, message)?;
                }
                let (written, write_errors) = match result.expect("a batch's write result") {
                    Ok(n) => {
                        crate::failpoint::hit("after_commit");
                        (n, false)
                    }
                    Err(ConnectorError::Data(message)) => {
                        let n = rows.len() as u64;
                        let (written, errors) = self.write_refused(rows, message, overlapped).await?;
                        if overlapped && written == n && *limit > 1 {
                            *limit = 1;
                            tracing::info!(
                                table = %self.name(),
                                "a batch refused beside another landed alone; writing one batch at a time"
                            );
                        }
                        (written, errors)
                    }
                    Err(e) => return Err(self.db("writing rows")(e)),
                };
                self.report().added += written;
                self.batch_done(conversion_errors || write_errors)?;
                progress.advance(keys);
                self.commit(at(last))?;
                Ok(false)
            }
            Feed::WindowEnd { upper, keys, read, compare } => {
                self.state.timers.read += read;
                self.state.timers.compare += compare;
                progress.advance(keys);
                match upper {
                    Some(u) => self.commit(at(Some(u)))?,
                    None => return Ok(true),
                }
                Ok(false)
            }
            Feed::Failed(e) => Err(e),
        }
    }

    /// Writes again a batch of new rows the target refused with `message`: whole when
    /// it was written `overlapped` with others, else split at once as [`Self::write`]
    /// splits. Returns `(rows written, any errors)`.
    async fn write_refused(
        &mut self,
        rows: Vec<Row>,
        message: String,
        overlapped: bool,
    ) -> Result<(u64, bool), EngineError> {
        if overlapped {
            tracing::debug!(table = %self.name(), rows = rows.len(), "batch refused beside others ({message}); writing it again alone");
            return self.write_pending(vec![rows], WriteMode::InsertNew).await;
        }
        let mut pending = Vec::new();
        self.refused(rows, &message, &mut pending)?;
        let (written, _) = self.write_pending(pending, WriteMode::InsertNew).await?;
        Ok((written, true))
    }
}

async fn changed_step(
    ctx: &mut StepContext<'_>,
    cursor: StepCursor,
    progress: &mut StepProgress,
) -> Result<(), EngineError> {
    let batch = ctx.batch_size();
    let mut after = cursor.after_key();
    loop {
        ctx.check_stop()?;
        let (src, tgt, upper) = ctx.row_window(&after, batch).await?;
        let n = src.len() as u64;
        // A source row that fails conversion is left out of `converted`; its target row is
        // no extra and must stay (the data error names it).
        let source_keys: HashSet<Key> = src.iter().filter_map(|r| ctx.job.mapping.source.key_of(r)).collect();
        let (converted, conversion_errors) = ctx.convert(src)?;
        let compare = Instant::now();
        let (src_scope, tgt_scope) = (&ctx.job.mapping.target, &ctx.job.mapping.target);
        let mut upserts = Vec::new();
        let mut extras = Vec::new();
        let mut new_keys = HashSet::new();
        let (mut added, mut modified, mut same) = (0u64, 0u64, 0u64);
        let (mut i, mut j) = (0, 0);
        while i < converted.len() || j < tgt.len() {
            let sk = converted.get(i).and_then(|r| src_scope.key_of(r));
            let tk = tgt.get(j).and_then(|r| tgt_scope.key_of(r));
            match (sk, tk) {
                (Some(s), Some(t)) if s == t => {
                    if ctx.job.mapping.rows_equal(&converted[i], &tgt[j]) {
                        same += 1;
                    } else {
                        modified += 1;
                        upserts.push(ctx.job.mapping.merge_into(converted[i].clone(), &tgt[j]));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(s), Some(t)) if s < t => {
                    added += 1;
                    new_keys.insert(s);
                    upserts.push(converted[i].clone());
                    i += 1;
                }
                (Some(s), None) => {
                    added += 1;
                    new_keys.insert(s);
                    upserts.push(converted[i].clone());
                    i += 1;
                }
                (_, Some(t)) => {
                    if !source_keys.contains(&t) {
                        extras.push(t);
                    }
                    j += 1;
                }
                (None, None) => break,
            }
        }
        ctx.state.timers.compare += compare.elapsed();
        let move_errors = ctx.remove_extras(&extras).await?;
        ctx.refused_keys.clear();
        let (_, write_errors) = ctx.write(upserts).await?;
        ctx.account(added, modified, same, &new_keys);
        ctx.batch_done(conversion_errors || write_errors || move_errors)?;
        progress.advance(n);
        match upper {
            Some(u) => {
                after = Some(u);
                ctx.commit(StepCursor::Keys { after: after.clone() })?;
            }
            None => return Ok(()),
        }
    }
}

async fn incremental_step(
    ctx: &mut StepContext<'_>,
    cursor: StepCursor,
    progress: &mut StepProgress,
) -> Result<(), EngineError> {
    let StepCursor::Modify { modify_id, key } = cursor else {
        return Err(EngineError::Database {
            context: "incremental step".into(),
            source: ConnectorError::Other("incremental step resumed with a key cursor".into()),
        });
    };
    let batch = ctx.batch_size();
    let mut position = ModifyCursor { modify_id, key };
    let modify_index = ctx.job.mapping.source.modify_index.expect("planned only with a modify column");
    loop {
        ctx.check_stop()?;
        let started = Instant::now();
        let (source, target) = (ctx.source, ctx.target);
        let (src_scope, tgt_scope) = (&ctx.job.mapping.source, &ctx.job.mapping.target);
        let Page { items: rows, more } =
            source.read_changed_since(src_scope, &position, batch).await.map_err(ctx.db("reading changed rows"))?;
        if rows.is_empty() {
            ctx.state.timers.read += started.elapsed();
            return Ok(());
        }
        if let Some(row) = rows.iter().find(|r| src_scope.key_of(r).is_none()) {
            let modify = row[modify_index].clone();
            return Err(ctx.db("reading changed rows")(ConnectorError::KeyOrder(format!(
                "{} returned a changed row (modify id {modify}) whose key `{}` is NULL or not an integer or \
                 text; rows without a usable key cannot be synced",
                source.describe_endpoint(),
                src_scope.key_text()
            ))));
        }
        let keys: Vec<Key> = rows.iter().filter_map(|r| src_scope.key_of(r)).collect();
        let existing = target.read_rows_by_keys(tgt_scope, &keys).await.map_err(ctx.db("reading target rows"))?;
        ctx.state.timers.read += started.elapsed();
        let (n, last) = (rows.len(), rows.last().expect("not empty"));
        let next = ModifyCursor { modify_id: Some(last[modify_index].clone()), key: src_scope.key_of(last) };
        let (converted, conversion_errors) = ctx.convert(rows)?;
        let compare = Instant::now();
        let existing = rows_by_key(tgt_scope, existing);
        let (mut added, mut modified, mut same) = (0u64, 0u64, 0u64);
        let mut upserts = Vec::new();
        let mut new_keys = HashSet::new();
        for row in converted {
            let key = tgt_scope.key_of(&row);
            match key.as_ref().and_then(|k| existing.get(k)) {
                None => {
                    added += 1;
                    new_keys.extend(key);
                    upserts.push(row);
                }
                Some(old) if ctx.job.mapping.rows_equal(&row, old) => same += 1,
                Some(old) => {
                    modified += 1;
                    upserts.push(ctx.job.mapping.merge_into(row, old));
                }
            }
        }
        ctx.state.timers.compare += compare.elapsed();
        ctx.refused_keys.clear();
        let (_, write_errors) = ctx.write(upserts).await?;
        ctx.account(added, modified, same, &new_keys);
        ctx.batch_done(conversion_errors || write_errors)?;
        position = next;
        ctx.commit(StepCursor::Modify { modify_id: position.modify_id.clone(), key: position.key.clone() })?;
        progress.advance(n as u64);
        if !more {
            return Ok(());
        }
    }
}
