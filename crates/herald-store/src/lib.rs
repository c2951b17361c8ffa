//! Herald's durable storage for a single node: the embedded engine's [`Journal`] in SQLite
//! (`DATA_DIR/herald.db`, write-ahead log, `synchronous=FULL`).
//!
//! The engine's writer thread hands each group commit to [`SqliteJournal::write`], one
//! transaction; SQLite fsyncs its log before the commit returns, so what the engine then fans
//! out and acknowledges survives `kill -9` and a power cut. A failed write (a full disk)
//! rolls back and leaves the store usable: once space is free, the next commit succeeds.
//!
//! [`open`] takes an exclusive lock on `DATA_DIR/LOCK` for the life of the process, checks the
//! format, and reads everything back. It never resets a store it cannot read.

mod schema;

use herald_core::memory::{Entry, Journal, JournalError, Recovered};
use herald_core::{ChannelName, LatestState};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use schema::FORMAT;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created or its lock file opened.
    #[error("cannot use the data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("the data directory {0} is in use by another Herald process (it holds LOCK there); stop that process first, or give this one its own engine.data_dir")]
    Locked(PathBuf),
    /// SQLite refused the file (not a database, corrupt, unreadable).
    #[error("cannot read the store {path}: {source}. Herald does not reset a store it cannot read; move the directory aside to start with an empty one (clients will be told to reset)")]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file is a database, but not one this Herald can read.
    #[error("the store {path} {what}; this Herald reads store format {FORMAT}. Use the Herald that wrote it, or move the directory aside to start with an empty one (clients will be told to reset)")]
    Format {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
}

/// The journal: one SQLite connection, used only by the engine's writer thread.
#[derive(Debug)]
pub struct SqliteJournal {
    conn: Connection,
    /// Held for the life of the journal: the lock on `DATA_DIR/LOCK`.
    _lock: File,
}

/// The database file in `dir`.
pub fn database_path(dir: &Path) -> PathBuf {
    dir.join("herald.db")
}

/// Opens (or creates) the store in `dir` and reads back everything it keeps. `fsync`: flush
/// every transaction to the disk (else to the operating system only; see
/// `MemoryEngineConfig::fsync`).
pub fn open(dir: &Path, fsync: bool) -> Result<(SqliteJournal, Recovered), StoreError> {
    let directory = |source| StoreError::Directory {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(directory)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(directory)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => return Err(directory(e)),
    }
    let path = database_path(dir);
    let unreadable = |source| StoreError::Unreadable {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(&path).map_err(unreadable)?;
    schema::prepare(&conn, &path)?;
    schema::begin_run(&conn, fsync).map_err(unreadable)?;
    let recovered = schema::load(&conn).map_err(unreadable)?;
    Ok((SqliteJournal { conn, _lock: lock }, recovered))
}

fn mode_code(mode: LatestState) -> i64 {
    match mode {
        LatestState::Off => 0,
        LatestState::Last => 1,
        LatestState::PerEvent => 2,
    }
}

impl SqliteJournal {
    fn write_all(&mut self, entries: &[Entry]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        // Per channel, only the last position and the highest trim of a group are written;
        // both are flushed before a `Forget` so they never touch a later channel of that name.
        let mut tops: HashMap<&ChannelName, (&str, u64)> = HashMap::new();
        let mut trims: HashMap<&ChannelName, u64> = HashMap::new();
        for entry in entries {
            match entry {
                Entry::Channel { channel, epoch } => {
                    tx.prepare_cached(
                        "INSERT INTO channels (name, epoch, top) VALUES (?1, ?2, 0)
                         ON CONFLICT (name) DO NOTHING",
                    )?
                    .execute(params![channel.as_str(), epoch.as_str()])?;
                }
                Entry::Publication {
                    publication: p,
                    history,
                    latest,
                    once,
                } => {
                    if let Some((scope, key, v)) = once {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO state (scope, key, value, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![scope, key, &v.bytes[..], v.expires_ms.map(clamp)])?;
                    }
                    let offset = p.position.offset;
                    tops.insert(&p.channel, (p.position.epoch.as_str(), offset));
                    let fields = (
                        p.channel.as_str(),
                        i64::try_from(offset).unwrap_or(i64::MAX),
                        p.event.as_str(),
                        i64::try_from(p.time_ms).unwrap_or(i64::MAX),
                        p.data.get(),
                    );
                    if let Some(expires) = history {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO history (channel, seq, event, time_ms, data, expires_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?
                        .execute(params![fields.0, fields.1, fields.2, fields.3, fields.4, clamp(*expires)])?;
                    }
                    if let Some((mode, expires)) = latest {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO latest (channel, seq, event, time_ms, data, mode, expires_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?
                        .execute(params![
                            fields.0,
                            fields.1,
                            fields.2,
                            fields.3,
                            fields.4,
                            mode_code(*mode),
                            expires.map(clamp)
                        ])?;
                    }
                }
                Entry::Trim { channel, through } => {
                    let t = trims.entry(channel).or_default();
                    *t = (*t).max(*through);
                }
                Entry::DropLatest { channel, offset } => {
                    tx.prepare_cached("DELETE FROM latest WHERE channel = ?1 AND seq = ?2")?
                        .execute(params![channel.as_str(), clamp(*offset)])?;
                }
                Entry::Forget { channel } => {
                    flush(&tx, &mut tops, &mut trims)?;
                    for sql in [
                        "DELETE FROM channels WHERE name = ?1",
                        "DELETE FROM history WHERE channel = ?1",
                        "DELETE FROM latest WHERE channel = ?1",
                    ] {
                        tx.prepare_cached(sql)?.execute([channel.as_str()])?;
                    }
                }
                Entry::State { scope, key, value } => match value {
                    Some(v) => {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO state (scope, key, value, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![scope, key, &v.bytes[..], v.expires_ms.map(clamp)])?;
                    }
                    None => {
                        tx.prepare_cached("DELETE FROM state WHERE scope = ?1 AND key = ?2")?
                            .execute(params![scope, key])?;
                    }
                },
            }
        }
        flush(&tx, &mut tops, &mut trims)?;
        tx.commit()
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn flush(
    tx: &rusqlite::Transaction<'_>,
    tops: &mut HashMap<&ChannelName, (&str, u64)>,
    trims: &mut HashMap<&ChannelName, u64>,
) -> rusqlite::Result<()> {
    for (channel, (epoch, top)) in tops.drain() {
        tx.prepare_cached(
            "INSERT INTO channels (name, epoch, top) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, top = excluded.top",
        )?
        .execute(params![channel.as_str(), epoch, clamp(top)])?;
    }
    for (channel, through) in trims.drain() {
        tx.prepare_cached("DELETE FROM history WHERE channel = ?1 AND seq <= ?2")?
            .execute(params![channel.as_str(), clamp(through)])?;
    }
    Ok(())
}

impl Journal for SqliteJournal {
    fn write(&mut self, entries: &[Entry]) -> Result<(), JournalError> {
        self.write_all(entries)
            .map_err(|e| JournalError(e.to_string()))
    }

    fn close(&mut self) {
        // Folds the log into the database, so the next start reads one file, and records the
        // clean stop (flushed, whatever `fsync` says).
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .and_then(|()| schema::end_run(&self.conn));
        if let Err(e) = done {
            tracing::warn!(error = %e, "The store could not record a clean stop; the next start replays its log.");
        }
    }
}

#[cfg(test)]
mod tests;
