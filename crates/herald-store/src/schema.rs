//! The store's tables, its format check, and reading everything back at start-up.

use crate::StoreError;
use herald_core::memory::{stored_publication, Recovered, RecoveredChannel, StateValue};
use herald_core::{ChannelName, LatestState};
use herald_protocol::Epoch;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The store format this Herald reads and writes.
pub const FORMAT: u32 = 1;

const TABLES: &str = "
CREATE TABLE herald_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE channels (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, top INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE history (
    channel TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, time_ms INTEGER NOT NULL,
    data TEXT NOT NULL, expires_ms INTEGER NOT NULL, PRIMARY KEY (channel, seq)) WITHOUT ROWID;
CREATE TABLE latest (
    channel TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, time_ms INTEGER NOT NULL,
    data TEXT NOT NULL, mode INTEGER NOT NULL, expires_ms INTEGER, PRIMARY KEY (channel, seq)) WITHOUT ROWID;
CREATE TABLE state (
    scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires_ms INTEGER,
    PRIMARY KEY (scope, key)) WITHOUT ROWID;
";

/// Sets the connection up (write-ahead log, fsync at every commit) and checks or creates the
/// tables.
pub(crate) fn prepare(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let unreadable = |source| StoreError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let format = |what: String| StoreError::Format {
        path: path.to_owned(),
        what,
    };
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(unreadable)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format(format!(
            "cannot use a write-ahead log (journal mode {mode})"
        )));
    }
    // FULL: the log is fsync'd at every commit, so an acknowledged publication survives a
    // power cut as well as a crash. The log is kept under 64 MiB between checkpoints.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864;")
        .map_err(unreadable)?;
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'herald_meta'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(unreadable)?;
    if !has_meta {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(unreadable)?;
        if tables > 0 {
            return Err(format("is a database Herald did not create".into()));
        }
        let create = format!(
            "BEGIN; {TABLES} INSERT INTO herald_meta VALUES ('format', '{FORMAT}'), ('created_ms', '{}'); COMMIT;",
            herald_core::now_ms()
        );
        conn.execute_batch(&create).map_err(unreadable)?;
        return Ok(());
    }
    let found: Option<String> = conn
        .query_row(
            "SELECT value FROM herald_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => format("has no format".into()),
            e => unreadable(e),
        })
        .map(Some)?;
    match found.as_deref().map(str::parse::<u32>) {
        Some(Ok(FORMAT)) => Ok(()),
        Some(Ok(n)) if n > FORMAT => {
            Err(format(format!("has format {n}, written by a newer Herald")))
        }
        _ => Err(format(format!("has format {found:?}"))),
    }
}

/// This machine's boot: differs after the machine restarted.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    match conn.query_row("SELECT value FROM herald_meta WHERE key = ?1", [key], |r| {
        r.get(0)
    }) {
        Ok(v) => Ok(Some(v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e),
    }
}

const SET_META: &str = "INSERT OR REPLACE INTO herald_meta (key, value) VALUES (?1, ?2)";

/// Starts a run: if the last run wrote without flushing and the machine stopped under it,
/// what it wrote last may be gone, so every channel starts under a new epoch (its history and
/// latest state dropped) rather than give an offset twice. Then records this run (flushed)
/// and sets the flushing mode.
pub(crate) fn begin_run(conn: &Connection, fsync: bool) -> rusqlite::Result<()> {
    let running = meta(conn, "running")?.as_deref() == Some("1");
    let flushed = meta(conn, "fsync")?.as_deref() != Some("0");
    let boot = boot_id();
    if running && !flushed && meta(conn, "boot_id")?.as_deref() != Some(boot.as_str()) {
        let names: Vec<String> = conn
            .prepare("SELECT name FROM channels")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let tx = conn.unchecked_transaction()?;
        for name in &names {
            tx.execute(
                "UPDATE channels SET epoch = ?1, top = 0 WHERE name = ?2",
                rusqlite::params![herald_core::new_epoch().as_str(), name],
            )?;
        }
        tx.execute_batch("DELETE FROM history; DELETE FROM latest;")?;
        tx.commit()?;
        tracing::warn!(
            channels = names.len(),
            "The machine stopped while Herald ran with engine.fsync = false: what it wrote last may be lost, so every channel starts under a new epoch and resuming clients are told to reset."
        );
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute(SET_META, ["running", "1"])?;
    tx.execute(SET_META, ["fsync", if fsync { "1" } else { "0" }])?;
    tx.execute(SET_META, ["boot_id", boot.as_str()])?;
    tx.commit()?;
    if !fsync {
        // The log is still consistent after a crash of the machine (SQLite's NORMAL in WAL
        // mode), but its last transactions may be gone: hence the check above.
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    }
    Ok(())
}

/// Records a clean stop, flushed.
pub(crate) fn end_run(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA synchronous = FULL")?;
    conn.execute(SET_META, ["running", "0"])?;
    Ok(())
}

fn mode(code: i64) -> Option<LatestState> {
    match code {
        1 => Some(LatestState::Last),
        2 => Some(LatestState::PerEvent),
        _ => None,
    }
}

/// Reads every channel, its history and latest state, and the state store. Rows that no
/// longer parse (a name or payload this Herald refuses) are skipped and counted in a warning.
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Recovered> {
    let mut skipped = 0usize;
    let mut channels: Vec<RecoveredChannel> = Vec::new();
    let mut index: HashMap<ChannelName, usize> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT name, epoch, top FROM channels")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let name = ChannelName::parse(row.get_ref(0)?.as_str()?);
            let epoch = Epoch::parse(row.get_ref(1)?.as_str()?);
            let top = u64::try_from(row.get::<_, i64>(2)?).ok();
            let (Ok(channel), Ok(epoch), Some(top)) = (name, epoch, top) else {
                skipped += 1;
                continue;
            };
            index.insert(channel.clone(), channels.len());
            channels.push(RecoveredChannel {
                channel,
                epoch,
                top,
                history: Vec::new(),
                latest: Vec::new(),
            });
        }
    }
    for table in ["history", "latest"] {
        let sql = if table == "history" {
            "SELECT channel, seq, event, time_ms, data, expires_ms, 0 FROM history ORDER BY channel, seq"
        } else {
            "SELECT channel, seq, event, time_ms, data, expires_ms, mode FROM latest ORDER BY channel, seq"
        };
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        // Rows come grouped by channel: look each channel up once.
        let mut current: Option<(String, Option<usize>)> = None;
        while let Some(row) = rows.next()? {
            let name = row.get_ref(0)?.as_str()?;
            if current.as_ref().is_none_or(|(n, _)| n != name) {
                let at = ChannelName::parse(name)
                    .ok()
                    .and_then(|c| index.get(&c).copied());
                current = Some((name.to_owned(), at));
            }
            let Some((_, Some(at))) = current else {
                skipped += 1;
                continue;
            };
            let c = &mut channels[at];
            let offset = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
            let time_ms = u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0);
            let expires: Option<i64> = row.get(5)?;
            let expires = expires.map(|e| u64::try_from(e).unwrap_or(0));
            let p = stored_publication(
                &c.channel,
                &c.epoch,
                offset,
                row.get_ref(2)?.as_str()?,
                row.get(4)?,
                time_ms,
            );
            match (p, table) {
                (Some(p), "history") => c.history.push((p, expires.unwrap_or(0))),
                (Some(p), _) => match mode(row.get(6)?) {
                    Some(m) => c.latest.push((p, m, expires)),
                    None => skipped += 1,
                },
                (None, _) => skipped += 1,
            }
        }
    }
    let mut state = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT scope, key, value, expires_ms FROM state")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let expires: Option<i64> = row.get(3)?;
            let bytes: Vec<u8> = row.get(2)?;
            state.push((
                row.get(0)?,
                row.get(1)?,
                StateValue {
                    bytes: Arc::from(bytes),
                    expires_ms: expires.map(|e| u64::try_from(e).unwrap_or(0)),
                },
            ));
        }
    }
    if skipped > 0 {
        tracing::warn!(
            rows = skipped,
            "Stored rows that no longer parse (a channel or event name, or a payload) were skipped."
        );
    }
    Ok(Recovered { channels, state })
}
