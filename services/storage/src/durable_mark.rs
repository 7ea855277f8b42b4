//! The durability mark: Meridian's own record, outside fjall's journal, of how far the journal
//! had been made durable.
//!
//! fjall recovers its journal by replaying batches until one does not decode, and takes that
//! one for a torn tail. That is right for a write torn by a crash (never fsynced, so never
//! acknowledged) and wrong for a flipped length or tag byte further back, which silently drops
//! every batch after it, acknowledged or not. So the log writer numbers its group commits and
//! writes the number into the last batch of each (key [`WRITE_NUMBER_KEY`] of keyspace
//! [`META_KEYSPACE`]); once the fsync has returned, a mark thread records the number in
//! `DIR/meridian-durable` — at most every [`MARK_EVERY`] and when the store closes, atomically (a
//! temporary file, fsync, rename, fsync of the directory). On open the number recovered from
//! the journal must reach the mark: when it does not, the journal has lost writes it had made
//! durable, and the store refuses to open ([`crate::Error::Corrupt`]).
//!
//! The mark lags the fsync, so it never covers a write that was not durable: a torn last write
//! raises no false alarm. What it cannot see: a loss confined to the writes of the last
//! [`MARK_EVERY`] before a crash.

use crate::{Error, Result};
use fjall::Keyspace;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// The mark's file, in the store's directory (so that it goes wherever the store goes).
pub const MARK_FILE: &str = "meridian-durable";
/// The keyspace holding the writer's group-commit number.
pub const META_KEYSPACE: &str = "node_meta";
/// The key of the group-commit number (8 bytes, big-endian).
pub const WRITE_NUMBER_KEY: &[u8] = b"durable-write";
/// How often at most the mark is written.
pub const MARK_EVERY: Duration = Duration::from_millis(200);

/// The mark in `dir`, if one was ever written.
pub fn read_mark(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(MARK_FILE);
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(e)),
        Ok(text) => parse(&text).map(Some).ok_or_else(|| {
            Error::Corrupt(format!(
                "{} does not read as a durability mark (it begins {:?}); refusing to start \
                 without knowing how much of the journal was durable",
                path.display(),
                text.chars().take(32).collect::<String>()
            ))
        }),
    }
}

fn parse(text: &str) -> Option<u64> {
    text.strip_prefix("durable-write ")?
        .strip_suffix('\n')?
        .parse()
        .ok()
}

/// Records `n` as the mark in `dir`, atomically and durably.
pub fn write_mark(dir: &Path, n: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{MARK_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("durable-write {n}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARK_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The number of the last group commit the journal gave back (0 for a store that has none).
pub fn recovered(meta: &Keyspace) -> Result<u64> {
    match meta.get(WRITE_NUMBER_KEY)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                Error::Corrupt(format!(
                    "the stored group-commit number is {} bytes, not 8",
                    v.len()
                ))
            }),
    }
}

/// On open: the recovered group-commit number, checked against the mark in `dir`.
pub fn check(dir: &Path, meta: &Keyspace) -> Result<u64> {
    let recovered = recovered(meta)?;
    match read_mark(dir)? {
        Some(mark) if recovered < mark => Err(Error::Corrupt(format!(
            "the journal gives back group commits up to {recovered}, but {mark} had been made \
             durable ({}): fjall dropped durable batches as if they were a torn tail, so this \
             store lost writes it acknowledged; refusing to start rather than serve it. Restore \
             this node from a backup (meridian snapshot restore) or replace it as a dead voter \
             (docs/operations.md, \"When the data does not check out\")",
            dir.join(MARK_FILE).display()
        ))),
        _ => Ok(recovered),
    }
}

/// The mark thread: every [`MARK_EVERY`] (and once more when `stop` disconnects, i.e. when
/// the log writer ends) it records `durable` if it moved. A mark that cannot be written is a
/// storage failure (`fail`), and no mark is written after it.
pub fn spawn(
    dir: PathBuf,
    durable: Arc<AtomicU64>,
    stop: Receiver<()>,
    fail: impl Fn(String) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("meridian-durable-mark".into())
        .spawn(move || {
            let mut marked = durable.load(Ordering::Acquire);
            loop {
                let last = match stop.recv_timeout(MARK_EVERY) {
                    Err(RecvTimeoutError::Timeout) | Ok(()) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                };
                let n = durable.load(Ordering::Acquire);
                if n > marked {
                    if let Err(e) = write_mark(&dir, n) {
                        fail(format!(
                            "writing the durability mark {} failed: {e}",
                            dir.join(MARK_FILE).display()
                        ));
                        return;
                    }
                    marked = n;
                }
                if last {
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_mark(dir.path()).expect("no mark"), None);
        write_mark(dir.path(), 42).expect("write");
        assert_eq!(read_mark(dir.path()).expect("mark"), Some(42));
        std::fs::write(dir.path().join(MARK_FILE), "durable-write 4x\n").expect("damage");
        let err = read_mark(dir.path()).expect_err("damaged");
        assert!(err.to_string().contains("does not read"), "{err}");
    }
}
