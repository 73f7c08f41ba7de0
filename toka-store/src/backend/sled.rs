//! The [`sled`] back-end: the embedded default.
//!
//! All journal keys live in sled's default tree. Writes are plain inserts in order: sled
//! recovers a prefix of its log (it stops at the first message that is missing or fails
//! its checksum), which is the guarantee [`Backend`] asks for. sled's own timer-driven
//! flushing is turned off; the journal's commit thread decides when to flush (group
//! commit).
//!
//! The anchor lives in the file `toka-anchor` beside sled's own files, so damage that makes
//! sled recover less than was flushed is caught when the journal opens.
//!
//! # Durable flush
//! sled 0.34's flush is not a full sync on Linux: it writes its log with
//! `sync_file_range`, which flushes neither the drive's write cache nor the file's
//! metadata (its grown size), and it never syncs the files it writes items too large for
//! the log into (`blobs/`). So [`Backend::flush`] here follows sled's flush with an
//! `fdatasync` of the log file `db`, of every blob file written since the last flush,
//! and of the `blobs` directory when one was added. Only then does an acknowledged append
//! survive a crash of the machine, as the journal promises; the price is the disk's real
//! sync latency, shared by every append of a group commit.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Backend, Entry, WriteBatch};
use crate::Error;

/// How long [`SledBackend::open`] waits for a lock that another handle in this process is
/// still releasing.
pub const LOCK_RETRY_FOR: Duration = Duration::from_secs(5);

/// Name of the anchor file inside the sled directory.
pub const ANCHOR_FILE: &str = "toka-anchor";

/// sled storage for [`SledJournal`](crate::SledJournal).
#[derive(Clone, Debug)]
pub struct SledBackend {
    db: sled::Db,
    /// The anchor file; `None` for a database opened elsewhere ([`SledBackend::from_db`]).
    anchor: Option<Arc<Mutex<AnchorFile>>>,
    /// What [`Backend::flush`] syncs after sled's flush; `None` for a database opened
    /// elsewhere.
    files: Option<Arc<Mutex<SyncedFiles>>>,
}

/// sled's files that its own flush leaves unsynced (see the module docs).
#[derive(Debug)]
struct SyncedFiles {
    dir: PathBuf,
    /// The log file `db`, opened for `fdatasync`.
    log: File,
    /// The blob files already synced (sled names them by log sequence number and
    /// removes them when their item is rewritten).
    blobs: std::collections::HashSet<std::ffi::OsString>,
}

impl SyncedFiles {
    fn open(dir: &Path) -> Result<Self, Error> {
        let log = File::open(dir.join("db"))
            .map_err(|e| Error::backend("opening sled's log file to sync it", e))?;
        let mut files = SyncedFiles {
            dir: dir.to_owned(),
            log,
            blobs: std::collections::HashSet::new(),
        };
        // What sled wrote before this handle is synced once, now.
        files.sync()?;
        Ok(files)
    }

    /// `fdatasync`s the log, the blob files not synced yet, and the blob directory if
    /// it gained entries.
    fn sync(&mut self) -> Result<(), Error> {
        self.log
            .sync_data()
            .map_err(|e| Error::backend("syncing sled's log file", e))?;
        let blob_dir = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blob_dir) else {
            return Ok(());
        };
        let mut present = std::collections::HashSet::new();
        let mut added = false;
        for entry in entries {
            let entry = entry.map_err(|e| Error::backend("listing sled's blobs", e))?;
            let name = entry.file_name();
            if !self.blobs.contains(&name) {
                if !sync_blob(&entry.path())? {
                    continue;
                }
                added = true;
            }
            present.insert(name);
        }
        if added {
            File::open(&blob_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| Error::backend("syncing sled's blob directory", e))?;
        }
        self.blobs = present;
        Ok(())
    }
}

/// `fdatasync`s blob file `path`; `false` if it is gone. sled removes a blob when its
/// item is rewritten, which may happen between the listing and the sync: the item's
/// new value is in the log or in a newer blob, and nothing is left to sync here (a
/// flush failing on it would poison the journal for nothing).
fn sync_blob(path: &Path) -> Result<bool, Error> {
    match File::open(path).and_then(|blob| blob.sync_data()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::backend("syncing a sled blob", e)),
    }
}

#[derive(Debug)]
struct AnchorFile {
    path: PathBuf,
    file: Option<File>,
}

impl SledBackend {
    /// Opens (or creates) the database in directory `path`.
    ///
    /// # Errors
    /// [`Error::Backend`] if sled cannot open it (missing permissions, another process
    /// holds its lock, damaged files).
    ///
    /// sled releases its directory lock from its own background threads shortly after the
    /// last handle is dropped, so a reopen right after a close in the same process can find
    /// the lock still held; `open` retries that case for up to [`LOCK_RETRY_FOR`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let config = sled::Config::new().path(path).flush_every_ms(None);
        let deadline = Instant::now() + LOCK_RETRY_FOR;
        loop {
            // Again on every try: while a handle going away still holds the lock, the
            // removal is skipped, and sled would then open onto the unfinished snapshot.
            remove_unfinished_snapshots(path)?;
            match config.open() {
                Ok(db) => {
                    let anchor = AnchorFile {
                        path: path.join(ANCHOR_FILE),
                        file: None,
                    };
                    let files = SyncedFiles::open(path)?;
                    return Ok(SledBackend {
                        db,
                        anchor: Some(Arc::new(Mutex::new(anchor))),
                        files: Some(Arc::new(Mutex::new(files))),
                    });
                }
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(Error::backend("opening the sled database", e)),
            }
        }
    }

    /// Wraps an already open database (its flush settings are left as they are).
    /// Without a directory of its own, it keeps no anchor, and its flush is sled's own
    /// (not a full sync: see the module docs).
    pub fn from_db(db: sled::Db) -> Self {
        SledBackend {
            db,
            anchor: None,
            files: None,
        }
    }

    /// The underlying database, for tests and tools that inspect stored bytes.
    #[doc(hidden)]
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// Removes the `snap.*.generating` files an interrupted sled snapshot write left behind.
///
/// sled writes a snapshot to `snap.<lsn>.generating`, fsyncs it and renames it to
/// `snap.<lsn>`: the rename is the commit. But when it opens, sled takes the greatest file
/// name starting with `snap.` as the latest snapshot, and `snap.<lsn>.generating` sorts
/// after `snap.<lsn>`: a snapshot write cut off by a full disk (sled writes one while
/// opening) leaves an empty or torn file that makes every later open fail with "Read
/// corrupted data" — with nothing lost but the database unopenable. Such a file is never
/// a complete snapshot, so it is removed before sled opens; this is done only while
/// holding sled's own lock on `db`, so a snapshot another process is writing right now is
/// never touched.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), Error> {
    use fs2::FileExt;
    let Ok(db) = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
    else {
        // A new database, or one sled will report on itself.
        return Ok(());
    };
    if db.try_lock_exclusive().is_err() {
        // Held by another handle: sled's open says so, or retries.
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::backend("listing the sled directory", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::backend("removing an unfinished sled snapshot", e))?;
            tracing::warn!(
                file = %entry.path().display(),
                "removed an unfinished sled snapshot (a snapshot write was cut off, e.g. by a full disk)"
            );
        }
    }
    // Dropping `db` releases the lock for sled to take.
    drop(db);
    Ok(())
}

/// The range iterator of [`SledBackend`].
pub struct SledRange(sled::Iter);

impl std::fmt::Debug for SledRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledRange")
    }
}

impl Iterator for SledRange {
    type Item = Result<Entry<sled::IVec>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|r| r.map_err(|e| Error::backend("scanning a range", e)))
    }
}

impl Backend for SledBackend {
    type Value = sled::IVec;
    type Range = SledRange;

    /// Plain inserts and removes, in order. Deliberately not `apply_batch`: in sled 0.34 each
    /// `apply_batch` seals an I/O buffer, and a `flush` after many of them takes seconds
    /// (measured: 2 600 two-key batches made the next flush take 1.6 s and stalled every
    /// writer behind it). Ordered single writes plus sled's prefix recovery give the
    /// guarantee the journal needs.
    fn apply(&self, batch: WriteBatch) -> Result<(), Error> {
        for (key, value) in batch.ops {
            match value {
                Some(value) => self.db.insert(key, value).map(drop),
                None => self.db.remove(key).map(drop),
            }
            .map_err(|e| Error::backend("writing", e))?;
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, Error> {
        self.db
            .get(key)
            .map_err(|e| Error::backend("reading a key", e))
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Self::Range {
        if start >= end {
            // sled panics on an inverted range; an empty range of the same type instead.
            return SledRange(self.db.range(start..start));
        }
        SledRange(self.db.range(start..end))
    }

    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry<Self::Value>>, Error> {
        if start >= end {
            return Ok(None);
        }
        self.db
            .range(start..end)
            .next_back()
            .transpose()
            .map_err(|e| Error::backend("reading the last key of a range", e))
    }

    /// sled's flush, then an `fdatasync` of what it leaves unsynced (see the module docs).
    fn flush(&self) -> Result<(), Error> {
        self.db
            .flush()
            .map_err(|e| Error::backend("flushing to disk", e))?;
        match &self.files {
            Some(files) => files.lock().unwrap_or_else(|e| e.into_inner()).sync(),
            None => Ok(()),
        }
    }

    /// Overwrites the anchor file in place. No fsync: the anchor is written only after
    /// sled's flush returned, so even when a power loss keeps an older anchor (or tears it,
    /// which its checksum reveals) it never claims more than the disk holds.
    fn write_anchor(&self, anchor: &[u8]) -> Result<(), Error> {
        let Some(slot) = &self.anchor else {
            return Ok(());
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        let AnchorFile { path, file } = &mut *slot;
        let file = match file {
            Some(file) => file,
            None => file.insert(
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&*path)
                    .map_err(|e| Error::backend("opening the anchor file", e))?,
            ),
        };
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(anchor))
            .map_err(|e| Error::backend("writing the anchor file", e))
    }

    fn read_anchor(&self) -> Result<Option<Vec<u8>>, Error> {
        let Some(slot) = &self.anchor else {
            return Ok(None);
        };
        let path = slot.lock().unwrap_or_else(|e| e.into_inner()).path.clone();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::backend("reading the anchor file", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item too large for sled's log goes to a blob file, which sled never syncs: the
    /// flush syncs it (and forgets it once sled removed it).
    #[test]
    fn flush_syncs_the_blob_files_sled_leaves_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledBackend::open(dir.path()).unwrap();
        let synced = || {
            let files = backend.files.as_ref().unwrap();
            files.lock().unwrap().blobs.len()
        };
        let mut batch = WriteBatch::default();
        batch.put(b"small".to_vec(), vec![1; 64]);
        backend.apply(batch).unwrap();
        backend.flush().unwrap();
        assert_eq!(synced(), 0);

        let mut batch = WriteBatch::default();
        batch.put(b"large".to_vec(), vec![7; 600 << 10]);
        backend.apply(batch).unwrap();
        backend.flush().unwrap();
        let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(blobs >= 1, "sled wrote no blob for a 600 KiB item");
        assert_eq!(synced(), blobs);
    }

    /// A blob that sled removes between the flush's listing and its sync (its item was
    /// rewritten) is nothing to sync, not a failed flush.
    #[test]
    fn a_blob_gone_before_its_sync_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!sync_blob(&dir.path().join("blobs").join("42")).unwrap());
        let present = dir.path().join("43");
        std::fs::write(&present, b"blob").unwrap();
        assert!(sync_blob(&present).unwrap());
    }

    /// Flushes racing rewrites of large items never fail. sled removes a blob when the
    /// segment that replaced it becomes inactive, or at once when a concurrent write
    /// aborts its reservation; before, a blob removed between the flush's listing and
    /// its sync failed the flush and poisoned the journal (found by the recovery
    /// benchmark, where agents save large snapshots while the writer appends).
    #[test]
    fn flushes_survive_blobs_removed_under_them() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(dir.path()).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3u8)
            .map(|w| {
                let (backend, stop) = (Arc::clone(&backend), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut round = 0u8;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // The same keys from every writer: some reservations abort.
                        for key in 0..16u8 {
                            let mut batch = WriteBatch::default();
                            batch.put(vec![b'k', key], vec![round ^ w; 64 << 10]);
                            backend.apply(batch).unwrap();
                        }
                        round = round.wrapping_add(1);
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut flushes = 0;
        let mut failed = None;
        while failed.is_none() && std::time::Instant::now() < deadline {
            match backend.flush() {
                Ok(()) => flushes += 1,
                Err(error) => failed = Some(error),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(failed.is_none(), "flush {flushes} failed: {failed:?}");
        assert!(flushes > 10, "only {flushes} flushes");
    }
}
