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
    // The debug switches' lines (show_sql and the like, debug_connection_change) are
    // emitted only when the config asks for them, so they show at the default level;
    // `--quiet` still means errors only.
    let filter = EnvFilter::try_from_env("DB_SYNC_LOG").unwrap_or_else(|_| {
        let sled = if default_level == "debug" { ",sled=info" } else { "" };
        let switches = if cli.quiet { "" } else { ",db_sync::sql=info,db_sync::connection=info" };
        EnvFilter::new(format!("{default_level},sqlx::pool=error{sled}{switches}"))
    });
    // The cookie jar's debug lines quote each Set-Cookie, 4D's session cookie included: a
    // live session token stays out of the logs at every level, DB_SYNC_LOG too.
    let filter = filter.add_directive("cookie_store=off".parse().expect("a valid directive"));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        db_sync::cli::LogFormat::Text => logs.with_target(false).with_ansi(colour).init(),
        db_sync::cli::LogFormat::Json => {
            // Progress bars and lines are not JSON: the same news is in the info events.
            db_sync::report::disable_progress();
            db_sync::cli::notices_as_logs();
            logs.json().flatten_event(true).with_current_span(false).with_span_list(false).with_ansi(false).init()
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(db_sync::cli::exit::ABORTED);
        }
    };
    runtime.block_on(db_sync::cli::run(cli))
}
