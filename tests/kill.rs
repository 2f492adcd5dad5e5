//! The randomized crash test: a real `db-sync` child process syncing the ERP demo data
//! set at scale 3 (about 680,000 source rows, ten table entries, needing adds, deletes
//! and updates) is
//! SIGKILLed at random moments, at least 20 times during one run, and resumed each time.
//! At the end the target equals the source row by row, every watermark equals the
//! source's largest modify ID, and the audit shows one run with its interruptions.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, text};
use db_sync::demo;

/// Kills recorded as interruptions of the run before it may finish.
const KILLS: u64 = 20;

fn runs(ws: &Workspace) -> serde_json::Value {
    let out = ws.run(&["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Copies every other row of each demo table into the target (foreign keys off: the
/// copy is deliberately incomplete), then changes the source.
fn prepare(ws: &Workspace) -> u64 {
    let (config, rows) = demo::build(ws.dir.path(), 3.0).unwrap();
    let target = rusqlite::Connection::open(ws.path("target.sqlite")).unwrap();
    target
        .execute_batch(&format!(
            "PRAGMA foreign_keys = OFF;
             ATTACH '{}' AS src;
             INSERT INTO currency SELECT * FROM src.currency;
             INSERT INTO terms_of_payment SELECT * FROM src.terms_of_payment;
             INSERT INTO company SELECT * FROM src.company WHERE id % 2 = 0;
             INSERT INTO product SELECT * FROM src.product WHERE id % 2 = 0;
             INSERT INTO orders SELECT * FROM src.orders WHERE id % 3 <> 0;
             INSERT INTO order_row SELECT * FROM src.order_row WHERE id % 3 = 0;
             INSERT INTO invoice SELECT * FROM src.invoice WHERE id % 5 <> 0;
             INSERT INTO invoice_row SELECT * FROM src.invoice_row WHERE id % 3 = 1;
             DETACH src;",
            ws.path("source.sqlite").display()
        ))
        .unwrap();
    let mut source = rusqlite::Connection::open(ws.path("source.sqlite")).unwrap();
    demo::mutate_source(&mut source, 11).unwrap();
    // Small batches: many checkpoints, many places to be killed.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "\"max_delete_percent\": 10",
        "\"max_delete_percent\": 100, \"batch_size\": 1000, \"id_array_batch_size\": 5000",
    );
    std::fs::write(&config, text).unwrap();
    rows
}

/// SIGKILL at random moments, resume, repeat; then compare everything.
#[test]
fn random_sigkills_during_a_large_multi_table_sync() {
    let ws = Workspace::new();
    let rows = prepare(&ws);
    assert!(rows >= 200_000);
    let mut rng = demo::Rng::new(std::process::id() as u64 ^ 0x5eed);
    let mut kills = 0;
    let mut interruptions = 0;
    let mut run_exists = false;
    let started = Instant::now();
    loop {
        let command = if run_exists { "resume" } else { "run" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_db-sync"))
            .args([command, "--progress", "off"])
            .current_dir(ws.dir.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let finishing = interruptions >= KILLS;
        if !finishing {
            std::thread::sleep(Duration::from_millis(30 + rng.below(200) as u64));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            assert!(
                finishing,
                "the run finished after only {interruptions} interruptions; the workload is too small\n{}",
                text(&out)
            );
            break;
        }
        if finishing {
            panic!("final resume failed\n{}", text(&out));
        }
        // Between processes the store is free: see what was recorded.
        let list = runs(&ws);
        let list = list.as_array().unwrap();
        assert!(list.len() <= 1, "one run only: {list:?}");
        if let Some(run) = list.first() {
            run_exists = true;
            interruptions = run["interruptions"].as_u64().unwrap();
        }
        assert!(kills < 300, "no progress after {kills} kills");
    }
    eprintln!("{kills} kills, {interruptions} interruptions recorded, {:.1}s", started.elapsed().as_secs_f64());

    let (compared, diffs) = demo::compare_demo(&ws.path("source.sqlite"), &ws.path("target.sqlite")).unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    assert!(compared >= 200_000);

    let list = runs(&ws);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "completed");
    assert!(list[0]["interruptions"].as_u64().unwrap() >= KILLS, "{list:?}");
    let out = ws.run(&["show", "1"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("interruptions: {}", list[0]["interruptions"])), "{shown}");

    // Every table entry's watermark is the largest modify ID of its source rows.
    let watermarks = db_sync::checkpoint::Store::open(&ws.path(".db-sync")).unwrap().watermarks().unwrap();
    let source = rusqlite::Connection::open(ws.path("source.sqlite")).unwrap();
    let config = db_sync::config::Config::load(&ws.path("db-sync.json")).unwrap();
    assert_eq!(watermarks.len(), config.tables.len(), "{watermarks:?}");
    for table in &config.tables {
        let filter: String = table
            .filter
            .iter()
            .map(|(c, v)| {
                format!(
                    " AND {c} = '{}'",
                    match v {
                        db_sync::model::Value::Text(s) => s.clone(),
                        other => other.to_string(),
                    }
                )
            })
            .collect();
        let max: i64 = source
            .query_row(&format!("SELECT max(modify_id) FROM {} WHERE 1 = 1{filter}", table.source_table), [], |r| {
                r.get(0)
            })
            .unwrap();
        let (_, record) = watermarks.iter().find(|(name, _)| name == &table.name).expect("watermark stored");
        assert_eq!(record.value, db_sync::model::Value::Int(max), "watermark of {}", table.name);
    }

    // Rows redone: the audit counters against an uninterrupted run of the same sync.
    let reference = Workspace::new();
    prepare(&reference);
    reference.sync_expect(0);
    let total = |w: &Workspace| {
        let detail: serde_json::Value = serde_json::from_slice(&w.run(&["show", "1", "--json"]).stdout).unwrap();
        ["recordCountAllAdded", "recordCountAllModified", "recordCountAllDeleted"]
            .iter()
            .map(|k| detail["metrics"][k].as_u64().unwrap())
            .sum::<u64>()
    };
    let (interrupted, clean) = (total(&ws), total(&reference));
    let interruptions = list[0]["interruptions"].as_u64().unwrap();
    eprintln!(
        "rows changed: {clean} uninterrupted, {interrupted} recorded with {interruptions} interruptions: \
         {} rows redone in all, {:.1} per resume",
        clean.saturating_sub(interrupted),
        clean.saturating_sub(interrupted) as f64 / interruptions as f64
    );
    assert!(interrupted <= clean);
    assert!(clean - interrupted <= interruptions * 1000, "at most one batch redone per interruption");
}
