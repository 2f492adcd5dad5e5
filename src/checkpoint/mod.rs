//! The state store: one sled database per state directory holding every run (its plan,
//! position, counters, errors and history) and the per-table watermarks. A run's record
//! is rewritten and flushed after every target commit, so a process killed at any
//! instant resumes from its last committed batch.
//!
//! Records are versioned and checksummed; a record that does not decode is an error naming
//! the store and the way out, never a silent fresh start. Only one process opens a store at
//! a time (sled holds an exclusive file lock, which the kernel releases when the process
//! dies); `owner.json` beside it tells others who holds it.
//!
//! The layout of each format is frozen. Format 3 (written now) encodes the live types.
//! Older formats are read through frozen copies of the types they stored and migrated
//! step by step into the live types: format 2 through [`v2`] (v2 → live), format 1
//! through [`v1`] (v1 → v2 → live). When a live type changes, a new format freezes the
//! current layout and only the newest migration is edited. A store of an older format
//! is marked with the current one when opened, so an older db-sync refuses it instead of
//! misreading it. The golden test in `tests.rs` fails when a live type's layout changes
//! without a new format; the golden files of formats 1 and 2 check their frozen copies.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{EngineError, Observer, RunState, Watermarks};
use crate::model::Value;

pub mod v1;
pub mod v2;

/// Format of the store this version writes. Stores of older formats are read (their
/// records migrated) and marked with this format when opened; newer ones are refused.
pub const FORMAT_VERSION: u32 = 3;

/// FNV-1a, 64 bit: record checksums and fingerprints (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A timestamp for people: local time, to the second.
pub fn format_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => format!("@{ms}"),
    }
}

/// sled's answer when another handle holds the store's file lock.
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}

/// The host name, for lock and audit records.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another live process holds the store.
    #[error("{0}")]
    Busy(String),
    /// A record or the store itself does not decode.
    #[error(
        "state store {path} is damaged ({detail}); move the folder aside to start fresh (its run history is lost) \
         or restore it from a backup"
    )]
    Corrupt {
        /// Store folder.
        path: PathBuf,
        /// What failed to decode.
        detail: String,
    },
    /// Written by a newer db-sync.
    #[error(
        "state store {path} was written by a newer db-sync (format {found}, this version reads {supported}); upgrade db-sync"
    )]
    NewerFormat {
        /// Store folder.
        path: PathBuf,
        /// Format found.
        found: u32,
        /// Format supported.
        supported: u32,
    },
    /// The folder or database cannot be opened or written.
    #[error("state store {path}: {detail}")]
    Io {
        /// Store folder.
        path: PathBuf,
        /// The failure.
        detail: String,
    },
    /// No run with that id.
    #[error("no run {0} in the state store")]
    NoSuchRun(u64),
}

/// Lifecycle of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Running now, or its process died (detected when the store is next opened).
    Running,
    /// Stopped by a signal or a crash; resumable.
    Interrupted,
    /// Finished, every table verified.
    Completed,
    /// Finished with errors.
    CompletedWithErrors,
    /// Stopped by an error; resumable once the cause is fixed.
    Failed,
    /// Given up with `--abandon`.
    Abandoned,
}

impl RunStatus {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Completed => "completed",
            RunStatus::CompletedWithErrors => "completed with errors",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
        }
    }

    /// True while the run may still be resumed.
    pub fn is_unfinished(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Interrupted | RunStatus::Failed)
    }
}

/// Something that happened to a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunEvent {
    /// When.
    pub at_ms: i64,
    /// What.
    pub kind: EventKind,
    /// Process that recorded it.
    pub pid: u32,
    /// Host of that process.
    pub host: String,
    /// Free text (position, reason).
    pub detail: String,
}

/// Kinds of [`RunEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The run was planned and started.
    Started,
    /// The run stopped before finishing (signal, crash, error).
    Interrupted,
    /// A process continued the run.
    Resumed,
    /// The run was re-planned on resume (`--replan`).
    Replanned,
    /// The run finished.
    Finished,
    /// The run was abandoned.
    Abandoned,
}

/// Everything about a run except its state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id, increasing from 1.
    pub id: u64,
    /// Config file the run used.
    pub config_path: String,
    /// Fingerprint of that config.
    pub config_fingerprint: u64,
    /// Source description (no secrets).
    pub source: String,
    /// Target description (no secrets).
    pub target: String,
    /// Start time.
    pub started_ms: i64,
    /// End time, once finished.
    pub ended_ms: Option<i64>,
    /// Status.
    pub status: RunStatus,
    /// Host of the process running it now (or last).
    pub host: String,
    /// Pid of that process.
    pub pid: u32,
    /// History.
    pub events: Vec<RunEvent>,
    /// Why it stopped, if it stopped on an error.
    pub last_error: Option<String>,
    /// Milliseconds spent running, over all processes.
    pub active_ms: u64,
}

impl RunMeta {
    /// Appends an event recorded by this process.
    pub fn event(&mut self, kind: EventKind, detail: impl Into<String>) {
        self.events.push(RunEvent {
            at_ms: now_ms(),
            kind,
            pid: std::process::id(),
            host: host_name(),
            detail: detail.into(),
        });
    }

    /// Times the run was interrupted.
    pub fn interruptions(&self) -> usize {
        self.events.iter().filter(|e| e.kind == EventKind::Interrupted).count()
    }
}

/// A run as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Identity and history.
    pub meta: RunMeta,
    /// Plan, position, counters, errors.
    pub state: RunState,
}

/// Versioned envelope of a stored run. New versions are added as new variants at the
/// end (bincode stores the variant's position); old ones keep decoding, through frozen
/// types, into the live [`RunRecord`].
#[derive(Serialize, Deserialize)]
enum StoredRun {
    /// Format 1, frozen; migrated through format 2's frozen types.
    V1(v1::RunRecord),
    /// Format 2, frozen.
    V2(v2::RunRecord),
    /// Format 3: the live types.
    V3(RunRecord),
}

impl From<StoredRun> for RunRecord {
    fn from(stored: StoredRun) -> RunRecord {
        match stored {
            StoredRun::V1(record) => v2::RunRecord::from(record).into(),
            StoredRun::V2(record) => record.into(),
            StoredRun::V3(record) => record,
        }
    }
}

/// Borrowing twin of [`StoredRun`]: serializes `V3` identically, without cloning the
/// state. Only the current format is ever written.
#[derive(Serialize)]
enum StoredRunRef<'a> {
    /// Never written; holds format 1's position.
    #[allow(dead_code)]
    V1(()),
    /// Never written; holds format 2's position so `V3` encodes as variant 2.
    #[allow(dead_code)]
    V2(()),
    /// Format 3.
    V3(RunRecordRef<'a>),
}

#[derive(Serialize)]
struct RunRecordRef<'a> {
    meta: &'a RunMeta,
    state: &'a RunState,
}

/// A stored watermark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatermarkRecord {
    /// What the watermark belongs to: source, target, tables and filter.
    pub identity: String,
    /// Largest source modify ID verified in the target.
    pub value: Value,
    /// Run that set it.
    pub run_id: u64,
    /// When.
    pub at_ms: i64,
}

/// Versioned envelope of a stored watermark, like [`StoredRun`].
#[derive(Serialize, Deserialize)]
enum StoredWatermark {
    /// Format 1, frozen; migrated through format 2's frozen types.
    V1(v1::WatermarkRecord),
    /// Format 2, frozen.
    V2(v2::WatermarkRecord),
    /// Format 3: the live types.
    V3(WatermarkRecord),
}

impl From<StoredWatermark> for WatermarkRecord {
    fn from(stored: StoredWatermark) -> WatermarkRecord {
        match stored {
            StoredWatermark::V1(record) => v2::WatermarkRecord::from(record).into(),
            StoredWatermark::V2(record) => record.into(),
            StoredWatermark::V3(record) => record,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct FormatRecord {
    version: u32,
    written_by: String,
}

/// Who holds the store, written to `owner.json` when a process opens it and, during a
/// run, at most once a second as the run goes on: what `runs` and `show` print while the
/// store is locked. JSON, read by other processes; fields added later default.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Owner {
    /// Process ID of the holder.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// The run it works on, once it has one.
    pub run_id: Option<u64>,
    /// When it opened the store (Unix milliseconds).
    pub since_ms: i64,
    /// When the run was first started (Unix milliseconds).
    #[serde(default)]
    pub run_started_ms: Option<i64>,
    /// What the run is doing, such as `task 3/8 (add step of customers)`, with its rows.
    #[serde(default)]
    pub activity: Option<String>,
    /// When `activity` was written (Unix milliseconds).
    #[serde(default)]
    pub updated_ms: Option<i64>,
}

impl Owner {
    /// One line for a user: `run 12 is in progress since 2026-12-01 03:00:01 (pid 123 on
    /// host h): task 3/8 (...), as of 2 s ago`.
    pub fn describe(&self) -> String {
        let Some(run) = self.run_id else {
            return format!(
                "db-sync (pid {} on host {}) holds the state store since {}",
                self.pid,
                self.host,
                format_ms(self.since_ms)
            );
        };
        let since = format_ms(self.run_started_ms.unwrap_or(self.since_ms));
        let mut text = format!("run {run} is in progress since {since} (pid {} on host {})", self.pid, self.host);
        if let Some(activity) = &self.activity {
            let age = self.updated_ms.map(|u| (now_ms() - u).max(0) / 1000).unwrap_or(0);
            text.push_str(&format!(": {activity}, as of {age} s ago"));
        }
        text
    }
}

const KEY_FORMAT: &[u8] = b"format";
const RUN_PREFIX: &[u8] = b"run/";
const WATERMARK_PREFIX: &[u8] = b"wm/";

fn run_key(id: u64) -> Vec<u8> {
    let mut key = RUN_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// `[checksum u64 LE][bincode payload]`.
fn seal(payload: Vec<u8>) -> Vec<u8> {
    let mut out = fnv1a(&payload).to_le_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Encodes a run record in the current format, sealed.
fn encode_run(meta: &RunMeta, state: &RunState) -> Vec<u8> {
    let stored = StoredRunRef::V3(RunRecordRef { meta, state });
    seal(bincode::serde::encode_to_vec(&stored, bincode_config()).expect("run record encodes"))
}

/// Decodes a sealed run record of any format this version reads.
fn decode_run(bytes: &[u8], what: &str) -> Result<RunRecord, String> {
    let payload = unseal(bytes, what)?;
    let (stored, _): (StoredRun, _) =
        bincode::serde::decode_from_slice(payload, bincode_config()).map_err(|e| format!("{what}: {e}"))?;
    Ok(stored.into())
}

/// Encodes a watermark record in the current format, sealed.
fn encode_watermark(record: &WatermarkRecord) -> Vec<u8> {
    let stored = StoredWatermark::V3(record.clone());
    seal(bincode::serde::encode_to_vec(&stored, bincode_config()).expect("watermark encodes"))
}

/// Decodes a sealed watermark record of any format this version reads.
fn decode_watermark(bytes: &[u8], what: &str) -> Result<WatermarkRecord, String> {
    let payload = unseal(bytes, what)?;
    let (stored, _): (StoredWatermark, _) =
        bincode::serde::decode_from_slice(payload, bincode_config()).map_err(|e| format!("{what}: {e}"))?;
    Ok(stored.into())
}

fn unseal<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    if bytes.len() < 8 {
        return Err(format!("{what}: record too short"));
    }
    let (sum, payload) = bytes.split_at(8);
    if u64::from_le_bytes(sum.try_into().expect("8 bytes")) != fnv1a(payload) {
        return Err(format!("{what}: checksum mismatch"));
    }
    Ok(payload)
}

/// An open state store.
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    /// When this process opened it (Unix milliseconds), for `owner.json`.
    opened_ms: i64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails with [`StoreError::Busy`] when
    /// another live process holds it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io = |detail: String| StoreError::Io { path: dir.to_path_buf(), detail };
        std::fs::create_dir_all(dir).map_err(|e| io(format!("cannot create the folder: {e}")))?;
        // A store this process has just closed may stay locked for a moment while sled's
        // background work lets go of it: wait up to a second before calling it busy.
        let mut attempts = 0;
        let opened = loop {
            // No background flusher thread: every write here is flushed before it returns.
            match sled::Config::new().path(dir.join("db")).flush_every_ms(None).open() {
                Err(sled::Error::Io(e)) if is_lock_error(&e) && attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other,
            }
        };
        let db = match opened {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                return Err(StoreError::Busy(Self::busy_message(dir)));
            }
            Err(sled::Error::Corruption { .. }) => {
                return Err(StoreError::Corrupt { path: dir.to_path_buf(), detail: "sled reports corruption".into() });
            }
            Err(e) => return Err(io(e.to_string())),
        };
        let store = Store { db, dir: dir.to_path_buf(), opened_ms: now_ms() };
        store.check_format()?;
        store.write_owner(None)?;
        Ok(store)
    }

    fn busy_message(dir: &Path) -> String {
        match Self::holder(dir) {
            Some(owner @ Owner { run_id: Some(_), .. }) => format!("{}; wait for it to finish", owner.describe()),
            Some(Owner { pid, host, run_id: None, .. }) => {
                format!("the state store {} is in use (pid {pid} on host {host}); try again later", dir.display())
            }
            None => format!("the state store {} is in use by another db-sync process; try again later", dir.display()),
        }
    }

    /// Who holds (or last held) the store in `dir`, from its `owner.json`.
    pub fn holder(dir: &Path) -> Option<Owner> {
        std::fs::read(dir.join("owner.json")).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn write_owner(&self, run_id: Option<u64>) -> Result<(), StoreError> {
        let owner = Owner {
            pid: std::process::id(),
            host: host_name(),
            run_id,
            since_ms: self.opened_ms,
            run_started_ms: None,
            activity: None,
            updated_ms: None,
        };
        self.put_owner(&owner)
    }

    /// Writes `owner.json` whole, through a temporary file, so a reader never sees half.
    fn put_owner(&self, owner: &Owner) -> Result<(), StoreError> {
        let error = |e: std::io::Error| StoreError::Io {
            path: self.dir.clone(),
            detail: format!("cannot write owner.json: {e}"),
        };
        let temporary = self.dir.join("owner.json.tmp");
        std::fs::write(&temporary, serde_json::to_vec(owner).expect("owner serializes")).map_err(error)?;
        std::fs::rename(&temporary, self.dir.join("owner.json")).map_err(error)
    }

    /// Records which run this process is working on, for `Busy` messages to others.
    pub fn set_owner_run(&self, run_id: u64) -> Result<(), StoreError> {
        self.write_owner(Some(run_id))
    }

    /// Records what the run `meta` is doing, for `runs` and `show` in other processes.
    pub fn set_owner_activity(&self, meta: &RunMeta, activity: String) -> Result<(), StoreError> {
        self.put_owner(&Owner {
            pid: std::process::id(),
            host: host_name(),
            run_id: Some(meta.id),
            since_ms: self.opened_ms,
            run_started_ms: Some(meta.started_ms),
            activity: Some(activity),
            updated_ms: Some(now_ms()),
        })
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: self.dir.clone(), detail: detail.into() }
    }

    fn io(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Corruption { .. } => self.corrupt("sled reports corruption"),
            e => StoreError::Io { path: self.dir.clone(), detail: e.to_string() },
        }
    }

    fn check_format(&self) -> Result<(), StoreError> {
        match self.db.get(KEY_FORMAT).map_err(|e| self.io(e))? {
            Some(bytes) => {
                let payload = unseal(&bytes, "format record").map_err(|d| self.corrupt(d))?;
                let (format, _): (FormatRecord, _) = bincode::serde::decode_from_slice(payload, bincode_config())
                    .map_err(|e| self.corrupt(format!("format record: {e}")))?;
                if format.version > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: self.dir.clone(),
                        found: format.version,
                        supported: FORMAT_VERSION,
                    });
                }
                if format.version < FORMAT_VERSION {
                    // Older records stay as they are and are migrated when read; a record
                    // is rewritten in the current format when its run next changes. The
                    // new mark makes an older db-sync refuse the store instead of failing
                    // on a record it cannot decode.
                    tracing::info!(
                        store = %self.dir.display(),
                        from = format.version,
                        to = FORMAT_VERSION,
                        "state store upgraded"
                    );
                    self.write_format()?;
                }
                Ok(())
            }
            None => self.write_format(),
        }
    }

    fn write_format(&self) -> Result<(), StoreError> {
        let record = FormatRecord { version: FORMAT_VERSION, written_by: env!("CARGO_PKG_VERSION").into() };
        let payload = bincode::serde::encode_to_vec(&record, bincode_config()).expect("encodes");
        self.db.insert(KEY_FORMAT, seal(payload)).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// The format the store is marked with.
    pub fn format_version(&self) -> Result<u32, StoreError> {
        let bytes = self.db.get(KEY_FORMAT).map_err(|e| self.io(e))?.ok_or_else(|| self.corrupt("no format record"))?;
        let payload = unseal(&bytes, "format record").map_err(|d| self.corrupt(d))?;
        let (format, _): (FormatRecord, _) = bincode::serde::decode_from_slice(payload, bincode_config())
            .map_err(|e| self.corrupt(format!("format record: {e}")))?;
        Ok(format.version)
    }

    fn decode_run(&self, key: &[u8], bytes: &[u8]) -> Result<RunRecord, StoreError> {
        let id = key.get(RUN_PREFIX.len()..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        decode_run(bytes, &format!("record of run {id}")).map_err(|d| self.corrupt(d))
    }

    /// Writes a run record and flushes it to disk before returning.
    pub fn save_run(&self, meta: &RunMeta, state: &RunState) -> Result<(), StoreError> {
        self.db.insert(run_key(meta.id), encode_run(meta, state)).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Writes a run record together with watermarks, atomically, and flushes.
    pub fn save_run_with_watermarks(
        &self,
        meta: &RunMeta,
        state: &RunState,
        watermarks: &[(String, WatermarkRecord)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(run_key(meta.id), encode_run(meta, state));
        for (table, record) in watermarks {
            let mut key = WATERMARK_PREFIX.to_vec();
            key.extend_from_slice(table.as_bytes());
            batch.insert(key, encode_watermark(record));
        }
        self.db.apply_batch(batch).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// One run.
    pub fn load_run(&self, id: u64) -> Result<RunRecord, StoreError> {
        let key = run_key(id);
        let bytes = self.db.get(&key).map_err(|e| self.io(e))?.ok_or(StoreError::NoSuchRun(id))?;
        self.decode_run(&key, &bytes)
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(RUN_PREFIX) {
            let (key, value) = item.map_err(|e| self.io(e))?;
            out.push(self.decode_run(&key, &value)?);
        }
        Ok(out)
    }

    /// The id the next run gets.
    pub fn next_run_id(&self) -> Result<u64, StoreError> {
        let last = self.db.scan_prefix(RUN_PREFIX).keys().next_back().transpose().map_err(|e| self.io(e))?;
        Ok(last.and_then(|k| k.get(RUN_PREFIX.len()..).and_then(|b| b.try_into().ok())).map_or(0, u64::from_be_bytes)
            + 1)
    }

    /// The newest run that has not finished, if any.
    pub fn unfinished_run(&self) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.runs()?.into_iter().rev().find(|r| r.meta.status.is_unfinished()))
    }

    /// Marks runs left `Running` by a dead process as interrupted. Holding the store lock
    /// proves their process is gone.
    pub fn recover_dead_runs(&self) -> Result<(), StoreError> {
        for mut run in self.runs()? {
            if run.meta.status == RunStatus::Running {
                run.meta.status = RunStatus::Interrupted;
                let detail = format!(
                    "process {} on {} ended without finishing (killed or crashed) at task {} of {}",
                    run.meta.pid,
                    run.meta.host,
                    run.state.position + 1,
                    run.state.tasks.len()
                );
                run.meta.event(EventKind::Interrupted, detail);
                self.save_run(&run.meta, &run.state)?;
            }
        }
        Ok(())
    }

    /// The stored watermark of a table entry, if its identity matches.
    pub fn watermark(&self, table: &str, identity: &str) -> Result<Option<Value>, StoreError> {
        let mut key = WATERMARK_PREFIX.to_vec();
        key.extend_from_slice(table.as_bytes());
        let Some(bytes) = self.db.get(&key).map_err(|e| self.io(e))? else { return Ok(None) };
        let record = decode_watermark(&bytes, &format!("watermark of {table}")).map_err(|d| self.corrupt(d))?;
        Ok((record.identity == identity).then_some(record.value))
    }

    /// Every stored watermark, by table entry name.
    pub fn watermarks(&self) -> Result<Vec<(String, WatermarkRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(WATERMARK_PREFIX) {
            let (key, bytes) = item.map_err(|e| self.io(e))?;
            let table = String::from_utf8_lossy(&key[WATERMARK_PREFIX.len()..]).into_owned();
            let record = decode_watermark(&bytes, &format!("watermark of {table}")).map_err(|d| self.corrupt(d))?;
            out.push((table, record));
        }
        Ok(out)
    }

    /// Deletes the oldest finished runs so that at most `keep` finished runs remain
    /// (0 keeps all). Unfinished runs are never pruned. Returns how many were removed.
    pub fn prune(&self, keep: usize) -> Result<usize, StoreError> {
        if keep == 0 {
            return Ok(0);
        }
        let finished: Vec<u64> =
            self.runs()?.iter().filter(|r| !r.meta.status.is_unfinished()).map(|r| r.meta.id).collect();
        let excess = finished.len().saturating_sub(keep);
        for id in &finished[..excess] {
            self.db.remove(run_key(*id)).map_err(|e| self.io(e))?;
        }
        if excess > 0 {
            self.db.flush().map_err(|e| self.io(e))?;
        }
        Ok(excess)
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// The store folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Identity of a table entry's watermark: a watermark only applies to the same source,
/// target, tables and filter.
pub fn watermark_identity(source: &str, target: &str, job: &crate::engine::TableJob) -> String {
    format!(
        "{source}|{target}|{}|{}|{:?}",
        job.mapping.source.table, job.mapping.target.table, job.mapping.source.filter
    )
}

/// The store's watermarks, as the planner asks for them.
pub struct StoreWatermarks<'a> {
    /// The store.
    pub store: &'a Store,
    /// Source description.
    pub source: String,
    /// Target description.
    pub target: String,
}

impl Watermarks for StoreWatermarks<'_> {
    fn watermark(&self, job: &crate::engine::TableJob) -> Result<Option<Value>, EngineError> {
        let identity = watermark_identity(&self.source, &self.target, job);
        self.store.watermark(&job.spec.name, &identity).map_err(|e| EngineError::Checkpoint(e.to_string()))
    }
}

/// Writes the run state to the store after every commit; advances a table's watermark
/// in the same atomic write once the table is verified.
pub struct StoreObserver<'a> {
    /// The store.
    pub store: &'a Store,
    /// The run's metadata.
    pub meta: &'a mut RunMeta,
    /// Watermark identity per table index.
    pub identities: Vec<String>,
    /// Tables whose watermark is written.
    pub watermarks_written: Vec<bool>,
    /// `meta.active_ms` when this process took the run over.
    pub active_ms_before: u64,
    /// When this process took the run over.
    pub started: std::time::Instant,
    /// When `owner.json` last got the run's activity (written at most once a second).
    pub activity_written: Option<std::time::Instant>,
}

impl Observer for StoreObserver<'_> {
    fn checkpoint(&mut self, state: &RunState) -> Result<(), EngineError> {
        crate::failpoint::hit("before_checkpoint");
        let mut watermarks = Vec::new();
        for (i, table) in state.tables.iter().enumerate() {
            if table.verified && !self.watermarks_written[i] {
                if let Some(value) = &table.survey.source_max_modify {
                    watermarks.push((
                        table.report.name.clone(),
                        WatermarkRecord {
                            identity: self.identities[i].clone(),
                            value: value.clone(),
                            run_id: self.meta.id,
                            at_ms: now_ms(),
                        },
                    ));
                }
                self.watermarks_written[i] = true;
            }
        }
        self.meta.active_ms = self.active_ms_before + self.started.elapsed().as_millis() as u64;
        let write = || {
            if watermarks.is_empty() {
                self.store.save_run(self.meta, state)
            } else {
                self.store.save_run_with_watermarks(self.meta, state, &watermarks)
            }
        };
        // sled's flush blocks on fsync; on a multi-threaded runtime let other tasks move.
        let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write),
            _ => write(),
        };
        result.map_err(|e| EngineError::Checkpoint(e.to_string()))?;
        if self.activity_written.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1)) {
            self.activity_written = Some(std::time::Instant::now());
            let activity = crate::runner::describe_activity(state);
            if let Err(e) = self.store.set_owner_activity(self.meta, activity) {
                tracing::debug!("cannot record the run's activity: {e}");
            }
        }
        crate::failpoint::hit("after_checkpoint");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
