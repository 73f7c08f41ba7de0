//! An in-memory [`Backend`]: a `BTreeMap` behind a lock. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use super::{Backend, Entry, WriteBatch};
use crate::Error;

type Map = BTreeMap<Vec<u8>, Arc<[u8]>>;

/// In-memory storage for [`MemoryJournal`](crate::MemoryJournal).
///
/// Cloning shares the data, which lets a test "reopen" a journal: drop it, then build a
/// new one over a clone of the same backend.
///
/// ```
/// use toka_store::{JournalConfig, MemoryBackend, MemoryJournal};
/// let backend = MemoryBackend::new();
/// let journal = MemoryJournal::with_backend(backend.clone(), JournalConfig::default()).unwrap();
/// drop(journal);
/// let reopened = MemoryJournal::with_backend(backend, JournalConfig::default()).unwrap();
/// # let _ = reopened;
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    map: Arc<RwLock<Map>>,
    anchor: Arc<RwLock<Option<Vec<u8>>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` over the raw key-value map, for tests that inspect or damage stored bytes.
    #[doc(hidden)]
    pub fn with_raw<R>(&self, f: impl FnOnce(&mut BTreeMap<Vec<u8>, Arc<[u8]>>) -> R) -> R {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }
}

/// Entries are copied out of the map in pages of this many, so a scan holds the lock only
/// briefly and never copies the whole range.
const PAGE: usize = 256;

/// The lazy range iterator of [`MemoryBackend`].
#[derive(Debug)]
pub struct MemoryRange {
    map: Arc<RwLock<Map>>,
    next: Bound<Vec<u8>>,
    end: Vec<u8>,
    page: std::vec::IntoIter<Entry<Arc<[u8]>>>,
    done: bool,
}

impl Iterator for MemoryRange {
    type Item = Result<Entry<Arc<[u8]>>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(entry) = self.page.next() {
            return Some(Ok(entry));
        }
        if self.done {
            return None;
        }
        let page: Vec<Entry<Arc<[u8]>>> = {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            map.range::<[u8], _>((
                self.next.as_ref().map(Vec::as_slice),
                Bound::Excluded(self.end.as_slice()),
            ))
            .take(PAGE)
            .map(|(k, v)| (Arc::from(k.as_slice()), Arc::clone(v)))
            .collect()
        };
        match page.last() {
            Some((key, _)) if page.len() == PAGE => self.next = Bound::Excluded(key.to_vec()),
            _ => self.done = true,
        }
        self.page = page.into_iter();
        self.page.next().map(Ok)
    }
}

impl Backend for MemoryBackend {
    type Value = Arc<[u8]>;
    type Range = MemoryRange;

    fn apply(&self, batch: WriteBatch) -> Result<(), Error> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (key, value) in batch.ops {
            match value {
                Some(value) => map.insert(key, Arc::from(value)),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, Error> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).cloned())
    }

    fn range(&self, start: &[u8], end: &[u8]) -> Self::Range {
        MemoryRange {
            map: Arc::clone(&self.map),
            next: Bound::Included(start.to_vec()),
            end: end.to_vec(),
            page: Vec::new().into_iter(),
            done: start >= end,
        }
    }

    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry<Self::Value>>, Error> {
        if start >= end {
            return Ok(None);
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .next_back()
            .map(|(k, v)| (Arc::from(k.as_slice()), Arc::clone(v))))
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn write_anchor(&self, anchor: &[u8]) -> Result<(), Error> {
        *self.anchor.write().unwrap_or_else(|e| e.into_inner()) = Some(anchor.to_vec());
        Ok(())
    }

    fn read_anchor(&self) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .anchor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}
