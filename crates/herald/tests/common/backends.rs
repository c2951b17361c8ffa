//! Engine servers for multi-node tests: a private `redis-server` or `nats-server` on a free
//! loopback port, killable and restartable on the same port. Where the binary is missing the
//! test is skipped, unless `HERALD_TEST_REQUIRE_BACKENDS=1` turns that into a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Which engine a multi-node test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Nats,
}

/// A private engine server, killed on drop.
pub struct Backend {
    pub kind: Kind,
    pub port: u16,
    dir: PathBuf,
    extra: &'static [&'static str],
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A free port for a Redis Cluster node: at most 55535, with its cluster bus port (the port plus
/// 10000) free as well. Redis refuses to start a cluster node above 55535, and a port the kernel
/// hands out for `:0` often is.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..=29_999);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

fn binary(kind: Kind) -> &'static str {
    match kind {
        Kind::Redis => "redis-server",
        Kind::Nats => "nats-server",
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

impl Backend {
    /// Starts a server of `kind`, or returns None (after saying so) when its binary is missing.
    pub fn start(kind: Kind) -> Option<Self> {
        Self::start_with(kind, &[])
    }

    /// As [`Backend::start`], with extra command-line arguments for the server.
    pub fn start_with(kind: Kind, extra: &'static [&'static str]) -> Option<Self> {
        let bin = binary(kind);
        if !on_path(bin) {
            assert!(
                !super::require_backends(),
                "{bin} is required (HERALD_TEST_REQUIRE_BACKENDS=1) but not on PATH"
            );
            eprintln!("skipped: {bin} not found on PATH");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("herald-backend-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("backend dir");
        let mut b = Self {
            kind,
            port: if extra.contains(&"--cluster-enabled") {
                free_cluster_port()
            } else {
                free_port()
            },
            dir,
            extra,
            child: None,
        };
        b.spawn();
        Some(b)
    }

    /// The URL Herald connects to.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new(binary(self.kind));
        match self.kind {
            Kind::Redis => cmd.args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ]),
            Kind::Nats => cmd.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"]),
        };
        cmd.arg(&self.dir).args(self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn engine server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "engine server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A frozen process dies of SIGKILL too; continuing it first keeps its exit prompt.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server's process (SIGSTOP) without closing its sockets: to its clients the
    /// engine goes silent, as behind a dead network path, instead of refusing connections.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT); it then handles what queued up meanwhile.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Starts it again on the same port (Redis comes back empty; NATS keeps its store).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli -p PORT ARGS…` and returns its stdout.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-primary Redis Cluster on free loopback ports, or None when the binaries are
/// missing.
pub struct RedisCluster {
    pub nodes: Vec<Backend>,
}

impl RedisCluster {
    pub fn start() -> Option<Self> {
        Self::start_with_replicas(0)
    }

    /// Three primaries with `replicas` replicas each; a primary that stops answering for a
    /// second is failed over to its replica.
    pub fn start_with_replicas(replicas: usize) -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            nodes.push(Backend::start_with(
                Kind::Redis,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ],
            )?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {out:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for b in &nodes {
            loop {
                let info = b.redis_cli(&["cluster", "info"]);
                let known = format!("cluster_known_nodes:{}", nodes.len());
                if info.contains("cluster_state:ok") && info.contains(&known) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cluster never became ok"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // A replica can take over only once it has synchronised with its primary.
        for b in &nodes {
            loop {
                let info = b.redis_cli(&["INFO", "replication"]);
                if !info.contains("role:slave") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline + Duration::from_secs(20),
                    "a replica never synchronised: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Self { nodes })
    }

    /// The URL Herald connects to.
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The node serving `key`'s slot as primary, by index into `nodes`.
    pub fn primary_of(&self, key: &str) -> usize {
        let slot = self.nodes[0].redis_cli(&["CLUSTER", "KEYSLOT", key]);
        let slot: u16 = slot.trim().parse().expect("a slot number");
        let shards = self.nodes[0].redis_cli(&["CLUSTER", "SLOTS"]);
        // redis-cli prints CLUSTER SLOTS flat: start, end, then host, port, id per node, the
        // primary first.
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        let mut i = 0;
        while i + 3 < lines.len() {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>()) {
                if lines[i + 2] == "127.0.0.1" && (start..=end).contains(&slot) {
                    let port: u16 = lines[i + 3].parse().expect("a port");
                    return self
                        .nodes
                        .iter()
                        .position(|b| b.port == port)
                        .expect("a node of this cluster");
                }
            }
            i += 1;
        }
        panic!("no primary for slot {slot} in {shards}");
    }
}
