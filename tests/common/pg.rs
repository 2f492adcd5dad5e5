//! A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary folder, started on
//! 127.0.0.1 and a free port, as an unprivileged user when the tests run as root (the
//! server refuses to run as root). One cluster per test binary; every test gets its own
//! database. A watchdog process stops the cluster and removes its folder once the test
//! binary has exited.
//!
//! Without PostgreSQL binaries the tests skip with a message, except under `CI=true`,
//! where a missing server fails them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The running cluster.
pub struct Cluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Folder of the server's Unix socket.
    pub socket_dir: PathBuf,
    bin: PathBuf,
}

const OS_USER: &str = "dbsync_pg";

fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs a PostgreSQL program, as the unprivileged user when we are root.
fn pg_command(bin: &Path, program: &str, root: bool) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", OS_USER, "--"]).arg(bin.join(program));
        cmd
    } else {
        Command::new(bin.join(program))
    }
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start() -> Option<Cluster> {
    let Some(bin) = find_bin() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no PostgreSQL server binaries were found (install the postgresql package)");
        }
        eprintln!("SKIPPING PostgreSQL tests: no server binaries under /usr/lib/postgresql (set PG_BIN)");
        return None;
    };
    let root = is_root();
    if root && !Command::new("id").arg(OS_USER).output().is_ok_and(|o| o.status.success()) {
        run_ok(
            {
                let mut c = Command::new("useradd");
                c.args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER]);
                c
            },
            "creating the PostgreSQL test user",
        );
    }
    let dir = std::env::temp_dir().join(format!("db-sync-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if root {
        run_ok(
            {
                let mut c = Command::new("chown");
                c.arg(format!("{OS_USER}:")).arg(&dir);
                c
            },
            "chown of the cluster folder",
        );
    }
    let data = dir.join("data");
    let mut initdb = pg_command(&bin, "initdb", root);
    initdb.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
    run_ok(initdb, "initdb");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut pg_ctl = pg_command(&bin, "pg_ctl", root);
    pg_ctl.arg("-D").arg(&data).arg("-l").arg(dir.join("server.log")).args(["-w", "-t", "60", "start", "-o"]).arg(
        format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            dir.display()
        ),
    );
    run_ok(pg_ctl, "starting PostgreSQL");

    // Stop the cluster once this test process is gone.
    let stop = if root {
        format!("runuser -u {OS_USER} -- {}", bin.join("pg_ctl").display())
    } else {
        bin.join("pg_ctl").display().to_string()
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} -D '{data}' -m immediate stop; rm -rf '{dir}'",
        pid = std::process::id(),
        data = data.display(),
        dir = dir.display()
    );
    // Deliberately not waited for: it must outlive this process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog");
    let dir = dir.clone();
    Some(Cluster { port, socket_dir: dir, bin })
}

/// The cluster of this test binary, or `None` (skip) when PostgreSQL is missing locally.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(start).as_ref()
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Cluster {
    /// Creates a fresh database and returns its name.
    pub fn create_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Creates a login role that must give `password` (scram-sha-256) over TCP, while
    /// every other role stays trusted; once per cluster and role.
    pub fn password_role(&self, role: &str, password: &str) {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serialized = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let hba = self.socket_dir.join("data").join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let rule = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
        if rules.contains(&rule) {
            return;
        }
        self.psql("postgres", &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"));
        // The first matching line wins, so the rule goes before the cluster's `trust` lines.
        std::fs::write(&hba, format!("{rule}{rules}")).expect("write pg_hba.conf");
        self.psql("postgres", "SELECT pg_reload_conf()");
        // The postmaster rereads the file on SIGHUP, shortly after the call returns.
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// URL of a database.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn psql_command(&self, db: &str) -> Command {
        let psql = if self.bin.join("psql").exists() { self.bin.join("psql") } else { PathBuf::from("psql") };
        let mut cmd = Command::new(psql);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db);
        cmd
    }

    /// Runs SQL, panicking on error.
    pub fn psql(&self, db: &str, sql: &str) {
        let mut cmd = self.psql_command(db);
        cmd.arg("-c").arg(sql);
        run_ok(cmd, "psql");
    }

    /// Starts `sql` in a psql session of its own and returns at once (a session that holds
    /// a lock while a test runs); wait for the child to end it.
    pub fn psql_spawn(&self, db: &str, sql: &str) -> std::process::Child {
        let mut cmd = self.psql_command(db);
        cmd.arg("-c").arg(sql).stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn().expect("psql")
    }

    /// Rows of a query as `|`-separated text lines.
    pub fn query(&self, db: &str, sql: &str) -> Vec<String> {
        let mut cmd = self.psql_command(db);
        cmd.args(["-A", "-t", "-F", "|", "-c"]).arg(sql);
        let out = cmd.output().expect("psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}
