//! The stream index: where a stream's events sit in the global log.
//!
//! An entry is a *run*: contiguous positions holding contiguous sequence numbers of one
//! stream (`first position`, `first seq`, `last seq`). Entries are **not** written with the
//! records: that would double the writes of single-event appends. They are kept in memory
//! ([`Streams`], one per appended batch) and *checkpointed* to the back-end in bulk by the
//! commit thread: **one value per stream per checkpoint**, key `S ‖ len ‖ stream ‖ last
//! seq`, holding that stream's runs (adjacent runs merged), followed by the metadata key
//! `M/index-through` (every batch ending at or before that position is stored). On open,
//! the entries of batches after that position are rebuilt from the records themselves,
//! which carry their stream, sequence number and the last position of their batch.
//!
//! # Invariants
//! - Entries of one stream are kept in sequence order, and the in-memory entries of a
//!   stream are always newer than its stored ones (an entry may briefly be in both while a
//!   checkpoint runs; readers skip what they already walked).
//! - A stream present in the in-memory map has its current version there; a stream
//!   absent from it has its version in its last stored entry.

use std::collections::VecDeque;
use std::hash::RandomState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Error;
use crate::backend::{Backend, WriteBatch};
use crate::codec::{self, StoredRecord, keys};
use crate::journal::WriterState;
use crate::log::Scan;

/// Checkpoint once this many entries are pending…
const CHECKPOINT_ENTRIES: usize = 4096;
/// …or once the oldest pending entry is this old.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);

/// A run of contiguous positions holding contiguous sequence numbers of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) first_position: u64,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
}

impl IndexEntry {
    fn last_position(&self) -> u64 {
        self.first_position + (self.last_seq - self.first_seq)
    }
}

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub(crate) version: u64,
    /// Entries not yet checkpointed, oldest first.
    pending: VecDeque<IndexEntry>,
    /// The version a write in progress leaves the stream at, with that write's number
    /// ([`Streams::begin_write`]): a later batch of the same write sees it; a write that
    /// fails leaves it behind, stale.
    planned: Option<(u64, u64)>,
}

impl StreamState {
    /// The version a batch of write `write` appends after.
    pub(crate) fn version_in(&self, write: u64) -> u64 {
        match self.planned {
            Some((planned_in, version)) if planned_in == write => version,
            _ => self.version,
        }
    }

    /// Notes that write `write` leaves the stream at `version` (once written).
    pub(crate) fn plan(&mut self, write: u64, version: u64) {
        self.planned = Some((write, version));
    }
}

/// Versions and unstored index entries of the streams touched since the journal opened.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    /// Keyed by stream names, hashed with SipHash under a random key (names come from
    /// outside).
    map: hashbrown::HashMap<Arc<str>, StreamState, RandomState>,
    /// Writes begun ([`Streams::begin_write`]).
    writes: u64,
    /// Streams of the pending entries in position order, with each entry's last position.
    order: VecDeque<(Arc<str>, u64)>,
    /// When the oldest pending entry was added.
    oldest: Option<Instant>,
}

impl Streams {
    /// The interned id and state of `stream`, loading its version from the stored index
    /// on first use.
    pub(crate) fn get_or_load<B: Backend>(
        &mut self,
        backend: &B,
        stream: &str,
    ) -> Result<(Arc<str>, &mut StreamState), Error> {
        // One hash of the name, found or not.
        let entry = match self.map.entry_ref(stream) {
            hashbrown::hash_map::EntryRef::Occupied(entry) => entry,
            hashbrown::hash_map::EntryRef::Vacant(entry) => {
                let version = stored_version(backend, stream)?;
                let state = StreamState {
                    version,
                    ..StreamState::default()
                };
                entry.insert_entry_with_key(Arc::from(stream), state)
            }
        };
        Ok((Arc::clone(entry.key()), entry.into_mut()))
    }

    /// Numbers a new write, for the versions it plans ([`StreamState::plan`]).
    pub(crate) fn begin_write(&mut self) -> u64 {
        self.writes += 1;
        self.writes
    }

    /// The version of `stream` if it was touched since opening.
    pub(crate) fn version(&self, stream: &str) -> Option<u64> {
        self.map.get(stream).map(|s| s.version)
    }

    /// Records a batch just written to `stream` (whose state `get_or_load` returned).
    pub(crate) fn push(&mut self, stream: Arc<str>, entry: IndexEntry) {
        if let Some(state) = self.map.get_mut(&*stream) {
            state.version = entry.last_seq;
            state.pending.push_back(entry);
            self.order.push_back((stream, entry.last_position()));
            self.oldest.get_or_insert_with(Instant::now);
        }
    }

    /// In-memory entries of `stream` that end at or after `from_seq`.
    pub(crate) fn pending_from(&self, stream: &str, from_seq: u64) -> Vec<IndexEntry> {
        self.map.get(stream).map_or_else(Vec::new, |state| {
            state
                .pending
                .iter()
                .filter(|e| e.last_seq >= from_seq)
                .copied()
                .collect()
        })
    }

    fn checkpoint_due(&self) -> bool {
        self.order.len() >= CHECKPOINT_ENTRIES
            || self.oldest.is_some_and(|t| t.elapsed() >= CHECKPOINT_AFTER)
    }
}

/// The version of `stream` according to the stored index.
pub(crate) fn stored_version<B: Backend>(backend: &B, stream: &str) -> Result<u64, Error> {
    let prefix = keys::stream_prefix(stream);
    match backend.last_in(&prefix, &keys::prefix_end(&prefix))? {
        None => Ok(0),
        Some((key, _)) => {
            keys::index_last_seq(key.as_ref()).ok_or_else(|| Error::CorruptMetadata {
                what: format!("index of stream {stream:?}"),
                reason: "malformed key".into(),
            })
        }
    }
}

/// The position through which every batch's entry is stored.
pub(crate) fn stored_through<B: Backend>(backend: &B) -> Result<u64, Error> {
    match backend.get(keys::INDEX_THROUGH)? {
        None => Ok(0),
        Some(value) => {
            let bytes: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| Error::CorruptMetadata {
                    what: "index checkpoint".into(),
                    reason: format!("{} bytes, expected 8", value.as_ref().len()),
                })?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

/// Stores every pending entry, then the checkpoint position, and forgets the stored
/// entries. With `force` false it only runs when enough entries are pending or the oldest
/// is old enough. Takes the writer lock twice, briefly; the back-end writes run without it.
pub(crate) fn checkpoint<B: Backend>(
    backend: &B,
    writer: &Mutex<WriterState>,
    force: bool,
) -> Result<(), Error> {
    let (batch, through) = {
        let mut guard = writer.lock().unwrap_or_else(|e| e.into_inner());
        let streams = &mut guard.streams;
        let Some(&(_, through)) = streams.order.back() else {
            return Ok(());
        };
        if !force && !streams.checkpoint_due() {
            return Ok(());
        }
        let mut batch = WriteBatch::with_capacity(streams.map.len() + 1);
        for (stream, state) in &streams.map {
            if let Some(last) = state.pending.back() {
                batch.put(
                    keys::stream_index(stream, last.last_seq),
                    encode_runs(state.pending.iter().copied()),
                );
            }
        }
        // Last: the checkpoint never claims entries that are not stored before it.
        batch.put(keys::INDEX_THROUGH, through.to_be_bytes().to_vec());
        (batch, through)
    };
    backend.apply(batch)?;
    let mut guard = writer.lock().unwrap_or_else(|e| e.into_inner());
    let streams = &mut guard.streams;
    while let Some((stream, last_position)) = streams.order.front() {
        if *last_position > through {
            break;
        }
        if let Some(state) = streams.map.get_mut(&**stream) {
            state.pending.pop_front();
        }
        streams.order.pop_front();
    }
    streams.oldest = (!streams.order.is_empty()).then(Instant::now);
    Ok(())
}

/// Rebuilds the in-memory entries of the batches in `(checkpoint, head]` from the records.
///
/// # Errors
/// [`Error::Corrupt`] naming the first record that cannot be read.
pub(crate) fn rebuild<B: Backend>(backend: &B, head: u64) -> Result<Streams, Error> {
    let mut streams = Streams::default();
    let from = stored_through(backend)?.saturating_add(1);
    if from > head {
        return Ok(streams);
    }
    let mut current: Option<(Arc<str>, IndexEntry, u64)> = None;
    let mut tail = Scan::new(backend, from, Some(head));
    while let Some(step) = tail.next_record() {
        let (position, record) = step?;
        let StoredRecord::Event { body, .. } = codec::decode_record(position, record)? else {
            // Pruned stubs only cover snapshotted (hence indexed) events.
            continue;
        };
        match &mut current {
            Some((stream, entry, batch_end))
                if *batch_end == body.batch_end && **stream == *body.stream =>
            {
                if body.seq != entry.last_seq + 1 {
                    return Err(Error::corrupt(
                        position,
                        format!(
                            "seq {} follows seq {} inside one batch",
                            body.seq, entry.last_seq
                        ),
                    ));
                }
                entry.last_seq = body.seq;
            }
            _ => {
                if let Some((stream, entry, _)) = current.take() {
                    push_rebuilt(backend, &mut streams, stream, entry)?;
                }
                current = Some((
                    Arc::from(body.stream),
                    IndexEntry {
                        first_position: position,
                        first_seq: body.seq,
                        last_seq: body.seq,
                    },
                    body.batch_end,
                ));
            }
        }
    }
    if let Some((stream, entry, _)) = current {
        push_rebuilt(backend, &mut streams, stream, entry)?;
    }
    Ok(streams)
}

fn push_rebuilt<B: Backend>(
    backend: &B,
    streams: &mut Streams,
    stream: Arc<str>,
    entry: IndexEntry,
) -> Result<(), Error> {
    let (key, _) = streams.get_or_load(backend, &stream)?;
    streams.push(key, entry);
    Ok(())
}

/// Bytes of one encoded run.
const RUN_BYTES: usize = 24;

/// Encodes runs as `first position ‖ first seq ‖ last seq` (u64 BE each), merging runs
/// that continue each other.
pub(crate) fn encode_runs(entries: impl Iterator<Item = IndexEntry>) -> Vec<u8> {
    let mut merged: Vec<IndexEntry> = Vec::new();
    for entry in entries {
        match merged.last_mut() {
            Some(run)
                if run.last_position() + 1 == entry.first_position
                    && run.last_seq + 1 == entry.first_seq =>
            {
                run.last_seq = entry.last_seq;
            }
            _ => merged.push(entry),
        }
    }
    let mut out = Vec::with_capacity(merged.len() * RUN_BYTES);
    for run in merged {
        out.extend_from_slice(&run.first_position.to_be_bytes());
        out.extend_from_slice(&run.first_seq.to_be_bytes());
        out.extend_from_slice(&run.last_seq.to_be_bytes());
    }
    out
}

/// Decodes a stored index value, checking that its runs are well-formed and ordered.
pub(crate) fn decode_runs(stream: &str, value: &[u8]) -> Result<Vec<IndexEntry>, Error> {
    let bad = |reason: String| Error::CorruptMetadata {
        what: format!("index of stream {stream:?}"),
        reason,
    };
    if value.is_empty() || value.len() % RUN_BYTES != 0 {
        return Err(bad(format!("value of {} bytes", value.len())));
    }
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(bytes);
        u64::from_be_bytes(w)
    };
    let mut runs = Vec::with_capacity(value.len() / RUN_BYTES);
    for chunk in value.chunks_exact(RUN_BYTES) {
        let run = IndexEntry {
            first_position: word(&chunk[..8]),
            first_seq: word(&chunk[8..16]),
            last_seq: word(&chunk[16..]),
        };
        let follows = runs
            .last()
            .is_none_or(|prev: &IndexEntry| run.first_seq > prev.last_seq);
        if run.first_seq == 0 || run.first_seq > run.last_seq || !follows {
            return Err(bad(format!(
                "run covers seq {}..={} out of order",
                run.first_seq, run.last_seq
            )));
        }
        runs.push(run);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first_position: u64, first_seq: u64, last_seq: u64) -> IndexEntry {
        IndexEntry {
            first_position,
            first_seq,
            last_seq,
        }
    }

    #[test]
    fn runs_round_trip_and_merge_when_contiguous() {
        let entries = [run(10, 1, 1), run(11, 2, 4), run(20, 5, 5), run(21, 6, 6)];
        let encoded = encode_runs(entries.into_iter());
        assert_eq!(
            decode_runs("s", &encoded).unwrap(),
            [run(10, 1, 4), run(20, 5, 6)]
        );
    }

    #[test]
    fn malformed_runs_are_errors() {
        assert!(decode_runs("s", &[]).is_err());
        assert!(decode_runs("s", &[0; 23]).is_err());
        let backwards = encode_runs([run(5, 3, 3), run(1, 1, 1)].into_iter());
        // Not contiguous, so not merged; out of order, so rejected.
        assert!(decode_runs("s", &backwards).is_err());
        let zero = encode_runs([run(5, 0, 3)].into_iter());
        assert!(decode_runs("s", &zero).is_err());
    }
}
