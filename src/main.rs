//! The `db-sync` binary: parses arguments, sets up logging, runs the command and turns
//! its result into the process exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = db_sync::cli::Cli::parse();
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    // sqlx's pool repeats at warn level each lost connection the resilience layer already
    // reports, and sled's debug lines are its own internals.
    let filter = EnvFilter::try_from_env("DB_SYNC_LOG").unwrap_or_else(|_| {
        let sled = if default_level == "debug" { ",sled=info" } else { "" };
        EnvFilter::new(format!("{default_level},sqlx::pool=error{sled}"))
    });
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(db_sync::cli::exit::ABORTED);
        }
    };
    runtime.block_on(db_sync::cli::run(cli))
}
