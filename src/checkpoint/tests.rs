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
        network: Vec::new(),
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
    assert!(message.contains("run 4 is in progress since") && message.contains("(pid"), "{message}");
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

// ---- Format versions: the golden layout of the current format, the frozen layouts of
// formats 1 and 2 and their migrations, the store written by the release of format 1 and
// a store holding format-2 records.

mod formats {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::super::*;
    use crate::connector::resilient::{NetworkEvent, NetworkEventKind};
    use crate::diff::bisect::{Frame, SearchState};
    use crate::engine::{BisectTotals, StepCursor, TableState, TableSurvey, Task, Timers};
    use crate::model::{Key, KeyRange};
    use crate::plan::{Plan, StepKind};
    use crate::report::{ErrorEntry, ErrorKind, TableReport};

    const BLESS: &str = "DB_SYNC_BLESS_STORE";

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    /// Fails to compile when a stored enum gains or loses a variant: add the new variant
    /// to the samples below (the golden test then asks for a new format).
    #[allow(dead_code)]
    fn every_variant_is_sampled(
        (value, key, cursor, task, step, error, status, event, network): (
            &Value,
            &Key,
            &StepCursor,
            &Task,
            StepKind,
            ErrorKind,
            RunStatus,
            EventKind,
            NetworkEventKind,
        ),
    ) {
        match network {
            NetworkEventKind::Retry | NetworkEventKind::Reconnect | NetworkEventKind::GaveUp => {}
        }
        match value {
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Text(_) | Value::Bytes(_) => {}
        }
        match key {
            Key::Int(_) | Key::Text(_) | Key::Parts(_) | Key::Bytes(_) => {}
        }
        match cursor {
            StepCursor::Keys { .. }
            | StepCursor::Bisect { .. }
            | StepCursor::Modify { .. }
            | StepCursor::Copy { .. } => {}
        }
        match task {
            Task::Step { .. }
            | Task::Verify { .. }
            | Task::PlanRepairs
            | Task::RepairAdd { .. }
            | Task::FinalVerify { .. } => {}
        }
        match step {
            StepKind::Delete | StepKind::Add | StepKind::Incremental | StepKind::Changed => {}
        }
        match error {
            ErrorKind::Connection | ErrorKind::Schema | ErrorKind::Data | ErrorKind::Logic => {}
        }
        match status {
            RunStatus::Running
            | RunStatus::Interrupted
            | RunStatus::Completed
            | RunStatus::CompletedWithErrors
            | RunStatus::Failed
            | RunStatus::Abandoned => {}
        }
        match event {
            EventKind::Started
            | EventKind::Interrupted
            | EventKind::Resumed
            | EventKind::Replanned
            | EventKind::Finished
            | EventKind::Abandoned => {}
        }
    }

    /// Enum variants that one record cannot hold all at once, encoded beside it.
    type Extras = (Vec<StepCursor>, Vec<Value>, Vec<StepKind>, Vec<ErrorKind>, Vec<RunStatus>);
    type ExtrasV1 = (Vec<v1::StepCursor>, Vec<v1::Value>, Vec<v1::StepKind>, Vec<v1::ErrorKind>, Vec<v1::RunStatus>);
    type ExtrasV2 = (Vec<v2::StepCursor>, Vec<v2::Value>, Vec<v2::StepKind>, Vec<v2::ErrorKind>, Vec<v2::RunStatus>);

    /// The sample in the live types: every struct written out field by field, so a field
    /// added to a stored type fails to compile here until the sample sets it.
    fn live_sample() -> (RunRecord, WatermarkRecord, Extras) {
        let plan = |steps: Vec<StepKind>, reason: &str| Plan { steps, reason: reason.into() };
        let event = |at_ms: i64, kind: EventKind, detail: &str| RunEvent {
            at_ms,
            kind,
            pid: 4242,
            host: "host-a".into(),
            detail: detail.into(),
        };
        let meta = RunMeta {
            id: 7,
            config_path: "conf/db-sync.json".into(),
            config_fingerprint: 0x1234_5678_9abc_def0,
            source: "sqlite ./source.sqlite".into(),
            target: "postgres postgres://sync@db/erp".into(),
            started_ms: 1_767_225_600_000,
            ended_ms: Some(1_767_225_665_000),
            status: RunStatus::CompletedWithErrors,
            host: "host-a".into(),
            pid: 4242,
            events: vec![
                event(1_767_225_600_000, EventKind::Started, "2 tables, 9 tasks"),
                event(1_767_225_610_000, EventKind::Interrupted, "process 4241 ended"),
                event(1_767_225_620_000, EventKind::Resumed, "resumed at task 2/9"),
                event(1_767_225_630_000, EventKind::Replanned, "re-planned at task 2/9"),
                event(1_767_225_640_000, EventKind::Abandoned, "sample only"),
                event(1_767_225_665_000, EventKind::Finished, "completed with errors"),
            ],
            last_error: Some("2 rows refused".into()),
            active_ms: 61_500,
        };
        let items = TableState {
            survey: TableSurvey {
                source_count: 340,
                target_count: 300,
                watermark: Some(Value::Int(300)),
                source_max_modify: Some(Value::Int(2340)),
                changed: Some(100),
                null_modify: 2,
                plan: plan(vec![StepKind::Add, StepKind::Incremental], "source has more rows & trusted modify id"),
            },
            report: TableReport {
                name: "items".into(),
                source_before: 340,
                target_before: 300,
                source_after: Some(340),
                target_after: Some(339),
                changed: Some(100),
                plan: Some(plan(vec![StepKind::Add, StepKind::Incremental], "source has more rows")),
                repair: vec![StepKind::Delete, StepKind::Add],
                added: 40,
                modified: 60,
                deleted: 1,
                skipped: 3,
                errors: 2,
                duration_ms: 1_250,
                verified: Some(false),
                rows_compared: false,
                retries: 0,
                reconnects: 0,
            },
            mapping_fingerprint: 0xfeed_beef,
            verified: false,
        };
        let notes = TableState {
            survey: TableSurvey {
                source_count: 210,
                target_count: 200,
                watermark: Some(Value::Text("2026-01-01 00:00:00".into())),
                source_max_modify: None,
                changed: None,
                null_modify: 0,
                plan: plan(vec![StepKind::Delete, StepKind::Changed], "no modify id field"),
            },
            report: TableReport {
                name: "notes".into(),
                source_before: 210,
                target_before: 200,
                source_after: None,
                target_after: None,
                changed: None,
                plan: None,
                repair: Vec::new(),
                added: 0,
                modified: 0,
                deleted: 0,
                skipped: 0,
                errors: 0,
                duration_ms: 0,
                verified: None,
                rows_compared: false,
                retries: 0,
                reconnects: 0,
            },
            mapping_fingerprint: 1,
            verified: true,
        };
        let search = SearchState {
            stack: vec![
                Frame {
                    range: KeyRange { after: None, upto: Some(Key::Int(170)) },
                    source_count: 170,
                    target_count: 150,
                    depth: 1,
                    upper: false,
                },
                Frame {
                    range: KeyRange { after: Some(Key::Text("n0100".into())), upto: None },
                    source_count: 110,
                    target_count: 100,
                    depth: 2,
                    upper: true,
                },
            ],
            found: vec![Key::Int(5), Key::Text("n0007".into())],
            expected: 40,
            total: 340,
            iterations: 9,
            queries: 27,
            max_depth: 3,
            rows_read: 120,
        };
        let state = RunState {
            tables: vec![items, notes],
            tasks: vec![
                Task::Step { table: 1, kind: StepKind::Delete, repair: false },
                Task::Step { table: 0, kind: StepKind::Add, repair: true },
                Task::Verify { table: 0 },
                Task::PlanRepairs,
                Task::RepairAdd { table: 1 },
                Task::FinalVerify { table: 1 },
            ],
            position: 1,
            cursor: Some(StepCursor::Bisect { search, written: 1 }),
            errors: vec![
                ErrorEntry { kind: ErrorKind::Data, table: Some("items".into()), message: "key 17: NOT NULL".into() },
                ErrorEntry { kind: ErrorKind::Logic, table: None, message: "counts differ".into() },
            ],
            failing_batches_in_a_row: 1,
            timers: Timers {
                read: Duration::new(1, 500_000_000),
                write: Duration::from_millis(2_250),
                delete: Duration::from_micros(7),
                compare: Duration::ZERO,
                bisect: Duration::new(3, 1),
            },
            bisect: BisectTotals { searches: 1, iterations: 9, queries: 27, max_depth: 3 },
            queries_before: 11,
            mismatched: vec![(0, 340, 339)],
            network: Vec::new(),
        };
        let watermark = WatermarkRecord {
            identity: "sqlite ./source.sqlite|sqlite ./target.sqlite|items|items|[]".into(),
            value: Value::Int(2340),
            run_id: 7,
            at_ms: 1_767_225_660_000,
        };
        let extras = (
            vec![
                StepCursor::Keys { after: None },
                StepCursor::Keys { after: Some(Key::Int(-3)) },
                StepCursor::Modify { modify_id: Some(Value::Int(1100)), key: Some(Key::Int(100)) },
                StepCursor::Modify { modify_id: None, key: None },
                StepCursor::Copy { after: Some(Key::Text("n0042".into())) },
            ],
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(i64::MIN),
                Value::Float(-0.25),
                Value::Text("é".into()),
                Value::Bytes(vec![0, 1, 255]),
            ],
            vec![StepKind::Delete, StepKind::Add, StepKind::Incremental, StepKind::Changed],
            vec![ErrorKind::Connection, ErrorKind::Schema, ErrorKind::Data, ErrorKind::Logic],
            vec![
                RunStatus::Running,
                RunStatus::Interrupted,
                RunStatus::Completed,
                RunStatus::CompletedWithErrors,
                RunStatus::Failed,
                RunStatus::Abandoned,
            ],
        );
        (RunRecord { meta, state }, watermark, extras)
    }

    /// The same sample in the frozen types of format 1.
    fn v1_sample() -> (v1::RunRecord, v1::WatermarkRecord, ExtrasV1) {
        use v1::*;
        let plan = |steps: Vec<StepKind>, reason: &str| Plan { steps, reason: reason.into() };
        let event = |at_ms: i64, kind: EventKind, detail: &str| RunEvent {
            at_ms,
            kind,
            pid: 4242,
            host: "host-a".into(),
            detail: detail.into(),
        };
        let meta = RunMeta {
            id: 7,
            config_path: "conf/db-sync.json".into(),
            config_fingerprint: 0x1234_5678_9abc_def0,
            source: "sqlite ./source.sqlite".into(),
            target: "postgres postgres://sync@db/erp".into(),
            started_ms: 1_767_225_600_000,
            ended_ms: Some(1_767_225_665_000),
            status: RunStatus::CompletedWithErrors,
            host: "host-a".into(),
            pid: 4242,
            events: vec![
                event(1_767_225_600_000, EventKind::Started, "2 tables, 9 tasks"),
                event(1_767_225_610_000, EventKind::Interrupted, "process 4241 ended"),
                event(1_767_225_620_000, EventKind::Resumed, "resumed at task 2/9"),
                event(1_767_225_630_000, EventKind::Replanned, "re-planned at task 2/9"),
                event(1_767_225_640_000, EventKind::Abandoned, "sample only"),
                event(1_767_225_665_000, EventKind::Finished, "completed with errors"),
            ],
            last_error: Some("2 rows refused".into()),
            active_ms: 61_500,
        };
        let items = TableState {
            survey: TableSurvey {
                source_count: 340,
                target_count: 300,
                watermark: Some(Value::Int(300)),
                source_max_modify: Some(Value::Int(2340)),
                changed: Some(100),
                null_modify: 2,
                plan: plan(vec![StepKind::Add, StepKind::Incremental], "source has more rows & trusted modify id"),
            },
            report: TableReport {
                name: "items".into(),
                source_before: 340,
                target_before: 300,
                source_after: Some(340),
                target_after: Some(339),
                changed: Some(100),
                plan: Some(plan(vec![StepKind::Add, StepKind::Incremental], "source has more rows")),
                repair: vec![StepKind::Delete, StepKind::Add],
                added: 40,
                modified: 60,
                deleted: 1,
                skipped: 3,
                errors: 2,
                duration_ms: 1_250,
                verified: Some(false),
            },
            mapping_fingerprint: 0xfeed_beef,
            verified: false,
        };
        let notes = TableState {
            survey: TableSurvey {
                source_count: 210,
                target_count: 200,
                watermark: Some(Value::Text("2026-01-01 00:00:00".into())),
                source_max_modify: None,
                changed: None,
                null_modify: 0,
                plan: plan(vec![StepKind::Delete, StepKind::Changed], "no modify id field"),
            },
            report: TableReport {
                name: "notes".into(),
                source_before: 210,
                target_before: 200,
                source_after: None,
                target_after: None,
                changed: None,
                plan: None,
                repair: Vec::new(),
                added: 0,
                modified: 0,
                deleted: 0,
                skipped: 0,
                errors: 0,
                duration_ms: 0,
                verified: None,
            },
            mapping_fingerprint: 1,
            verified: true,
        };
        let search = SearchState {
            stack: vec![
                Frame {
                    range: KeyRange { after: None, upto: Some(Key::Int(170)) },
                    source_count: 170,
                    target_count: 150,
                    depth: 1,
                    upper: false,
                },
                Frame {
                    range: KeyRange { after: Some(Key::Text("n0100".into())), upto: None },
                    source_count: 110,
                    target_count: 100,
                    depth: 2,
                    upper: true,
                },
            ],
            found: vec![Key::Int(5), Key::Text("n0007".into())],
            expected: 40,
            total: 340,
            iterations: 9,
            queries: 27,
            max_depth: 3,
            rows_read: 120,
        };
        let state = RunState {
            tables: vec![items, notes],
            tasks: vec![
                Task::Step { table: 1, kind: StepKind::Delete, repair: false },
                Task::Step { table: 0, kind: StepKind::Add, repair: true },
                Task::Verify { table: 0 },
                Task::PlanRepairs,
                Task::RepairAdd { table: 1 },
                Task::FinalVerify { table: 1 },
            ],
            position: 1,
            cursor: Some(StepCursor::Bisect { search, written: 1 }),
            errors: vec![
                ErrorEntry { kind: ErrorKind::Data, table: Some("items".into()), message: "key 17: NOT NULL".into() },
                ErrorEntry { kind: ErrorKind::Logic, table: None, message: "counts differ".into() },
            ],
            failing_batches_in_a_row: 1,
            timers: Timers {
                read: Duration { secs: 1, nanos: 500_000_000 },
                write: Duration { secs: 2, nanos: 250_000_000 },
                delete: Duration { secs: 0, nanos: 7_000 },
                compare: Duration { secs: 0, nanos: 0 },
                bisect: Duration { secs: 3, nanos: 1 },
            },
            bisect: BisectTotals { searches: 1, iterations: 9, queries: 27, max_depth: 3 },
            queries_before: 11,
            mismatched: vec![(0, 340, 339)],
        };
        let watermark = WatermarkRecord {
            identity: "sqlite ./source.sqlite|sqlite ./target.sqlite|items|items|[]".into(),
            value: Value::Int(2340),
            run_id: 7,
            at_ms: 1_767_225_660_000,
        };
        let extras = (
            vec![
                StepCursor::Keys { after: None },
                StepCursor::Keys { after: Some(Key::Int(-3)) },
                StepCursor::Modify { modify_id: Some(Value::Int(1100)), key: Some(Key::Int(100)) },
                StepCursor::Modify { modify_id: None, key: None },
                StepCursor::Copy { after: Some(Key::Text("n0042".into())) },
            ],
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(i64::MIN),
                Value::Float(-0.25),
                Value::Text("é".into()),
                Value::Bytes(vec![0, 1, 255]),
            ],
            vec![StepKind::Delete, StepKind::Add, StepKind::Incremental, StepKind::Changed],
            vec![ErrorKind::Connection, ErrorKind::Schema, ErrorKind::Data, ErrorKind::Logic],
            vec![
                RunStatus::Running,
                RunStatus::Interrupted,
                RunStatus::Completed,
                RunStatus::CompletedWithErrors,
                RunStatus::Failed,
                RunStatus::Abandoned,
            ],
        );
        (RunRecord { meta, state }, watermark, extras)
    }

    /// The same sample in the frozen types of format 2.
    fn v2_sample() -> (v2::RunRecord, v2::WatermarkRecord, ExtrasV2) {
        use v2::*;
        let plan = |steps: Vec<StepKind>, reason: &str| Plan { steps, reason: reason.into() };
        let event = |at_ms: i64, kind: EventKind, detail: &str| RunEvent {
            at_ms,
            kind,
            pid: 4242,
            host: "host-a".into(),
            detail: detail.into(),
        };
        let meta = RunMeta {
            id: 7,
            config_path: "conf/db-sync.json".into(),
            config_fingerprint: 0x1234_5678_9abc_def0,
            source: "sqlite ./source.sqlite".into(),
            target: "postgres postgres://sync@db/erp".into(),
            started_ms: 1_767_225_600_000,
            ended_ms: Some(1_767_225_665_000),
            status: RunStatus::CompletedWithErrors,
            host: "host-a".into(),
            pid: 4242,
            events: vec![
                event(1_767_225_600_000, EventKind::Started, "2 tables, 9 tasks"),
                event(1_767_225_610_000, EventKind::Interrupted, "process 4241 ended"),
                event(1_767_225_620_000, EventKind::Resumed, "resumed at task 2/9"),
                event(1_767_225_630_000, EventKind::Replanned, "re-planned at task 2/9"),
                event(1_767_225_640_000, EventKind::Abandoned, "sample only"),
                event(1_767_225_665_000, EventKind::Finished, "completed with errors"),
            ],
            last_error: Some("2 rows refused".into()),
            active_ms: 61_500,
        };
        let items = TableState {
            survey: TableSurvey {
                source_count: 340,
                target_count: 300,
                watermark: Some(Value::Int(300)),
                source_max_modify: Some(Value::Int(2340)),
                changed: Some(100),
                null_modify: 2,
                plan: plan(vec![StepKind::Add, StepKind::Incremental], "source has more rows & trusted modify id"),
            },
            report: TableReport {
                name: "items".into(),
                source_before: 340,
                target_before: 300,
                source_after: Some(340),
                target_after: Some(339),
                changed: Some(100),
                plan: Some(plan(vec![StepKind::Add, StepKind::Incremental], "source has more rows")),
                repair: vec![StepKind::Delete, StepKind::Add],
                added: 40,
                modified: 60,
                deleted: 1,
                skipped: 3,
                errors: 2,
                duration_ms: 1_250,
                verified: Some(false),
                rows_compared: false,
            },
            mapping_fingerprint: 0xfeed_beef,
            verified: false,
        };
        let notes = TableState {
            survey: TableSurvey {
                source_count: 210,
                target_count: 200,
                watermark: Some(Value::Text("2026-01-01 00:00:00".into())),
                source_max_modify: None,
                changed: None,
                null_modify: 0,
                plan: plan(vec![StepKind::Delete, StepKind::Changed], "no modify id field"),
            },
            report: TableReport {
                name: "notes".into(),
                source_before: 210,
                target_before: 200,
                source_after: None,
                target_after: None,
                changed: None,
                plan: None,
                repair: Vec::new(),
                added: 0,
                modified: 0,
                deleted: 0,
                skipped: 0,
                errors: 0,
                duration_ms: 0,
                verified: None,
                rows_compared: false,
            },
            mapping_fingerprint: 1,
            verified: true,
        };
        let search = SearchState {
            stack: vec![
                Frame {
                    range: KeyRange { after: None, upto: Some(Key::Int(170)) },
                    source_count: 170,
                    target_count: 150,
                    depth: 1,
                    upper: false,
                },
                Frame {
                    range: KeyRange { after: Some(Key::Text("n0100".into())), upto: None },
                    source_count: 110,
                    target_count: 100,
                    depth: 2,
                    upper: true,
                },
            ],
            found: vec![Key::Int(5), Key::Text("n0007".into())],
            expected: 40,
            total: 340,
            iterations: 9,
            queries: 27,
            max_depth: 3,
            rows_read: 120,
        };
        let state = RunState {
            tables: vec![items, notes],
            tasks: vec![
                Task::Step { table: 1, kind: StepKind::Delete, repair: false },
                Task::Step { table: 0, kind: StepKind::Add, repair: true },
                Task::Verify { table: 0 },
                Task::PlanRepairs,
                Task::RepairAdd { table: 1 },
                Task::FinalVerify { table: 1 },
            ],
            position: 1,
            cursor: Some(StepCursor::Bisect { search, written: 1 }),
            errors: vec![
                ErrorEntry { kind: ErrorKind::Data, table: Some("items".into()), message: "key 17: NOT NULL".into() },
                ErrorEntry { kind: ErrorKind::Logic, table: None, message: "counts differ".into() },
            ],
            failing_batches_in_a_row: 1,
            timers: Timers {
                read: Duration { secs: 1, nanos: 500_000_000 },
                write: Duration { secs: 2, nanos: 250_000_000 },
                delete: Duration { secs: 0, nanos: 7_000 },
                compare: Duration { secs: 0, nanos: 0 },
                bisect: Duration { secs: 3, nanos: 1 },
            },
            bisect: BisectTotals { searches: 1, iterations: 9, queries: 27, max_depth: 3 },
            queries_before: 11,
            mismatched: vec![(0, 340, 339)],
        };
        let watermark = WatermarkRecord {
            identity: "sqlite ./source.sqlite|sqlite ./target.sqlite|items|items|[]".into(),
            value: Value::Int(2340),
            run_id: 7,
            at_ms: 1_767_225_660_000,
        };
        let extras = (
            vec![
                StepCursor::Keys { after: None },
                StepCursor::Keys { after: Some(Key::Int(-3)) },
                StepCursor::Modify { modify_id: Some(Value::Int(1100)), key: Some(Key::Int(100)) },
                StepCursor::Modify { modify_id: None, key: None },
                StepCursor::Copy { after: Some(Key::Text("n0042".into())) },
            ],
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Int(i64::MIN),
                Value::Float(-0.25),
                Value::Text("é".into()),
                Value::Bytes(vec![0, 1, 255]),
            ],
            vec![StepKind::Delete, StepKind::Add, StepKind::Incremental, StepKind::Changed],
            vec![ErrorKind::Connection, ErrorKind::Schema, ErrorKind::Data, ErrorKind::Logic],
            vec![
                RunStatus::Running,
                RunStatus::Interrupted,
                RunStatus::Completed,
                RunStatus::CompletedWithErrors,
                RunStatus::Failed,
                RunStatus::Abandoned,
            ],
        );
        (RunRecord { meta, state }, watermark, extras)
    }

    /// Variants added since format 1, which the format-1 sample cannot hold: sampled apart
    /// and encoded beside the record in the current format's golden file.
    fn newer_variants() -> Vec<Key> {
        vec![Key::Parts(vec![Key::Int(7), Key::Text("line".into())]), Key::Bytes(vec![0, 255])]
    }

    /// The same variants in the frozen types of format 2.
    fn newer_variants_v2() -> Vec<v2::Key> {
        vec![v2::Key::Parts(vec![v2::Key::Int(7), v2::Key::Text("line".into())]), v2::Key::Bytes(vec![0, 255])]
    }

    /// What format 3 added, which the older samples cannot hold: the live sample with
    /// retries and reconnections counted per table and the network events of the run
    /// (every kind), encoded as a run record beside the others in the golden file.
    fn format_3_additions() -> RunRecord {
        let (mut record, ..) = live_sample();
        let report = &mut record.state.tables[0].report;
        (report.retries, report.reconnects) = (3, 1);
        let event = |kind, table: Option<&str>, attempt, wait_ms| NetworkEvent {
            at_ms: 1_767_225_600_123,
            kind,
            side: "target".into(),
            table: table.map(str::to_string),
            operation: "writing rows".into(),
            cause: "connection error on target postgres://***@db:5432/erp: connection reset".into(),
            attempt,
            wait_ms,
        };
        record.state.network = vec![
            event(NetworkEventKind::Retry, Some("items"), 1, 5_000),
            event(NetworkEventKind::Reconnect, Some("items"), 0, 30_000),
            event(NetworkEventKind::GaveUp, None, 3, 0),
        ];
        record
    }

    /// `[len u32 LE][part]...`: the parts of a golden file.
    fn framed(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// The parts of a golden file written by [`framed`].
    fn unframed(mut bytes: &[u8]) -> Vec<&[u8]> {
        let mut parts = Vec::new();
        while !bytes.is_empty() {
            let (len, rest) = bytes.split_at(4);
            let (part, rest) = rest.split_at(u32::from_le_bytes(len.try_into().unwrap()) as usize);
            parts.push(part);
            bytes = rest;
        }
        parts
    }

    /// Decodes a value that must take exactly `bytes`, no more and no less.
    fn decode_exactly<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> T {
        let (value, read) = bincode::serde::decode_from_slice(bytes, bincode_config())
            .unwrap_or_else(|e| panic!("{what} does not decode: {e}"));
        assert_eq!(read, bytes.len(), "{what}: decoded {read} of {} bytes", bytes.len());
        value
    }

    fn encode_extras(extras: &impl Serialize) -> Vec<u8> {
        bincode::serde::encode_to_vec(extras, bincode_config()).expect("extras encode")
    }

    /// Index of the first differing byte, for the failure message.
    fn first_difference(a: &[u8], b: &[u8]) -> usize {
        a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
    }

    /// The golden file of the current format matches what the live types encode.
    /// `DB_SYNC_BLESS_STORE=1` writes it instead of comparing.
    #[test]
    fn current_format_layout_is_frozen() {
        let (record, watermark, extras) = live_sample();
        let additions = format_3_additions();
        let bytes = framed(&[
            encode_run(&record.meta, &record.state),
            encode_watermark(&watermark),
            encode_extras(&extras),
            encode_extras(&newer_variants()),
            encode_run(&additions.meta, &additions.state),
        ]);
        let decoded = decode_run(&encode_run(&additions.meta, &additions.state), "additions").expect("decodes");
        assert_eq!(format!("{decoded:?}"), format!("{additions:?}"));
        let path = fixture(&format!("store-format-{FORMAT_VERSION}.bin"));
        if std::env::var_os(BLESS).is_some() {
            std::fs::write(&path, &bytes).expect("write golden file");
            eprintln!("wrote {}", path.display());
            return;
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; create it with `{BLESS}=1 cargo test --lib checkpoint`", path.display())
        });
        assert!(
            golden == bytes,
            "a stored type changed: the live types no longer encode the layout of store format {FORMAT_VERSION} \
             ({} differs from the sample at byte {} of {}; {} bytes now). Records of format {FORMAT_VERSION} \
             already on disk would no longer decode. Freeze the current layout as v{FORMAT_VERSION}.rs (the \
             stored types as they were before your change, written like v1.rs, with From impls into the \
             live types), add StoredRun::V{next} and StoredWatermark::V{next} for the live types, set FORMAT_VERSION to {next}, \
             and regenerate with `{BLESS}=1 cargo test --lib checkpoint` (that writes store-format-{next}.bin; \
             keep store-format-{FORMAT_VERSION}.bin as the fixture of the frozen v{FORMAT_VERSION}, checked by \
             tests like format_2_layout_is_frozen and format_2_records_decode_and_migrate). Point the older \
             frozen formats' migrations at v{FORMAT_VERSION}'s types, so only v{FORMAT_VERSION} migrates into \
             the live types.",
            path.display(),
            first_difference(&golden, &bytes),
            golden.len(),
            bytes.len(),
            next = FORMAT_VERSION + 1,
        );
    }

    /// Records written in format 1 (through the frozen types, byte for byte what db-sync
    /// of format 1 wrote, kept in `store-format-1.bin`) decode and migrate through format
    /// 2's frozen types into the live types with every value intact.
    #[test]
    fn format_1_records_decode_and_migrate() {
        let (record, watermark, extras) = v1_sample();
        let run_bytes =
            seal(bincode::serde::encode_to_vec(StoredRun::V1(record), bincode_config()).expect("v1 run encodes"));
        let watermark_bytes = seal(
            bincode::serde::encode_to_vec(StoredWatermark::V1(watermark), bincode_config()).expect("v1 wm encodes"),
        );
        let bytes = framed(&[run_bytes.clone(), watermark_bytes.clone(), encode_extras(&extras)]);
        // Format 1 is released: its golden file is written once and never blessed again.
        let path = fixture("store-format-1.bin");
        if std::env::var_os(BLESS).is_some() && !path.exists() {
            std::fs::write(&path, &bytes).expect("write golden file");
        }
        let golden = std::fs::read(&path).expect("store-format-1.bin");
        assert!(
            golden == bytes,
            "the frozen types of format 1 changed (v1.rs); restore them: released stores hold this layout"
        );

        let (expected, expected_watermark, expected_extras) = live_sample();
        let migrated = decode_run(&run_bytes, "sample").expect("v1 run decodes");
        assert_eq!(format!("{migrated:?}"), format!("{expected:?}"));
        let migrated = decode_watermark(&watermark_bytes, "sample").expect("v1 watermark decodes");
        assert_eq!(format!("{migrated:?}"), format!("{expected_watermark:?}"));
        let (cursors, values, steps, errors, statuses) = extras.clone();
        let migrated: Extras = (
            cursors.into_iter().map(|v| v2::StepCursor::from(v).into()).collect(),
            values.into_iter().map(|v| v2::Value::from(v).into()).collect(),
            steps.into_iter().map(|v| v2::StepKind::from(v).into()).collect(),
            errors.into_iter().map(|v| v2::ErrorKind::from(v).into()).collect(),
            statuses.into_iter().map(|v| v2::RunStatus::from(v).into()).collect(),
        );
        assert_eq!(format!("{migrated:?}"), format!("{expected_extras:?}"));

        // The first step on its own: format 1 migrates into format 2's frozen types, which
        // hold the same sample.
        let (record, watermark, _) = v1_sample();
        let (expected, expected_watermark, expected_extras) = v2_sample();
        assert_eq!(format!("{:?}", v2::RunRecord::from(record)), format!("{expected:?}"));
        assert_eq!(format!("{:?}", v2::WatermarkRecord::from(watermark)), format!("{expected_watermark:?}"));
        let (cursors, values, steps, errors, statuses) = extras;
        let migrated: ExtrasV2 = (
            cursors.into_iter().map(Into::into).collect(),
            values.into_iter().map(Into::into).collect(),
            steps.into_iter().map(Into::into).collect(),
            errors.into_iter().map(Into::into).collect(),
            statuses.into_iter().map(Into::into).collect(),
        );
        assert_eq!(format!("{migrated:?}"), format!("{expected_extras:?}"));
    }

    /// The frozen types of format 2 (v2.rs) encode the sample byte for byte as db-sync of
    /// format 2 wrote it with its live types (`store-format-2.bin`, blessed while format 2
    /// was current and never since).
    #[test]
    fn format_2_layout_is_frozen() {
        let (record, watermark, extras) = v2_sample();
        let bytes = framed(&[
            seal(bincode::serde::encode_to_vec(StoredRun::V2(record), bincode_config()).expect("v2 run encodes")),
            seal(bincode::serde::encode_to_vec(StoredWatermark::V2(watermark), bincode_config()).expect("v2 wm")),
            encode_extras(&extras),
            encode_extras(&newer_variants_v2()),
        ]);
        let path = fixture("store-format-2.bin");
        let golden = std::fs::read(&path).expect("store-format-2.bin");
        assert!(
            golden == bytes,
            "the frozen types of format 2 (v2.rs) no longer encode {} (first difference at byte {} of {}; {} \
             bytes now); restore them: released stores hold this layout",
            path.display(),
            first_difference(&golden, &bytes),
            golden.len(),
            bytes.len(),
        );
    }

    /// Records written in format 2 (the bytes of `store-format-2.bin`) decode through the
    /// `V2` envelope and the frozen types of format 2, using every byte, and migrate into
    /// the live types with every value intact.
    #[test]
    fn format_2_records_decode_and_migrate() {
        let golden = std::fs::read(fixture("store-format-2.bin")).expect("store-format-2.bin");
        let parts = unframed(&golden);
        assert_eq!(parts.len(), 4, "run, watermark, extras, newer variants");
        let (run_bytes, watermark_bytes) = (parts[0], parts[1]);

        let payload = unseal(run_bytes, "run").expect("checksum");
        let stored: StoredRun = decode_exactly(payload, "format-2 run");
        assert!(matches!(stored, StoredRun::V2(_)), "a format-2 run is read as StoredRun::V2");
        let payload = unseal(watermark_bytes, "watermark").expect("checksum");
        let stored: StoredWatermark = decode_exactly(payload, "format-2 watermark");
        assert!(matches!(stored, StoredWatermark::V2(_)), "a format-2 watermark is read as StoredWatermark::V2");

        let (expected, expected_watermark, expected_extras) = live_sample();
        let migrated = decode_run(run_bytes, "sample").expect("v2 run decodes");
        assert_eq!(format!("{migrated:?}"), format!("{expected:?}"));
        let migrated = decode_watermark(watermark_bytes, "sample").expect("v2 watermark decodes");
        assert_eq!(format!("{migrated:?}"), format!("{expected_watermark:?}"));

        let (cursors, values, steps, errors, statuses): ExtrasV2 = decode_exactly(parts[2], "format-2 extras");
        let migrated: Extras = (
            cursors.into_iter().map(Into::into).collect(),
            values.into_iter().map(Into::into).collect(),
            steps.into_iter().map(Into::into).collect(),
            errors.into_iter().map(Into::into).collect(),
            statuses.into_iter().map(Into::into).collect(),
        );
        assert_eq!(format!("{migrated:?}"), format!("{expected_extras:?}"));
        let keys: Vec<v2::Key> = decode_exactly(parts[3], "format-2 newer variants");
        let migrated: Vec<Key> = keys.into_iter().map(Into::into).collect();
        assert_eq!(migrated, newer_variants());
    }

    /// The borrowing envelope the store writes with encodes exactly like the owned one
    /// the store reads with.
    #[test]
    fn borrowed_envelope_encodes_like_owned() {
        let (record, ..) = live_sample();
        let borrowed = encode_run(&record.meta, &record.state);
        let owned = seal(bincode::serde::encode_to_vec(StoredRun::V3(record), bincode_config()).unwrap());
        assert_eq!(borrowed, owned);
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// The store written by the release of format 1 (`tests/fixtures/store-v1`) opens: it
    /// is marked with the current format, its runs, cursor and watermark read back, and a
    /// record rewritten in the current format reads back after reopening.
    #[test]
    fn store_of_format_1_opens_and_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture("store-v1/.db-sync"), dir.path());
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
            let runs = store.runs().unwrap();
            assert_eq!(runs.iter().map(|r| r.meta.id).collect::<Vec<_>>(), vec![1, 2]);
            assert_eq!(runs[0].meta.status, RunStatus::Completed);
            assert_eq!(runs[0].state.table_names(), vec!["items", "notes"]);
            assert_eq!(runs[0].state.tables[0].report.added, 300);
            assert_eq!(runs[1].meta.status, RunStatus::Running, "killed, not yet recovered");
            assert_eq!(
                runs[1].state.cursor,
                Some(StepCursor::Modify { modify_id: Some(Value::Int(1100)), key: Some(Key::Int(100)) })
            );
            assert_eq!(runs[1].state.tables[0].survey.watermark, Some(Value::Int(300)));
            let watermarks = store.watermarks().unwrap();
            assert_eq!(watermarks.len(), 1, "{watermarks:?}");
            assert_eq!((watermarks[0].0.as_str(), &watermarks[0].1.value), ("items", &Value::Int(300)));
            let identity = watermarks[0].1.identity.clone();
            assert_eq!(store.watermark("items", &identity).unwrap(), Some(Value::Int(300)));
            store.recover_dead_runs().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let run = store.load_run(2).unwrap();
        assert_eq!(run.meta.status, RunStatus::Interrupted);
        assert_eq!(run.meta.interruptions(), 1);
        assert_eq!(store.unfinished_run().unwrap().map(|r| r.meta.id), Some(2));
    }

    /// A store of format 2 (marked 2, holding the format-2 records of
    /// `store-format-2.bin` byte for byte) opens: it is marked with the current format, its
    /// run and watermark read back through the frozen types of format 2, and the run,
    /// once rewritten, is stored in the current format and reads back the same.
    #[test]
    fn store_of_format_2_opens_and_upgrades() {
        let golden = std::fs::read(fixture("store-format-2.bin")).expect("store-format-2.bin");
        let parts = unframed(&golden);
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mark = FormatRecord { version: 2, written_by: "format-2 release".into() };
            let payload = bincode::serde::encode_to_vec(&mark, bincode_config()).unwrap();
            store.db.insert(KEY_FORMAT, seal(payload)).unwrap();
            store.db.insert(run_key(7), parts[0]).unwrap();
            store.db.insert([WATERMARK_PREFIX, b"items"].concat(), parts[1]).unwrap();
            store.db.flush().unwrap();
            assert_eq!(store.format_version().unwrap(), 2);
        }
        let (expected, expected_watermark, _) = live_sample();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
            let run = store.load_run(7).unwrap();
            assert_eq!(format!("{run:?}"), format!("{expected:?}"));
            let watermarks = store.watermarks().unwrap();
            assert_eq!(watermarks.len(), 1, "{watermarks:?}");
            assert_eq!(watermarks[0].0, "items");
            assert_eq!(format!("{:?}", watermarks[0].1), format!("{expected_watermark:?}"));
            assert_eq!(store.watermark("items", &expected_watermark.identity).unwrap(), Some(Value::Int(2340)));

            store.save_run(&run.meta, &run.state).unwrap();
            let rewritten = store.db.get(run_key(7)).unwrap().unwrap();
            assert_eq!(&*rewritten, encode_run(&expected.meta, &expected.state).as_slice());
            let stored: StoredRun = decode_exactly(unseal(&rewritten, "run").unwrap(), "rewritten run");
            assert!(matches!(stored, StoredRun::V3(_)), "rewritten in the current format");
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(format!("{:?}", store.load_run(7).unwrap()), format!("{expected:?}"));
    }
}
