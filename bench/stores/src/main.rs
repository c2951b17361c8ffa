//! Which embedded store should keep a single node's streams? For redb, fjall and SQLite
//! (rusqlite, WAL): publications per second when each one is durable (fsync) before it is
//! acknowledged, the same with batches of 64 (a group commit), and, with 1M retained
//! publications over 100 channels, the time to open the store and find every channel's newest
//! offset (what a restarted node needs before it serves).
//!
//!   cargo run --release --manifest-path bench/stores/Cargo.toml -- DIR
//!
//! DIR should be on the disk Herald would use. Prints one JSON line per measurement.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHANNELS: u32 = 100;
const RETAINED: u64 = 1_000_000;
const RUN: Duration = Duration::from_secs(3);

fn value(off: u64) -> Vec<u8> {
    // About what a small publication costs: event name, time, a ~100-byte payload.
    format!("message\u{0}1795358148020\u{0}{{\"id\":{off},\"text\":\"a publication of roughly a hundred bytes, like a chat line\"}}")
        .into_bytes()
}

trait Store {
    fn name(&self) -> &'static str;
    /// Appends `items` as one durable commit.
    fn append(&mut self, items: &[(u32, u64)]);
    /// Every channel's newest offset.
    fn tops(&self) -> Vec<u64>;
}

struct Redb(redb::Database);
const T: redb::TableDefinition<(u32, u64), &[u8]> = redb::TableDefinition::new("pubs");

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn append(&mut self, items: &[(u32, u64)]) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for &(ch, off) in items {
                t.insert((ch, off), value(off).as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn tops(&self) -> Vec<u64> {
        let rx = self.0.begin_read().unwrap();
        let t = rx.open_table(T).unwrap();
        (0..CHANNELS)
            .map(|ch| {
                t.range((ch, 0)..=(ch, u64::MAX))
                    .unwrap()
                    .next_back()
                    .map_or(0, |e| e.unwrap().0.value().1)
            })
            .collect()
    }
}

struct Fjall(fjall::Keyspace, fjall::PartitionHandle);

fn key(ch: u32, off: u64) -> [u8; 12] {
    let mut k = [0; 12];
    k[..4].copy_from_slice(&ch.to_be_bytes());
    k[4..].copy_from_slice(&off.to_be_bytes());
    k
}

impl Store for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn append(&mut self, items: &[(u32, u64)]) {
        let mut b = self.0.batch();
        for &(ch, off) in items {
            b.insert(&self.1, key(ch, off), value(off));
        }
        b.commit().unwrap();
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn tops(&self) -> Vec<u64> {
        (0..CHANNELS)
            .map(|ch| {
                self.1.prefix(ch.to_be_bytes()).next_back().map_or(0, |e| {
                    let (k, _) = e.unwrap();
                    u64::from_be_bytes(k[4..12].try_into().unwrap())
                })
            })
            .collect()
    }
}

struct Sqlite(rusqlite::Connection);

impl Store for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn append(&mut self, items: &[(u32, u64)]) {
        let tx = self.0.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO pubs (ch, off, val) VALUES (?1, ?2, ?3)")
                .unwrap();
            for &(ch, off) in items {
                st.execute(rusqlite::params![ch, off as i64, value(off)])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn tops(&self) -> Vec<u64> {
        let mut st = self
            .0
            .prepare("SELECT MAX(off) FROM pubs WHERE ch = ?1")
            .unwrap();
        (0..CHANNELS)
            .map(|ch| {
                st.query_row([ch], |r| r.get::<_, Option<i64>>(0))
                    .unwrap()
                    .unwrap_or(0) as u64
            })
            .collect()
    }
}

fn open(kind: &str, dir: &Path) -> Box<dyn Store> {
    match kind {
        "redb" => Box::new(Redb(redb::Database::create(dir.join("redb")).unwrap())),
        "fjall" => {
            let ks = fjall::Config::new(dir.join("fjall")).open().unwrap();
            let p = ks
                .open_partition("pubs", fjall::PartitionCreateOptions::default())
                .unwrap();
            Box::new(Fjall(ks, p))
        }
        _ => {
            std::fs::create_dir_all(dir).unwrap();
            let c = rusqlite::Connection::open(dir.join("sqlite.db")).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
                 CREATE TABLE IF NOT EXISTS pubs (ch INTEGER, off INTEGER, val BLOB, PRIMARY KEY (ch, off)) WITHOUT ROWID;",
            )
            .unwrap();
            Box::new(Sqlite(c))
        }
    }
}

/// The next `k` publications, round robin over the channels: `n` counts every one so far and
/// `next` holds each channel's newest offset.
fn next_items(k: u64, n: &mut u64, next: &mut [u64]) -> Vec<(u32, u64)> {
    (0..k)
        .map(|_| {
            let ch = (*n % u64::from(CHANNELS)) as u32;
            next[ch as usize] += 1;
            *n += 1;
            (ch, next[ch as usize])
        })
        .collect()
}

/// Publications per second for `RUN`, committing every `batch`.
fn rate(store: &mut dyn Store, batch: usize, next: &mut [u64]) -> (f64, f64) {
    let start = Instant::now();
    let mut n: u64 = next.iter().sum();
    let first = n;
    let mut commits = 0u64;
    while start.elapsed() < RUN {
        store.append(&next_items(batch as u64, &mut n, next));
        commits += 1;
    }
    let n = n - first;
    let secs = start.elapsed().as_secs_f64();
    (n as f64 / secs, secs * 1e3 / commits as f64)
}

/// The child of the crash case: fills `kind`'s store in `dir` to `RETAINED`, says so, then
/// appends one durable publication after another until it is killed.
fn crash_child(kind: &str, dir: &Path) {
    use std::io::Write;
    let mut store = open(kind, dir);
    let mut next = vec![0u64; CHANNELS as usize];
    let mut n = 0u64;
    while n < RETAINED {
        store.append(&next_items(10_000, &mut n, &mut next));
    }
    println!("filled");
    std::io::stdout().flush().unwrap();
    loop {
        store.append(&next_items(1, &mut n, &mut next));
    }
}

/// Start-up after `kill -9` in the middle of durable appends, with 1M retained.
fn crash_case(kind: &str, root: &Path) {
    use std::io::BufRead;
    let dir = root.join(format!("{kind}-crash"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--crash-child", kind])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "filled");
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    let store = open(kind, &dir);
    let opened = t.elapsed();
    let tops = store.tops();
    let ready = t.elapsed();
    let total: u64 = tops.iter().sum();
    assert!(
        total >= RETAINED,
        "{kind} lost acknowledged publications after kill -9"
    );
    println!(
        "{{\"store\":\"{kind}\",\"case\":\"startup_after_kill_1m\",\"publications\":{total},\"open_ms\":{:.1},\"tops_ms\":{:.1}}}",
        opened.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--crash-child") {
        return crash_child(&args[2], Path::new(&args[3]));
    }
    let root: PathBuf = args.get(1).expect("usage: herald-store-bench DIR").into();
    for kind in ["redb", "fjall", "sqlite"] {
        let dir = root.join(kind);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut store = open(kind, &dir);
        let mut next = vec![0u64; CHANNELS as usize];
        for batch in [1, 64] {
            let (per_sec, ms_per_commit) = rate(store.as_mut(), batch, &mut next);
            println!(
                "{{\"store\":\"{}\",\"case\":\"durable_append\",\"batch\":{batch},\"publications_per_sec\":{per_sec:.0},\"ms_per_commit\":{ms_per_commit:.3}}}",
                store.name()
            );
        }
        // Fill to RETAINED publications in big durable batches, then reopen.
        let have: u64 = next.iter().sum();
        let mut left = RETAINED.saturating_sub(have);
        let fill = Instant::now();
        let mut n = have;
        while left > 0 {
            let k = left.min(10_000);
            store.append(&next_items(k, &mut n, &mut next));
            left -= k;
        }
        let fill_secs = fill.elapsed().as_secs_f64();
        drop(store);
        let size: u64 = walk(&dir);
        let t = Instant::now();
        let store = open(kind, &dir);
        let opened = t.elapsed();
        let tops = store.tops();
        let ready = t.elapsed();
        assert_eq!(tops, next, "{kind} lost track of an offset");
        println!(
            "{{\"store\":\"{kind}\",\"case\":\"startup_1m\",\"fill_secs\":{fill_secs:.1},\"disk_bytes\":{size},\"open_ms\":{:.1},\"tops_ms\":{:.1}}}",
            opened.as_secs_f64() * 1e3,
            ready.as_secs_f64() * 1e3
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        crash_case(kind, &root);
    }
}

fn walk(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    })
}
