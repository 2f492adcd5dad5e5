//! Shared helpers of the integration tests: SQLite fixtures, running the real `db-sync`
//! binary, and row-by-row comparison of two tables.

#![allow(dead_code)]

pub mod pg;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;
use rusqlite::types::Value;

/// A temporary folder holding a source, a target and a config.
pub struct Workspace {
    /// Keeps the folder alive.
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A new empty workspace.
    pub fn new() -> Workspace {
        Workspace { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// Path of a file inside the workspace.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates (or opens) a SQLite database in the workspace and runs `sql` on it.
    pub fn db(&self, name: &str, sql: &str) -> Connection {
        let conn = Connection::open(self.path(name)).expect("open sqlite");
        conn.execute_batch(sql).expect("fixture sql");
        conn
    }

    /// Writes `db-sync.json`.
    pub fn config(&self, json: &str) -> PathBuf {
        let path = self.path("db-sync.json");
        std::fs::write(&path, json).expect("write config");
        path
    }

    /// Runs `db-sync` with `args` in the workspace folder.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_db-sync"))
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("DB_SYNC_LOG")
            .output()
            .expect("run db-sync")
    }

    /// Runs `db-sync` with `args` in the workspace folder, with extra environment
    /// variables (`DB_SYNC_LOG`, secrets for `${VAR}`).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_db-sync"))
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("DB_SYNC_LOG")
            .envs(env.iter().copied())
            .output()
            .expect("run db-sync")
    }

    /// Runs `db-sync run --progress off` and asserts the exit code.
    pub fn sync_expect(&self, code: i32) -> Output {
        let out = self.run(&["run", "--progress", "off"]);
        assert_eq!(out.status.code(), Some(code), "db-sync run:\n{}", text(&out));
        out
    }

    /// SHA-like fingerprint of a file's bytes (to prove nothing was written).
    pub fn file_hash(&self, name: &str) -> u64 {
        let bytes = std::fs::read(self.path(name)).expect("read file");
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
    }
}

/// stdout and stderr of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// All rows of `table` ordered by `key`, with `columns`, optionally filtered.
pub fn dump(conn: &Connection, table: &str, columns: &str, filter: &str) -> Vec<Vec<Value>> {
    let sql = format!("SELECT {columns} FROM \"{table}\" {filter} ORDER BY 1 COLLATE BINARY");
    let mut stmt = conn.prepare(&sql).expect("dump query");
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .expect("dump")
        .collect::<Result<_, _>>()
        .expect("dump rows")
}

/// Asserts that two tables hold the same rows, naming the first difference.
pub fn assert_same_rows(a: &[Vec<Value>], b: &[Vec<Value>], what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "{what}: first differing row");
    }
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
}

/// Opens a database read-only for checks.
pub fn open(path: &Path) -> Connection {
    Connection::open(path).expect("open sqlite")
}

/// Asserts that `secret` appears in none of `outputs` (stdout and stderr) and in no file
/// under `dir`, read as raw bytes (the state store included). Returns how many files it
/// searched.
pub fn assert_secret_absent(secret: &str, outputs: &[&Output], dir: &Path) -> usize {
    for out in outputs {
        assert!(!text(out).contains(secret), "the secret leaked into the output:\n{}", text(out));
    }
    let mut folders: Vec<PathBuf> = if dir.exists() { vec![dir.to_path_buf()] } else { Vec::new() };
    let mut files = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).expect("read file");
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the secret leaked into {}",
                    path.display()
                );
            }
        }
    }
    files
}
