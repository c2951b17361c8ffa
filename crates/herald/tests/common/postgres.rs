//! A private PostgreSQL for connector tests: `initdb` into a fresh directory and `pg_ctl`
//! on a free loopback port, as the `postgres` user (Postgres refuses to run as root), with
//! trust authentication. Restartable on the same port; stopped and removed on drop. Where
//! the binaries are missing the test is skipped, unless `HERALD_TEST_REQUIRE_BACKENDS=1`
//! turns that into a failure.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A private Postgres server.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Postgres {
    /// Starts a server, or returns None (after saying so) when Postgres is not installed.
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                !super::require_backends(),
                "PostgreSQL is required (HERALD_TEST_REQUIRE_BACKENDS=1) but /usr/lib/postgresql/*/bin/initdb is missing"
            );
            eprintln!("skipped: PostgreSQL (initdb) not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("herald-pg-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("postgres dir");
        let as_postgres = is_root();
        let pg = Self {
            port: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port(),
            bin,
            dir,
            as_postgres,
        };
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown of the Postgres directory failed");
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.ctl("start");
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, action: &str) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                action,
            ],
        );
    }

    /// Restarts the server on the same port (fast shutdown: connections are cut).
    pub fn restart(&self) {
        self.ctl("restart");
    }

    /// The URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its URL.
    pub async fn create_database(&self, database: &str) -> String {
        let client = self.connect("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        self.url(database)
    }

    /// A client of `database`, its connection driven on a task.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
            .await
            .expect("connect to Postgres");
        tokio::spawn(conn);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
