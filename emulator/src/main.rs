//! `fourd-emulator`: serves a SQLite file as a 4D REST server (and, with `--sql-port`, as a 4D
//! SQL server), for pointing db-sync at by hand.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use fourd_emulator::{Emulator, Settings, SqlEmulator, SqlSettings, TimeUnit};

#[derive(Clone, Copy, ValueEnum)]
enum Unit {
    Ms,
    S,
}

/// An emulator of 4D's REST (ORDA) server backed by a SQLite file.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The SQLite file: its tables with a one-column primary key are the dataclasses.
    #[arg(long)]
    db: std::path::PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// User accepted by $directory/login.
    #[arg(long, default_value = "sync")]
    user: String,
    /// Environment variable holding the password (the password is "secret" without it).
    #[arg(long)]
    password_env: Option<String>,
    /// Application name in the 4DSID_<app> cookie.
    #[arg(long, default_value = "DbSyncTest")]
    app_name: String,
    /// Sessions open at once (the licence limit).
    #[arg(long, default_value_t = 3)]
    max_sessions: usize,
    /// Cap on entities per answer.
    #[arg(long)]
    max_top: Option<usize>,
    /// Entities per answer without $top.
    #[arg(long, default_value_t = 100)]
    default_top: usize,
    /// Compare and sort text by bytes instead of folding case and accents.
    #[arg(long)]
    byte_order: bool,
    /// Unit of duration attributes.
    #[arg(long, value_enum, default_value = "ms")]
    time_unit: Unit,
    /// Idle seconds before a session closes.
    #[arg(long, default_value_t = 3600)]
    session_idle: u64,
    /// Let data requests open guest sessions without logging in.
    #[arg(long)]
    no_force_login: bool,
    /// Also serve 4D's SQL network protocol on this port of 127.0.0.1 (0 picks a free one),
    /// with the same user and password and `--max-sessions`.
    #[arg(long)]
    sql_port: Option<u16>,
    /// On the SQL server, compare text with `=` and `IN` ignoring case and accents (4D's
    /// "Case-sensitive String Comparison" option unchecked; by default it is checked).
    #[arg(long)]
    sql_fold_text: bool,
}

fn main() {
    let a = Args::parse();
    let password = match &a.password_env {
        Some(var) => match std::env::var(var) {
            Ok(p) => p,
            Err(_) => {
                eprintln!("fourd-emulator: environment variable {var} is not set");
                std::process::exit(2);
            }
        },
        None => "secret".to_string(),
    };
    let sql = a.sql_port.map(|port| {
        let settings = SqlSettings {
            users: vec![(a.user.clone(), password.clone())],
            max_sessions: a.max_sessions,
            fold_text: a.sql_fold_text,
        };
        match SqlEmulator::start_on(&a.db, settings, SocketAddr::from(([127, 0, 0, 1], port))) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fourd-emulator: {}: {e}", a.db.display());
                std::process::exit(1);
            }
        }
    });
    let settings = Settings {
        app_name: a.app_name,
        users: vec![(a.user, password)],
        force_login: !a.no_force_login,
        max_sessions: a.max_sessions,
        session_idle: Duration::from_secs(a.session_idle),
        default_top: a.default_top,
        max_top: a.max_top,
        byte_order: a.byte_order,
        time_unit: match a.time_unit {
            Unit::Ms => TimeUnit::Millis,
            Unit::S => TimeUnit::Seconds,
        },
    };
    let emu = match Emulator::start_on(&a.db, settings, SocketAddr::from(([127, 0, 0, 1], a.port))) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("fourd-emulator: {}: {e}", a.db.display());
            std::process::exit(1);
        }
    };
    println!("{}", emu.url());
    if let Some(sql) = &sql {
        println!("4D SQL server on 127.0.0.1:{}", sql.port());
    }
    loop {
        std::thread::park();
    }
}
