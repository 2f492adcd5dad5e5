//! Count-based binary search for rows present on one side only (the manual's "Binary
//! Search Engine"). Over the [`Connector`] trait only, so it serves every backend that
//! can find the key at an offset inside a key range.
//!
//! A stack of frames `{range, source_count, target_count, depth}`: a frame whose counts
//! agree holds no difference (or differences that cancel, which the step's verification
//! catches). A frame larger than `binary_search_read_batch` rows is split at the key in the
//! middle of its larger side (OFFSET/LIMIT), which fixes that side's count of the lower
//! half; the other side's lower half is counted, and the upper half's counts follow by
//! subtraction: one offset lookup and one count per split. A small frame is read and compared key
//! by key. The search stops once the count difference is accounted for. The whole state
//! is plain data so a checkpoint can hold it and a resumed search continues where it
//! stopped.
//!
//! With a fan-out above 2 (`binary_search_fanout`; by default 4 when a side pays a round
//! trip per request, as 4D's REST server does), a frame is split into that many parts at
//! once (more while it holds several differences, see [`Searcher`]'s `parts`): the keys at
//! each part's end on the larger side, then the other side's count of each part but the
//! last, each step one round of concurrent requests. That is the same halving done
//! several levels at a time: with ten differences in 1,000,000 rows, 500-row ranges are
//! reached in 5 rounds instead of 11.

use serde::{Deserialize, Serialize};

use crate::connector::{Connector, ConnectorError};
use crate::model::{Key, KeyRange, TableScope};

/// What the search looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Source keys missing from the target (for `add`).
    Add,
    /// Target keys missing from the source (for `delete`).
    Delete,
}

impl Direction {
    /// `add` or `delete`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Add => "add",
            Direction::Delete => "delete",
        }
    }
}

/// One range still to search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Keys of the range.
    pub range: KeyRange,
    /// Source rows in the range.
    pub source_count: u64,
    /// Target rows in the range.
    pub target_count: u64,
    /// Splits from the whole table to this range.
    pub depth: u32,
    /// Upper part of its parent (the newer keys), for the progress arrows.
    pub upper: bool,
}

impl Frame {
    fn rows(&self) -> u64 {
        self.source_count.max(self.target_count)
    }
}

/// A search in progress: checkpointed as part of the step cursor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    /// Ranges still to search; the last is searched next.
    pub stack: Vec<Frame>,
    /// Keys found so far, ascending within each range read.
    pub found: Vec<Key>,
    /// Differences to find: the count difference.
    pub expected: u64,
    /// Rows of the whole table (larger side), for percentages.
    pub total: u64,
    /// Frames processed.
    pub iterations: u64,
    /// Statements or requests the search sent to either side (the connectors' own
    /// counters, so a lookup batch sent as one statement counts once and keys answered
    /// from a cached key list count nothing).
    pub queries: u64,
    /// Deepest frame processed.
    pub max_depth: u32,
    /// Rows (keys) read by direct comparisons.
    pub rows_read: u64,
}

impl SearchState {
    /// True when nothing is left to search or every expected difference was found.
    pub fn is_done(&self) -> bool {
        self.stack.is_empty() || self.found.len() as u64 >= self.expected
    }
}

/// Frames searched at once: their queries do not depend on each other, and over a slow
/// link the round trips dominate. Ten differences keep at most about twenty frames open,
/// so sixteen lets a level of the search cost one round trip (4D over REST with 20 ms per
/// request: 1.27 s with four at once, see the 4D benchmark); a PostgreSQL pool queues
/// what it cannot run at once.
pub const PARALLEL_FRAMES: usize = 16;

/// The fan-out used when a side pays a round trip per request and the configuration does
/// not set one. A split costs each side 3 requests (the larger side's lookups, or the
/// other's counts) for 2 halvings, so a difference costs a side at most
/// 3·ceil(log4(N/read_batch)) + 1 requests (≤ 1.5·log2(N/read_batch) + 4), within
/// 2·log2(N/read_batch) + 4; the 4D benchmark finds ten differences in
/// 1,000,000 rows with 13.1 requests each.
pub const COSTLY_ROUND_TRIP_FANOUT: u64 = 4;

/// The fan-out of a search: `configured` (`binary_search_fanout`), else
/// [`COSTLY_ROUND_TRIP_FANOUT`] when either side has
/// [`costly_round_trips`](crate::connector::Capabilities::costly_round_trips), else 2.
pub fn fanout(configured: Option<u64>, source: &dyn Connector, target: &dyn Connector) -> u64 {
    configured.unwrap_or_else(|| {
        if source.capabilities().costly_round_trips || target.capabilities().costly_round_trips {
            COSTLY_ROUND_TRIP_FANOUT
        } else {
            2
        }
    })
}

/// Most parts a range holding several differences splits into at once (with a fan-out
/// above 2): one round of up to 31 lookups, then one of up to 31 counts. Ten differences
/// in 1,000,000 rows: the first split makes 32 ranges of 31,250 rows, and three more splits
/// in four reach 500 rows (4 rounds where halving takes 11).
pub const MAX_PARTS: u64 = 32;

/// What processing one frame produced.
struct Outcome {
    children: Vec<Frame>,
    found: Vec<Key>,
    rows_read: u64,
}

/// Rows of each range on one side, counted at once.
async fn counts(side: &dyn Connector, scope: &TableScope, ranges: &[KeyRange]) -> Result<Vec<u64>, ConnectorError> {
    side.count_ranges(scope, ranges).await
}

/// The parameters of a search.
pub struct Searcher<'a> {
    /// Source connector.
    pub source: &'a dyn Connector,
    /// Target connector.
    pub target: &'a dyn Connector,
    /// Source scope.
    pub source_scope: &'a TableScope,
    /// Target scope.
    pub target_scope: &'a TableScope,
    /// What to find.
    pub direction: Direction,
    /// Ranges of at most this many rows are compared directly.
    pub read_batch: u64,
    /// Search the newest N keys first (0 = off).
    pub recent_first: u64,
    /// Parts a range is split into at once (at least 2; 2 = halves).
    pub fanout: u64,
}

/// The progress token of one processed frame, as the manual prints it: share of the table,
/// an arrow (↑ newer half, ↓ older half) and the rows of the range, e.g. `2.8%↑5000`.
pub fn token(frame: &Frame, total: u64) -> String {
    let pct = if total == 0 { 100.0 } else { 100.0 * frame.rows() as f64 / total as f64 };
    let pct = if pct >= 10.0 { format!("{pct:.0}%") } else { format!("{pct:.1}%") };
    format!("{pct}{}{}", if frame.upper { '↑' } else { '↓' }, frame.rows())
}

impl Searcher<'_> {
    fn big_side(&self, frame: &Frame) -> (&dyn Connector, &TableScope) {
        if frame.source_count >= frame.target_count {
            (self.source, self.source_scope)
        } else {
            (self.target, self.target_scope)
        }
    }

    /// Starts a search over the whole table given both counts; with `recent_first`, the
    /// newest keys form their own first range.
    pub async fn start(&self, source_count: u64, target_count: u64) -> Result<SearchState, ConnectorError> {
        let expected = match self.direction {
            Direction::Add => source_count.saturating_sub(target_count),
            Direction::Delete => target_count.saturating_sub(source_count),
        };
        let root = Frame { range: KeyRange::all(), source_count, target_count, depth: 0, upper: false };
        let mut state = SearchState { total: root.rows(), expected, ..SearchState::default() };
        let sent = self.sent();
        let result = self.split_recent(&mut state, root).await;
        state.queries += self.sent().saturating_sub(sent);
        result.map(|()| state)
    }

    /// Statements or requests both sides have sent so far.
    fn sent(&self) -> u64 {
        self.source.counters().snapshot().0 + self.target.counters().snapshot().0
    }

    /// Puts the root frame on the stack, split at the newest `recent_first` keys when set.
    async fn split_recent(&self, state: &mut SearchState, root: Frame) -> Result<(), ConnectorError> {
        let (source_count, target_count) = (root.source_count, root.target_count);
        if self.recent_first > 0 && root.rows() > self.recent_first + self.read_batch {
            let (side, scope) = self.big_side(&root);
            let boundary = side.key_at(scope, &root.range, root.rows() - self.recent_first - 1).await?;
            if let Some(boundary) = boundary {
                let lower_range = KeyRange { after: None, upto: Some(boundary.clone()) };
                let (s, t) = self.count_lower(&root, &lower_range, root.rows() - self.recent_first).await?;
                let lower = Frame { range: lower_range, source_count: s, target_count: t, depth: 1, upper: false };
                let upper = Frame {
                    range: KeyRange { after: Some(boundary), upto: None },
                    source_count: source_count.saturating_sub(s),
                    target_count: target_count.saturating_sub(t),
                    depth: 1,
                    upper: true,
                };
                for frame in [lower, upper] {
                    if frame.source_count != frame.target_count {
                        state.stack.push(frame);
                    }
                }
                return Ok(());
            }
        }
        if source_count != target_count {
            state.stack.push(root);
        }
        Ok(())
    }

    /// Counts of a frame's lower part `range` on both sides. The larger side's count is
    /// known: `range` ends at the key at offset `big_rows - 1` of that side, found with
    /// OFFSET/LIMIT. Only the other side is counted.
    async fn count_lower(&self, frame: &Frame, range: &KeyRange, big_rows: u64) -> Result<(u64, u64), ConnectorError> {
        if frame.source_count >= frame.target_count {
            Ok((big_rows, self.target.count(self.target_scope, range).await?))
        } else {
            Ok((self.source.count(self.source_scope, range).await?, big_rows))
        }
    }

    /// Processes the next frames: up to [`PARALLEL_FRAMES`] from the top of the stack at
    /// once, since each costs round trips that do not depend on the others. Returns the
    /// frames processed (for progress display); empty when the search is done.
    pub async fn step(&self, state: &mut SearchState) -> Result<Vec<Frame>, ConnectorError> {
        if state.is_done() {
            return Ok(Vec::new());
        }
        let take = state.stack.len().min(PARALLEL_FRAMES);
        let frames: Vec<Frame> = state.stack.split_off(state.stack.len() - take);
        let sent = self.sent();
        let outcomes = futures::future::join_all(frames.iter().map(|f| self.process(f))).await;
        state.queries += self.sent().saturating_sub(sent);
        // Children of the frame that was on top go back on top.
        for (frame, outcome) in frames.iter().zip(outcomes) {
            let outcome = outcome?;
            state.iterations += 1;
            state.max_depth = state.max_depth.max(frame.depth);
            state.rows_read += outcome.rows_read;
            state.found.extend(outcome.found);
            state.stack.extend(outcome.children);
        }
        Ok(frames.into_iter().rev().collect())
    }

    /// Parts a frame splits into: 2 for halves; with a wider fan-out, `fanout` for each
    /// difference the frame holds at least (its count difference), up to [`MAX_PARTS`]:
    /// a split's requests are shared by the differences inside, so a range holding many
    /// (the whole table, early on) splits wider at no more requests per difference.
    fn parts(&self, frame: &Frame) -> u64 {
        if self.fanout <= 2 {
            return 2;
        }
        let held = frame.source_count.abs_diff(frame.target_count).max(1);
        self.fanout.saturating_mul(held).clamp(self.fanout, MAX_PARTS.max(self.fanout))
    }

    /// One frame: split it, or compare it directly when small.
    async fn process(&self, frame: &Frame) -> Result<Outcome, ConnectorError> {
        let rows = frame.rows();
        if rows <= self.read_batch {
            return self.compare_directly(frame).await;
        }
        // No more parts than it takes to reach ranges of `read_batch` rows.
        let parts = self.parts(frame).min(rows.div_ceil(self.read_batch).max(2));
        // The larger side's rows up to the end of each part but the last.
        let ends: Vec<u64> = (1..parts).map(|i| rows * i / parts).collect();
        let (side, scope) = self.big_side(frame);
        let offsets: Vec<u64> = ends.iter().map(|e| e - 1).collect();
        let found = side.keys_at(scope, &frame.range, &offsets).await?;
        let bounds: Option<Vec<Key>> = found.into_iter().collect();
        let Some(bounds) = bounds.filter(|b| b.windows(2).all(|w| w[0] < w[1])) else {
            // The table changed under us: compare what is there directly.
            return self.compare_directly(frame).await;
        };
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut after = frame.range.after.clone();
        for bound in bounds {
            ranges.push(KeyRange { after: after.replace(bound.clone()), upto: Some(bound) });
        }
        ranges.push(KeyRange { after, upto: frame.range.upto.clone() });
        // The larger side's counts follow from the offsets; the other side counts every
        // part but the last, whose count is what remains.
        let big: Vec<u64> = ends
            .iter()
            .scan(0, |prev, &e| Some(e - std::mem::replace(prev, e)))
            .chain([rows - ends[ends.len() - 1]])
            .collect();
        let (small, small_total) = if frame.source_count >= frame.target_count {
            (counts(self.target, self.target_scope, &ranges[..ranges.len() - 1]), frame.target_count)
        } else {
            (counts(self.source, self.source_scope, &ranges[..ranges.len() - 1]), frame.source_count)
        };
        let mut small = small.await?;
        small.push(small_total.saturating_sub(small.iter().sum()));
        let source_is_big = frame.source_count >= frame.target_count;
        let children = ranges
            .into_iter()
            .zip(big.into_iter().zip(small))
            .enumerate()
            .map(|(i, (range, (b, s)))| {
                let (source_count, target_count) = if source_is_big { (b, s) } else { (s, b) };
                Frame { range, source_count, target_count, depth: frame.depth + 1, upper: 2 * i as u64 >= parts }
            })
            .filter(|f| f.source_count != f.target_count)
            .collect();
        Ok(Outcome { children, found: Vec::new(), rows_read: 0 })
    }

    async fn compare_directly(&self, frame: &Frame) -> Result<Outcome, ConnectorError> {
        // Read a little more than the counts say, in case rows arrived meanwhile.
        let limit = (frame.rows() + self.read_batch) as usize;
        // The two sides are independent connections: ask both at once.
        let (source, target) = tokio::join!(
            crate::diff::all_keys(self.source, self.source_scope, &frame.range, limit),
            crate::diff::all_keys(self.target, self.target_scope, &frame.range, limit)
        );
        let ((source, _), (target, _)) = (source?, target?);
        let rows_read = (source.len() + target.len()) as u64;
        let (only_source, only_target) = crate::diff::key_diff(&source, &target);
        let found = match self.direction {
            Direction::Add => only_source,
            Direction::Delete => only_target,
        };
        Ok(Outcome { children: Vec::new(), found, rows_read })
    }

    /// Runs the search to the end (tests and benchmarks; the engine steps it itself to
    /// checkpoint between frames).
    pub async fn run(&self, source_count: u64, target_count: u64) -> Result<SearchState, ConnectorError> {
        let mut state = self.start(source_count, target_count).await?;
        while !self.step(&mut state).await?.is_empty() {}
        Ok(state)
    }
}

#[cfg(test)]
mod tests;
