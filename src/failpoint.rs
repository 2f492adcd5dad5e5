//! Crash points for the crash tests. With `DB_SYNC_FAILPOINT=NAME:N` in the environment,
//! the N-th time the code passes the point `NAME` the process aborts on the spot, as if
//! killed with SIGKILL: no destructors, no flush. Without the variable a point costs one
//! atomic load.
//!
//! Points: `mid_write` (inside a target transaction, half-way through a batch),
//! `after_commit` (a target batch committed, its checkpoint not yet written),
//! `before_checkpoint` and `after_checkpoint` (around the flushed checkpoint).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("DB_SYNC_FAILPOINT").ok()?;
        let (name, n) = spec.rsplit_once(':').unwrap_or((spec.as_str(), "1"));
        Some((name.to_string(), n.parse().unwrap_or(1)))
    })
}

/// Passes the crash point `name`.
pub fn hit(name: &str) {
    if let Some((point, n)) = target() {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("db-sync: failpoint {name}:{n} reached, aborting");
            std::process::abort();
        }
    }
}
