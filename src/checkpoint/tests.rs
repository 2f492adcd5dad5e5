use super::*;
use crate::engine::{RunState, Timers};

fn meta(id: u64, status: RunStatus) -> RunMeta {
    RunMeta {
        id,
        config_path: "db-sync.json".into(),
        config_fingerprint: 7,
        source: "sqlite a".into(),
        target: "sqlite b".into(),
        started_ms: now_ms(),
        ended_ms: None,
        status,
        host: host_name(),
        pid: std::process::id(),
        events: Vec::new(),
        last_error: None,
        active_ms: 0,
    }
}

fn state() -> RunState {
    RunState {
        tables: Vec::new(),
        tasks: vec![crate::engine::Task::PlanRepairs],
        position: 0,
        cursor: Some(crate::engine::StepCursor::Modify {
            modify_id: Some(Value::Text("2026-01-01".into())),
            key: Some(crate::model::Key::Int(42)),
        }),
        errors: Vec::new(),
        failing_batches_in_a_row: 0,
        timers: Timers::default(),
        bisect: Default::default(),
        queries_before: 3,
        mismatched: vec![(0, 5, 6)],
    }
}

/// A saved run decodes to the same record, ids increase, and a reopened store sees it.
#[test]
fn run_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_run_id().unwrap(), 1);
        let mut m = meta(1, RunStatus::Running);
        m.event(EventKind::Started, "x");
        store.save_run(&m, &state()).unwrap();
        assert_eq!(store.next_run_id().unwrap(), 2);
    }
    let store = Store::open(dir.path()).unwrap();
    let run = store.load_run(1).unwrap();
    assert_eq!(run.meta.events.len(), 1);
    assert_eq!(run.state.cursor, state().cursor);
    assert_eq!(run.state.mismatched, vec![(0, 5, 6)]);
    assert!(matches!(store.load_run(9), Err(StoreError::NoSuchRun(9))));
}

/// A run left `Running` by a dead process is marked interrupted when the store is
/// opened again, with an event saying so.
#[test]
fn dead_runs_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save_run(&meta(1, RunStatus::Running), &state()).unwrap();
    store.recover_dead_runs().unwrap();
    let run = store.load_run(1).unwrap();
    assert_eq!(run.meta.status, RunStatus::Interrupted);
    assert_eq!(run.meta.interruptions(), 1);
    assert!(run.meta.events[0].detail.contains("ended without finishing"));
    assert_eq!(store.unfinished_run().unwrap().unwrap().meta.id, 1);
}

/// A damaged record is reported as corruption naming the run and the way out.
#[test]
fn corrupt_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save_run(&meta(1, RunStatus::Completed), &state()).unwrap();
    let mut bytes = store.db.get(run_key(1)).unwrap().unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    store.db.insert(run_key(1), bytes).unwrap();
    let err = store.load_run(1).unwrap_err().to_string();
    assert!(err.contains("record of run 1: checksum mismatch"), "{err}");
    assert!(err.contains("move the folder aside"), "{err}");
    assert!(store.runs().is_err());
}

/// A store written by a newer format is refused with an upgrade hint.
#[test]
fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let record = FormatRecord { version: FORMAT_VERSION + 1, written_by: "99.0.0".into() };
        let payload = bincode::serde::encode_to_vec(&record, bincode_config()).unwrap();
        store.db.insert(KEY_FORMAT, seal(payload)).unwrap();
        store.db.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().expect("refused").to_string();
    assert!(err.contains("newer db-sync") && err.contains("upgrade"), "{err}");
}

/// A second open of a store in use fails with a message naming the run, pid and host.
#[test]
fn second_opener_is_told_who_holds_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.set_owner_run(4).unwrap();
    let err = Store::open(dir.path()).err().expect("busy");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Busy(_)), "{message}");
    assert!(message.contains("run 4 is in progress (pid"), "{message}");
    assert!(message.contains(&host_name()), "{message}");
}

/// Pruning keeps the newest finished runs and never removes an unfinished one.
#[test]
fn prune_keeps_newest_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for id in 1..=6 {
        let status = if id == 2 { RunStatus::Interrupted } else { RunStatus::Completed };
        store.save_run(&meta(id, status), &state()).unwrap();
    }
    assert_eq!(store.prune(3).unwrap(), 2);
    let ids: Vec<u64> = store.runs().unwrap().iter().map(|r| r.meta.id).collect();
    assert_eq!(ids, vec![2, 4, 5, 6]);
    assert_eq!(store.next_run_id().unwrap(), 7);
}

/// Watermarks apply only to the identity they were written for.
#[test]
fn watermark_identity_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let record = WatermarkRecord { identity: "a|b".into(), value: Value::Int(99), run_id: 1, at_ms: 0 };
    store.save_run_with_watermarks(&meta(1, RunStatus::Running), &state(), &[("items".into(), record)]).unwrap();
    assert_eq!(store.watermark("items", "a|b").unwrap(), Some(Value::Int(99)));
    assert_eq!(store.watermark("items", "a|c").unwrap(), None);
    assert_eq!(store.watermark("other", "a|b").unwrap(), None);
    assert_eq!(store.watermarks().unwrap().len(), 1);
}
