//! Command-line interface: clap definitions, and each command as a function from parsed
//! arguments to an exit code. Commands print their results to stdout; logs and progress
//! go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, RunOptions};
use crate::report::ProgressMode;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// The sync finished without errors; every table's counts match.
    pub const OK: u8 = 0;
    /// The sync finished, but with errors (rows refused, counts that differ afterwards).
    pub const COMPLETED_WITH_ERRORS: u8 = 1;
    /// The config file or the command line is wrong.
    pub const CONFIG: u8 = 2;
    /// A database could not be reached.
    pub const CONNECTION: u8 = 3;
    /// Tables or columns do not fit the config.
    pub const SCHEMA: u8 = 4;
    /// The run stopped: too many errors, the delete guard, or a database failure.
    pub const ABORTED: u8 = 5;
    /// The state store is busy (another run), holds an unfinished run, or is damaged.
    pub const STATE: u8 = 6;
    /// A database connection was lost during the run and its retries ran out; the run can
    /// be resumed once the link is back.
    pub const NETWORK: u8 = 7;
    /// Stopped by a signal; the run can be resumed.
    pub const INTERRUPTED: u8 = 130;

    /// A few words on what an exit code means, for logs.
    pub fn describe(code: u8) -> &'static str {
        match code {
            OK => "finished without errors",
            COMPLETED_WITH_ERRORS => "finished with errors",
            CONFIG => "config or command line wrong",
            CONNECTION => "a database could not be reached",
            SCHEMA => "tables or columns do not fit the config",
            ABORTED => "run stopped by errors, the delete guard or a database failure",
            STATE => "state store busy, holding an unfinished run, or damaged",
            NETWORK => "connection lost and retries ran out",
            INTERRUPTED => "interrupted by a signal",
            _ => "unknown exit code",
        }
    }
}

const EXIT_CODES: &str = "Exit codes:
  0    sync finished without errors; every table's counts match
  1    sync finished with errors (refused rows, counts that differ afterwards)
  2    config file or command line is wrong
  3    a database could not be reached
  4    tables or columns do not fit the config
  5    run stopped: too many errors, delete guard, or a database failure
  6    state store busy (another run in progress), holding an unfinished run, or damaged
  7    connection lost during the run and its retries ran out (resumable)
  130  interrupted by a signal (resumable)";

/// Keeps tables of one database equal to those of another (SQLite now; PostgreSQL, 4D
/// and REST next).
#[derive(Debug, Parser)]
#[command(name = "db-sync", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output (-v info, -vv debug); default shows warnings and the plan.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format on stderr: `text` for people, or `json`, one object per line
    /// (timestamp, level, message, fields) for log collectors; `json` turns progress
    /// display off so that it cannot break the lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DB_SYNC_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (coloured only on a terminal without NO_COLOR).
    Text,
    /// One JSON object per line.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync the configured tables (a new run, checkpointed after every batch).
    Run(RunArgs),
    /// Continue the newest unfinished run (or RUN_ID) from its last checkpoint.
    Resume(ResumeArgs),
    /// List the runs in the state store.
    Runs(ListArgs),
    /// Show one run: plan, counts, results, metrics, errors and history.
    Show(ShowArgs),
    /// Count rows, read modify IDs and print each table's plan and reason; write nothing.
    Plan(TableArgs),
    /// Check the config, both connections and every table's schema compatibility.
    Check(ConfigArgs),
    /// Compare every row of the selected tables, read-only; exit 1 when they differ.
    Verify(VerifyArgs),
    /// Sync on the config's schedule (`sleep_seconds` or `run_at_time`) until SIGTERM or
    /// SIGINT: an unfinished run is resumed first, a failed run is retried at the next
    /// scheduled time; SIGHUP reads the config again at the next wake-up.
    Daemon(DaemonArgs),
    /// Build demo SQLite databases (ERP-like, 200,000+ rows), sync them, change the
    /// source and sync again.
    Demo(DemoArgs),
}

/// `--config` and `--state-dir`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file.
    #[arg(short, long, default_value = "db-sync.json")]
    pub config: PathBuf,
    /// Checkpoint and audit store (default: `state_dir` of the config, or `.db-sync`
    /// beside the config file).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `--config` and `--table`.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Config and state location.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only this table entry (repeatable); overrides the config's `sync_table`.
    #[arg(short, long = "table", value_name = "NAME")]
    pub tables: Vec<String>,
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config and tables.
    #[command(flatten)]
    pub tables: TableArgs,
    /// Delete guard, progress and report format.
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Give up an unfinished run in the state store and start a new one.
    #[arg(long)]
    pub abandon: bool,
}

/// Options of `resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (default: the newest unfinished one).
    pub run_id: Option<u64>,
    /// Config and state location.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Re-plan the run with the current config when the config or the tables changed
    /// since it was planned (keeps its history and counters).
    #[arg(long)]
    pub replan: bool,
    /// Delete guard, progress and report format.
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// Options of the commands that sync (`run`, `resume`).
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Allow deleting more than `max_delete_percent` of a target table.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Leave out source rows whose key is NULL or shared by several rows (each counted as
    /// an error) instead of refusing to sync their tables.
    #[arg(long)]
    pub skip_bad_keys: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Print the final report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Config and state location.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Allow deleting more than `max_delete_percent` of a target table, in every run.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Leave out source rows whose key is NULL or shared by several rows (each counted as
    /// an error) instead of refusing to sync their tables.
    #[arg(long)]
    pub skip_bad_keys: bool,
    /// Progress display of each run.
    #[arg(long, value_enum, default_value_t = ProgressArg::Lines)]
    pub progress: ProgressArg,
}

/// Options of `runs`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Config and state location.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Options of `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The run.
    pub run_id: u64,
    /// Config and state location.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Config and tables.
    #[command(flatten)]
    pub tables: TableArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo databases and config (created; existing demo files are replaced).
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// Scale of the data set (1 = about 225,000 rows).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Sync into this PostgreSQL database instead of target.sqlite (its demo tables are
    /// dropped and recreated from migrations/).
    #[arg(long, value_name = "URL")]
    pub target_url: Option<String>,
}

/// `--progress` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines every few seconds.
    Lines,
    /// None.
    Off,
}

impl From<ProgressArg> for ProgressMode {
    fn from(p: ProgressArg) -> Self {
        match p {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Lines => ProgressMode::Lines,
            ProgressArg::Off => ProgressMode::Off,
        }
    }
}

/// Runs a command that writes nothing until it ends or SIGINT/SIGTERM arrives; a signal
/// drops the calls in flight and exits 130 at once.
async fn read_only(command: impl std::future::Future<Output = u8>) -> u8 {
    let mut signals = crate::runner::Signals::new();
    tokio::select! {
        code = command => code,
        signal = signals.next() => {
            notice(&format!("{signal}: stopped; nothing was written"));
            exit::INTERRUPTED
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Run(args) => cmd_run(args).await,
        Command::Resume(args) => cmd_resume(args).await,
        Command::Runs(args) => cmd_runs(args),
        Command::Show(args) => cmd_show(args),
        Command::Plan(args) => read_only(cmd_plan(args)).await,
        Command::Check(args) => read_only(cmd_check(args)).await,
        Command::Verify(args) => read_only(cmd_verify(args)).await,
        Command::Demo(args) => cmd_demo(args).await,
        Command::Daemon(args) => cmd_daemon(args).await,
    };
    ExitCode::from(code)
}

/// The runner's messages on a terminal (or whatever stdout and stderr are): notices to
/// stderr, results and reports to stdout, reports in the chosen format.
pub struct Terminal(pub crate::runner::Output);

impl crate::runner::RunSink for Terminal {
    fn notice(&self, text: &str) {
        notice(text);
    }

    fn result(&self, text: &str) {
        println!("{text}");
    }

    fn finished(&self, run: &crate::runner::FinishedRun) {
        match self.0 {
            crate::runner::Output::Json => {
                println!("{}", serde_json::to_string_pretty(&run.report).expect("report serializes"))
            }
            crate::runner::Output::Text => {
                print!("{}", run.report.render());
                println!("run {}: {}", run.id, run.status.name());
            }
            crate::runner::Output::Quiet => {}
        }
    }
}

/// Set when logs are JSON (`--log-format json`): notices become log events too.
static NOTICES_AS_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every notice (`error: ...`, `resuming run 3 ...`) a log event, for JSON logs.
pub fn notices_as_logs() {
    NOTICES_AS_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A message for the user on stderr: a line of text, or with JSON logs a log event (an
/// error event when it starts with `error:`). Control characters a database may have put
/// in it (an ESC in a value named by an error) are shown escaped, never sent raw.
pub fn notice(text: &str) {
    let text = crate::report::escape_controls(text);
    if NOTICES_AS_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        match text.strip_prefix("error: ") {
            Some(error) => tracing::error!(target: "db_sync::notice", "{error}"),
            None => tracing::warn!(target: "db_sync::notice", "{text}"),
        }
    } else {
        eprintln!("{text}");
    }
}

/// Progress on stderr: lines as they come, tokens of the binary-search line flushed at
/// once.
#[derive(Clone, Copy, Debug, Default)]
pub struct StderrProgress;

impl crate::report::ProgressOutput for StderrProgress {
    fn line(&self, text: &str) {
        eprintln!("{text}");
    }

    fn token(&self, text: &str) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{text}");
        let _ = err.flush();
    }

    fn end_tokens(&self) {
        eprintln!();
    }

    fn is_terminal(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

fn output(json: bool) -> crate::runner::Output {
    if json { crate::runner::Output::Json } else { crate::runner::Output::Text }
}

fn load(args: &ConfigArgs) -> Result<Config, u8> {
    let mut config = Config::load(&args.config).map_err(|e: ConfigError| {
        notice(&format!("error: {e}"));
        exit::CONFIG
    })?;
    if let Some(dir) = &args.state_dir {
        config.run.state_dir = dir.clone();
    }
    Ok(config)
}

/// The state store folder: `--state-dir`, else the config's.
fn state_dir(args: &ConfigArgs) -> Result<PathBuf, u8> {
    match &args.state_dir {
        Some(dir) => Ok(dir.clone()),
        None => Config::state_dir_of(&args.config).map_err(|e| {
            notice(&format!("error: {e}"));
            exit::CONFIG
        }),
    }
}

fn check_tables(config: &Config, tables: &[String]) -> Result<(), u8> {
    let known: Vec<&str> = config.tables.iter().map(|t| t.name.as_str()).collect();
    for t in tables {
        if !known.contains(&t.as_str()) {
            let hint = crate::config::closest(t, &known).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            notice(&format!("error: --table {t}: no table entry with that name in {}{hint}", config.path.display()));
            return Err(exit::CONFIG);
        }
    }
    Ok(())
}

/// Exit code and message for an engine error.
pub fn engine_exit(e: &EngineError) -> u8 {
    match e {
        EngineError::Connect(crate::connector::ConnectorError::Config(_)) => exit::CONFIG,
        EngineError::Connect(_) => exit::CONNECTION,
        EngineError::Schema(_) => exit::SCHEMA,
        EngineError::BadKeys(_) => exit::ABORTED,
        EngineError::Interrupted => exit::INTERRUPTED,
        EngineError::Database { source, .. } if source.is_retryable() => exit::NETWORK,
        _ => exit::ABORTED,
    }
}

async fn cmd_run(args: RunArgs) -> u8 {
    let config = match load(&args.tables.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = check_tables(&config, &args.tables.tables) {
        return code;
    }
    let options = RunOptions {
        tables: args.tables.tables.clone(),
        allow_mass_delete: args.sync.allow_mass_delete,
        skip_bad_keys: args.sync.skip_bad_keys,
        plan_only: false,
        progress: args.sync.progress.into(),
        progress_output: std::sync::Arc::new(StderrProgress),
        ..RunOptions::default()
    };
    if config.run.only_sync_plan {
        return plan(config, options).await;
    }
    let stopper = crate::runner::Stopper::install(std::sync::Arc::clone(&options.stop));
    crate::runner::start(config, options, args.abandon, &Terminal(output(args.sync.json)), &stopper).await.code
}

async fn cmd_resume(args: ResumeArgs) -> u8 {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let options = RunOptions {
        allow_mass_delete: args.sync.allow_mass_delete,
        skip_bad_keys: args.sync.skip_bad_keys,
        progress: args.sync.progress.into(),
        progress_output: std::sync::Arc::new(StderrProgress),
        ..RunOptions::default()
    };
    let stopper = crate::runner::Stopper::install(std::sync::Arc::clone(&options.stop));
    crate::runner::resume(config, options, args.run_id, args.replan, &Terminal(output(args.sync.json)), &stopper)
        .await
        .code
}

/// What `runs` and `show` find in a state store folder.
enum Reading {
    /// The store, opened.
    Store(crate::checkpoint::Store),
    /// The store is locked by the run in progress described here.
    InProgress(crate::checkpoint::Owner),
}

/// Opens the store in `dir` once: the store, or the run in progress that holds it;
/// reports any other problem.
fn open_for_reading(dir: &std::path::Path) -> Result<Reading, u8> {
    use crate::checkpoint::{Store, StoreError};
    let sink = Terminal(crate::runner::Output::Text);
    match Store::open(dir) {
        Ok(store) => crate::runner::ready_store(store, &sink).map(Reading::Store),
        Err(StoreError::Busy(message)) => match Store::holder(dir).filter(|o| o.run_id.is_some()) {
            Some(owner) => Ok(Reading::InProgress(owner)),
            None => {
                notice(&format!("error: {}", StoreError::Busy(message)));
                Err(exit::STATE)
            }
        },
        Err(e) => {
            notice(&format!("error: {e}"));
            Err(crate::runner::store_exit(&e))
        }
    }
}

/// Prints the run in progress: its one-line description, or `{"in_progress": ...}`.
fn print_in_progress(owner: &crate::checkpoint::Owner, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "in_progress": owner })).expect("serializes"));
    } else {
        println!("{}", owner.describe());
    }
}

fn cmd_runs(args: ListArgs) -> u8 {
    let dir = match state_dir(&args.config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let store = match open_for_reading(&dir) {
        Ok(Reading::Store(store)) => store,
        Ok(Reading::InProgress(owner)) => {
            // The store is locked while a run writes it; say what the run is doing.
            print_in_progress(&owner, args.json);
            if !args.json {
                println!(
                    "(the run history is locked while the run writes it; `db-sync runs` lists it once the run ends)"
                );
            }
            return exit::OK;
        }
        Err(code) => return code,
    };
    match store.runs() {
        Ok(runs) => {
            if args.json {
                let summaries: Vec<_> = runs.iter().map(crate::audit::RunSummary::of).collect();
                println!("{}", serde_json::to_string_pretty(&summaries).expect("serializes"));
            } else {
                print!("{}", crate::audit::render_runs(&runs));
            }
            exit::OK
        }
        Err(e) => {
            notice(&format!("error: {e}"));
            exit::STATE
        }
    }
}

fn cmd_show(args: ShowArgs) -> u8 {
    let dir = match state_dir(&args.config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let store = match open_for_reading(&dir) {
        Ok(Reading::Store(store)) => store,
        Ok(Reading::InProgress(owner)) if owner.run_id == Some(args.run_id) => {
            print_in_progress(&owner, args.json);
            return exit::OK;
        }
        Ok(Reading::InProgress(owner)) => {
            notice(&format!(
                "error: {}; `db-sync show {}` can read the store once it ends",
                owner.describe(),
                args.run_id
            ));
            return exit::STATE;
        }
        Err(code) => return code,
    };
    match store.load_run(args.run_id) {
        Ok(run) => {
            if args.json {
                let detail = crate::audit::RunDetail::of(&run);
                println!("{}", serde_json::to_string_pretty(&detail).expect("serializes"));
            } else {
                print!("{}", crate::audit::render_run(&run));
            }
            exit::OK
        }
        Err(e @ crate::checkpoint::StoreError::NoSuchRun(_)) => {
            notice(&format!("error: {e}; `db-sync runs` lists them"));
            exit::CONFIG
        }
        Err(e) => {
            notice(&format!("error: {e}"));
            exit::STATE
        }
    }
}

/// Plans every selected table (with the stored watermarks when the store is free) and
/// prints the plan; writes nothing to either database.
pub async fn plan(config: Config, options: RunOptions) -> u8 {
    let store = match crate::checkpoint::Store::open(&config.run.state_dir) {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!("planning without stored watermarks: {e}");
            None
        }
    };
    let (source, target) = (config.source.describe(), config.target.describe());
    let engine = match Engine::connect(config, options).await {
        Ok(e) => e,
        Err(e) => {
            notice(&format!("error: {e}"));
            return engine_exit(&e);
        }
    };
    let code = {
        let started = std::time::Instant::now();
        let planned = match &store {
            Some(store) => engine.plan_run(&crate::checkpoint::StoreWatermarks { store, source, target }).await,
            None => engine.plan_run(&crate::engine::NoWatermarks).await,
        };
        match planned {
            Ok((_, state)) => {
                print!("{}", Engine::report(&state, true, started.elapsed().as_millis() as u64).render());
                exit::OK
            }
            Err(e) => {
                notice(&format!("error: {e}"));
                engine_exit(&e)
            }
        }
    };
    engine.close().await;
    code
}

async fn cmd_plan(args: TableArgs) -> u8 {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = check_tables(&config, &args.tables) {
        return code;
    }
    let options = RunOptions { tables: args.tables, plan_only: true, ..RunOptions::default() };
    plan(config, options).await
}

async fn cmd_verify(args: VerifyArgs) -> u8 {
    let config = match load(&args.tables.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = check_tables(&config, &args.tables.tables) {
        return code;
    }
    let options = RunOptions { tables: args.tables.tables, ..RunOptions::default() };
    let engine = match Engine::connect(config, options).await {
        Ok(e) => e,
        Err(e) => {
            notice(&format!("error: {e}"));
            return engine_exit(&e);
        }
    };
    let code = {
        match crate::verify::compare(&engine).await {
            Ok(diffs) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&diffs).expect("serializes"));
                } else {
                    print!("{}", crate::verify::render(&diffs));
                }
                if diffs.iter().all(crate::verify::TableDiff::is_equal) {
                    exit::OK
                } else {
                    exit::COMPLETED_WITH_ERRORS
                }
            }
            Err(e) => {
                notice(&format!("error: {e}"));
                engine_exit(&e)
            }
        }
    };
    engine.close().await;
    code
}

async fn cmd_check(args: ConfigArgs) -> u8 {
    let config = match load(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("config: {} ({} tables) ok", config.path.display(), config.tables.len());
    let source = config.source.describe();
    let target = config.target.describe();
    let engine = match Engine::connect(config, RunOptions::default()).await {
        Ok(e) => e,
        Err(e) => {
            notice(&format!("error: {e}"));
            return engine_exit(&e);
        }
    };
    let code = {
        println!("source: {source} ok");
        println!("target: {target} ok");
        match engine.prepare().await {
            Ok((jobs, warnings)) => {
                for job in &jobs {
                    println!(
                        "table {}: {} -> {} ({} columns) ok",
                        job.spec.name,
                        job.spec.source_table,
                        job.spec.target_table,
                        job.mapping.target.columns.len()
                    );
                }
                for w in &warnings {
                    println!("warning: {w}");
                }
                for n in jobs.iter().flat_map(|job| &job.mapping.narrowing) {
                    println!("note: {n}");
                }
                println!("check passed");
                exit::OK
            }
            Err(e) => {
                notice(&format!("error: {e}"));
                engine_exit(&e)
            }
        }
    };
    engine.close().await;
    code
}

/// The daemon's lines go to stdout, each flushed at once (a log file sees them as they
/// happen); runs and the schedule go to the metrics exporter when there is one.
struct DaemonOutput {
    exporter: Option<std::sync::Arc<crate::metrics_export::Exporter>>,
}

impl crate::daemon::Events for DaemonOutput {
    fn say(&self, line: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        // The same news as a log event, for log collectors (`-v`, `--log-format json`);
        // failures and refused reloads as warnings, seen at the default level.
        let trouble = ["Sync failed", "Run failed", "Config not reloaded"].iter().any(|p| line.starts_with(p))
            || line.contains(" failed (");
        if trouble {
            tracing::warn!(target: "db_sync::daemon", "{line}");
        } else {
            tracing::info!(target: "db_sync::daemon", "{line}");
        }
    }

    fn run_started(&self, at: jiff::Timestamp) {
        if let Some(exporter) = &self.exporter {
            exporter.set_in_progress(Some(at.as_millisecond()));
            exporter.set_next_run(None);
        }
    }

    fn run_ended(&self, outcome: &crate::runner::RunOutcome, started: jiff::Timestamp, took: std::time::Duration) {
        let Some(exporter) = &self.exporter else { return };
        exporter.set_in_progress(None);
        if let Some(run) = &outcome.run
            && let Some(before) = &run.before
        {
            exporter.baseline(run.id, before);
        }
        let status = match &outcome.run {
            Some(run) => run.status.name().replace(' ', "_"),
            None => "failed".to_string(),
        };
        exporter.record_run(&crate::metrics_export::RunSample {
            run_id: outcome.run.as_ref().map(|r| r.id),
            status: &status,
            started_unix_ms: started.as_millisecond(),
            duration_ms: took.as_millis() as u64,
            report: outcome.run.as_ref().map(|r| &r.report),
        });
    }

    fn next_run(&self, at: Option<jiff::Timestamp>) {
        if let Some(exporter) = &self.exporter {
            exporter.set_next_run(at.map(|t| t.as_millisecond()));
        }
    }
}

async fn cmd_daemon(args: DaemonArgs) -> u8 {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if matches!(config.run.schedule, crate::schedule::Schedule::Once) {
        notice(&format!(
            "error: {}: the daemon needs a schedule: set `sleep_seconds` (such as 3600 or \"1h\") or `run_at_time` \
             (such as \"02:00\"); `db-sync run` syncs once",
            config.path.display()
        ));
        return exit::CONFIG;
    }
    // One daemon per state store: the store itself is closed while the daemon sleeps.
    let _daemon_lock = match lock_daemon(&config.run.state_dir) {
        Ok(lock) => lock,
        Err(message) => {
            notice(&format!("error: {message}"));
            return exit::STATE;
        }
    };
    let control = crate::daemon::Control::new();
    control.listen();
    let exporter = match config.run.metrics_listen {
        None => None,
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => {
                let bound = listener.local_addr().map_or_else(|_| address.to_string(), |a| a.to_string());
                let exporter = std::sync::Arc::new(crate::metrics_export::Exporter::new());
                let (serving, shutdown) = (std::sync::Arc::clone(&exporter), control.stopper.shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = crate::metrics_export::serve(listener, serving, shutdown).await {
                        tracing::error!("metrics_listen {address}: {e}");
                    }
                });
                notice(&format!("serving /metrics and /healthz on http://{bound}"));
                Some(exporter)
            }
            Err(e) => {
                notice(&format!(
                    "error: {}: metrics_listen {address}: cannot listen there ({e}); choose a free address and port",
                    config.path.display()
                ));
                return exit::CONFIG;
            }
        },
    };
    let mut cycle = crate::daemon::RunnerCycle {
        allow_mass_delete: args.allow_mass_delete,
        skip_bad_keys: args.skip_bad_keys,
        progress: args.progress.into(),
        progress_output: std::sync::Arc::new(StderrProgress),
        sink: std::sync::Arc::new(Terminal(crate::runner::Output::Text)),
        replan_next: false,
    };
    let config_args = &args.config;
    let reload = || {
        let mut config = Config::load(&config_args.config)?;
        if let Some(dir) = &config_args.state_dir {
            config.run.state_dir = dir.clone();
        }
        Ok(config)
    };
    let clock = crate::schedule::SystemClock;
    crate::daemon::serve(config, &reload, &mut cycle, &clock, &control, &DaemonOutput { exporter }).await
}

/// Takes `daemon.lock` in the state store's folder for the daemon's lifetime (an OS file
/// lock, released when the process ends however it ends); the error names the holder.
fn lock_daemon(state_dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create the state folder {}: {e}", state_dir.display()))?;
    let path = state_dir.join("daemon.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(format!(
                "another db-sync daemon (pid {}) uses the state store {}; stop it first, or give this one another \
                 state_dir",
                holder.trim(),
                state_dir.display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// `db-sync demo`: builds the demo data set (crate::demo), syncs it, changes the source,
/// syncs again and compares every row.
async fn cmd_demo(args: DemoArgs) -> u8 {
    use crate::demo::DEMO_URL_VAR;
    println!("== building demo databases in {} ==", args.dir.display());
    let (config_path, rows) = match crate::demo::build(&args.dir, args.scale) {
        Ok(v) => v,
        Err(e) => {
            notice(&format!("error: {e}"));
            return exit::ABORTED;
        }
    };
    let target_url = args.target_url.clone();
    if let Some(url) = &target_url {
        if let Err(e) = crate::demo::prepare_postgres(url).await {
            notice(&format!("error: {e}"));
            return exit::CONNECTION;
        }
        let text = crate::demo::DEMO_CONFIG.replace(
            r#""target": {"type": "sqlite", "path": "target.sqlite"}"#,
            &format!(r#""target": {{"type": "postgres", "url": "${{{DEMO_URL_VAR}}}"}}"#),
        );
        if let Err(e) = std::fs::write(&config_path, text) {
            notice(&format!("error: cannot write {}: {e}", config_path.display()));
            return exit::ABORTED;
        }
        println!(
            "source.sqlite: {rows} rows in 8 tables; target: PostgreSQL {} (schema from migrations/); config: {} \
             (export {DEMO_URL_VAR} to use it)",
            crate::config::redact_url(url),
            config_path.display()
        );
    } else {
        println!("source.sqlite: {rows} rows in 8 tables; target.sqlite: empty; config: {}", config_path.display());
    }
    let load = || {
        let text = std::fs::read_to_string(&config_path).map_err(|e| e.to_string())?;
        let env = |name: &str| {
            if name == DEMO_URL_VAR { target_url.clone() } else { std::env::var(name).ok() }
        };
        Config::from_str_at(&text, &config_path, &env).map_err(|e| e.to_string())
    };

    let sync = |title: &str| {
        println!("\n== {title} ==");
        let config = load();
        async move {
            let config = match config {
                Ok(c) => c,
                Err(e) => {
                    notice(&format!("error: {e}"));
                    return exit::CONFIG;
                }
            };
            let plan_options =
                RunOptions { plan_only: true, progress: crate::report::ProgressMode::Off, ..RunOptions::default() };
            let code = plan(config.clone(), plan_options).await;
            if code != exit::OK {
                return code;
            }
            println!();
            let options = RunOptions { progress_output: std::sync::Arc::new(StderrProgress), ..RunOptions::default() };
            let stopper = crate::runner::Stopper::install(std::sync::Arc::clone(&options.stop));
            crate::runner::start(config, options, false, &Terminal(crate::runner::Output::Text), &stopper).await.code
        }
    };
    let code = sync("first sync: empty target").await;
    if code != exit::OK {
        return code;
    }

    let mutations = match rusqlite::Connection::open(args.dir.join("source.sqlite"))
        .and_then(|mut c| crate::demo::mutate_source(&mut c, 7))
    {
        Ok(m) => m,
        Err(e) => {
            notice(&format!("error: changing the demo source: {e}"));
            return exit::ABORTED;
        }
    };
    println!(
        "\n== source changed: {} rows added, {} updated, {} updated without a new modify_id, {} deleted, {} products moved to another type ==",
        mutations.added, mutations.updated, mutations.silent_updates, mutations.deleted, mutations.moved
    );
    let code = sync("second sync").await;
    if code != exit::OK {
        return code;
    }

    // Every row compared through the connectors (`db-sync verify`).
    let config = match load() {
        Ok(c) => c,
        Err(e) => {
            notice(&format!("error: {e}"));
            return exit::CONFIG;
        }
    };
    let engine = match crate::engine::Engine::connect(config, RunOptions::default()).await {
        Ok(e) => e,
        Err(e) => {
            notice(&format!("error: {e}"));
            return engine_exit(&e);
        }
    };
    match crate::verify::compare(&engine).await {
        Ok(diffs) if diffs.iter().all(crate::verify::TableDiff::is_equal) => {
            let compared: u64 = diffs.iter().map(|d| d.compared).sum();
            println!("\n== verified: all {compared} rows of the target equal the source ==");
            exit::OK
        }
        Ok(diffs) => {
            notice(&format!("demo verification failed:\n{}", crate::verify::render(&diffs)));
            exit::COMPLETED_WITH_ERRORS
        }
        Err(e) => {
            notice(&format!("error: comparing demo databases: {e}"));
            engine_exit(&e)
        }
    }
}
