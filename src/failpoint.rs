//! Crash points for the crash tests. With `DB_SYNC_FAILPOINT=NAME:N` in the environment,
//! the N-th time the code passes the point `NAME` the process aborts on the spot, as if
//! killed with SIGKILL: no destructors, no flush. Without the variable a point costs one
//! atomic load. `DB_SYNC_FAILPOINT=NAME:N:pause=MS` instead holds the thread there for MS
//! milliseconds (a run caught in the middle, for the signal and status tests).
//!
//! Points: `mid_write` (inside a target transaction, half-way through a batch),
//! `after_commit` (a target batch committed, its checkpoint not yet written),
//! `before_checkpoint` and `after_checkpoint` (around the flushed checkpoint).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happens at the point: the process aborts, or the thread sleeps that long.
#[derive(Clone, Copy)]
enum Action {
    Abort,
    Pause(std::time::Duration),
}

static TARGET: OnceLock<Option<(String, u64, Action)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64, Action)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("DB_SYNC_FAILPOINT").ok()?;
        let mut parts = spec.split(':');
        let name = parts.next()?.to_string();
        let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let action = match parts.next().and_then(|a| a.strip_prefix("pause=")) {
            Some(ms) => Action::Pause(std::time::Duration::from_millis(ms.parse().unwrap_or(1000))),
            None => Action::Abort,
        };
        Some((name, n, action))
    })
}

/// Passes the crash point `name`.
pub fn hit(name: &str) {
    if let Some((point, n, action)) = target()
        && point == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        match action {
            Action::Abort => {
                eprintln!("db-sync: failpoint {name}:{n} reached, aborting");
                std::process::abort();
            }
            Action::Pause(d) => {
                eprintln!("db-sync: failpoint {name}:{n} reached, pausing {} ms", d.as_millis());
                std::thread::sleep(*d);
            }
        }
    }
}
