//! Command-line interface: clap definitions, and each command as a function from parsed
//! arguments to an exit code. Commands print their results to stdout; logs and progress
//! go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, NoObserver, RunOptions};
use crate::report::ProgressMode;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// The sync finished and every table verified.
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
    /// Stopped by a signal; the run can be resumed.
    pub const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "Exit codes:
  0    sync finished, every table verified
  1    sync finished with errors (refused rows, counts that differ afterwards)
  2    config file or command line is wrong
  3    a database could not be reached
  4    tables or columns do not fit the config
  5    run stopped: too many errors, delete guard, or a database failure
  130  interrupted by a signal";

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
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync the configured tables.
    Run(RunArgs),
    /// Count rows, read modify IDs and print each table's plan and reason; write nothing.
    Plan(TableArgs),
    /// Check the config, both connections and every table's schema compatibility.
    Check(ConfigArgs),
    /// Build demo SQLite databases (ERP-like, 200,000+ rows), sync them, change the
    /// source and sync again.
    Demo(DemoArgs),
}

/// `--config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file.
    #[arg(short, long, default_value = "db-sync.json")]
    pub config: PathBuf,
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
    /// Allow deleting more than `max_delete_percent` of a target table.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Print the final report as JSON instead of a table.
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

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Run(args) => cmd_run(args).await,
        Command::Plan(args) => cmd_plan(args).await,
        Command::Check(args) => cmd_check(args).await,
        Command::Demo(args) => crate::demo::run(args).await,
    };
    ExitCode::from(code)
}

fn load(args: &ConfigArgs) -> Result<Config, u8> {
    Config::load(&args.config).map_err(|e: ConfigError| {
        eprintln!("error: {e}");
        exit::CONFIG
    })
}

fn check_tables(config: &Config, tables: &[String]) -> Result<(), u8> {
    let known: Vec<&str> = config.tables.iter().map(|t| t.name.as_str()).collect();
    for t in tables {
        if !known.contains(&t.as_str()) {
            let hint = crate::config::closest(t, &known).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            eprintln!("error: --table {t}: no table entry with that name in {}{hint}", config.path.display());
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
        EngineError::Interrupted => exit::INTERRUPTED,
        EngineError::Database { source, .. } if source.is_retryable() => exit::CONNECTION,
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
        allow_mass_delete: args.allow_mass_delete,
        plan_only: false,
        progress: args.progress.into(),
        ..RunOptions::default()
    };
    sync_once(config, options, args.json).await
}

/// Connects, runs, prints the report; returns the exit code.
pub async fn sync_once(config: Config, options: RunOptions, json: bool) -> u8 {
    let engine = match Engine::connect(config, options).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return engine_exit(&e);
        }
    };
    match engine.run(&mut NoObserver).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                print!("{}", report.render());
            }
            if report.errors.is_empty() { exit::OK } else { exit::COMPLETED_WITH_ERRORS }
        }
        Err((e, report)) => {
            if !report.tables.is_empty() {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
                } else {
                    print!("{}", report.render());
                }
            }
            eprintln!("error: {e}");
            engine_exit(&e)
        }
    }
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
    sync_once(config, options, false).await
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
            eprintln!("error: {e}");
            return engine_exit(&e);
        }
    };
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
            println!("check passed");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            engine_exit(&e)
        }
    }
}
