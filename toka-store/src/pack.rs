//! Log values: the records stored under one log key.
//!
//! A group write stores its records in **packs**: one back-end value holding up to
//! [`PACK_MAX_RECORDS`] consecutive records (and about [`PACK_MAX_BYTES`]), under the key
//! of its first position. An engine's cost is per write, not per byte (sled 0.34 on this
//! project's 2-core machine, 220-byte records: 172k single inserts/s against 1.7M records/s
//! packed by 16 and 2.2M by 64; a full scan 1.5M against 17M records/s), so packing takes
//! the engine out of the way of a group commit.
//!
//! # Value formats
//! ```text
//! format 1 (one record, journals written before packs):  a record (see `codec`)
//! format 2 (a pack):  [2u8][count u32 LE] then count × ([len u32 LE][record])
//! ```
//! Each record inside a pack is a complete format-1 record with its own CRC and chain
//! hash, so everything above this module (decoding, pruning stubs, the chain, `verify`)
//! works per record as before. A pack never spans two group writes, so every record of a
//! pack has the same batch end and a crash keeps or loses a pack whole: the engine recovers
//! a prefix of its writes and one value is one write.
//!
//! Packs stay below [`PACK_MAX_BYTES`] (unless one record alone is larger) because sled
//! stores a value that does not fit a quarter of its 512 KiB segments as a separate blob
//! file, which costs a file create and fsync per value (measured: packs of 256 records
//! made 176 blob files per 400k records).

use crate::Error;
use crate::codec::FORMAT_VERSION;

/// Version byte of a pack value.
pub(crate) const PACK_VERSION: u8 = 2;
/// Records per pack at most.
pub(crate) const PACK_MAX_RECORDS: usize = 64;
/// A pack is closed once it holds this many bytes (a larger single record gets a pack of
/// its own).
pub(crate) const PACK_MAX_BYTES: usize = 32 * 1024;

const HEADER: usize = 5;
const LEN: usize = 4;

/// Builds one pack value record by record.
#[derive(Debug)]
pub(crate) struct PackWriter {
    out: Vec<u8>,
    count: u32,
    /// Where the length slot of the record being written is.
    open_at: usize,
}

impl PackWriter {
    /// An empty pack with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity.max(HEADER));
        out.extend_from_slice(&[PACK_VERSION, 0, 0, 0, 0]);
        PackWriter {
            out,
            count: 0,
            open_at: 0,
        }
    }

    /// Whether the pack is full: no further record should be added.
    pub(crate) fn is_full(&self) -> bool {
        self.count as usize >= PACK_MAX_RECORDS || self.out.len() >= PACK_MAX_BYTES
    }

    /// Starts a record: returns the buffer to append its bytes to (and only its bytes),
    /// then call [`PackWriter::end_record`].
    pub(crate) fn begin_record(&mut self) -> &mut Vec<u8> {
        self.open_at = self.out.len();
        self.out.extend_from_slice(&[0; LEN]);
        &mut self.out
    }

    /// Ends the record begun last; returns its length in bytes.
    pub(crate) fn end_record(&mut self) -> usize {
        let len = self.out.len() - self.open_at - LEN;
        // A record is at most `max_record_bytes`, checked by the caller; a length beyond
        // u32 is refused there long before it could be written.
        let stored = u32::try_from(len).unwrap_or(u32::MAX);
        self.out[self.open_at..self.open_at + LEN].copy_from_slice(&stored.to_le_bytes());
        self.count += 1;
        len
    }

    /// Adds a complete record.
    pub(crate) fn push(&mut self, record: &[u8]) {
        self.begin_record().extend_from_slice(record);
        self.end_record();
    }

    /// The finished value.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out[1..HEADER].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }
}

/// The records of one stored log value, whichever its format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogValue<'a> {
    first: u64,
    count: u64,
    value: &'a [u8],
    packed: bool,
}

impl<'a> LogValue<'a> {
    /// Reads the framing of the value stored under the log key of position `first`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an empty value or a pack without records;
    /// [`Error::UnsupportedFormat`] for an unknown version byte.
    pub(crate) fn parse(first: u64, value: &'a [u8]) -> Result<Self, Error> {
        let (count, packed) = match value.first() {
            None => return Err(Error::corrupt(first, "empty log value")),
            Some(&FORMAT_VERSION) => (1, false),
            Some(&PACK_VERSION) => {
                let count = value
                    .get(1..HEADER)
                    .and_then(|c| c.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or_else(|| Error::corrupt(first, "truncated pack header"))?;
                if count == 0 {
                    return Err(Error::corrupt(first, "pack holds no records"));
                }
                (u64::from(count), true)
            }
            Some(&found) => {
                return Err(Error::UnsupportedFormat {
                    what: format!("log value at position {first}"),
                    found,
                    supported: PACK_VERSION,
                });
            }
        };
        Ok(LogValue {
            first,
            count,
            value,
            packed,
        })
    }

    /// Position of the last record.
    pub(crate) fn last(&self) -> u64 {
        self.first + (self.count - 1)
    }

    /// Whether the value is a format-2 pack (not a single format-1 record).
    pub(crate) fn is_packed(&self) -> bool {
        self.packed
    }

    /// Offset of the first record's frame.
    pub(crate) fn start(&self) -> usize {
        if self.packed { HEADER } else { 0 }
    }

    /// The record whose frame starts at `offset` (from [`LogValue::start`] or a previous
    /// frame), as its byte range in the value and the offset of the next frame.
    /// `position` only names the record in an error.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the frame runs past the value.
    pub(crate) fn frame(
        &self,
        offset: usize,
        position: u64,
    ) -> Result<(std::ops::Range<usize>, usize), Error> {
        if !self.packed {
            let len = self.value.len();
            return Ok((offset.min(len)..len, len));
        }
        let truncated = || Error::corrupt(position, "truncated pack");
        let len = self
            .value
            .get(offset..offset.saturating_add(LEN))
            .and_then(|l| l.try_into().ok())
            .map(u32::from_le_bytes)
            .and_then(|len| usize::try_from(len).ok())
            .ok_or_else(truncated)?;
        let start = offset + LEN;
        let end = start.checked_add(len).ok_or_else(truncated)?;
        if end > self.value.len() {
            return Err(truncated());
        }
        Ok((start..end, end))
    }

    /// Checks that nothing follows the last frame, which ended at `offset`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the last position.
    pub(crate) fn check_end(&self, offset: usize) -> Result<(), Error> {
        if offset == self.value.len() {
            Ok(())
        } else {
            Err(Error::corrupt(self.last(), "trailing bytes after the pack"))
        }
    }

    /// The records in position order, as `(position, record bytes)`.
    pub(crate) fn records(&self) -> Records<'a> {
        Records {
            value: *self,
            next: self.first,
            offset: self.start(),
            done: false,
        }
    }
}

/// The records of a [`LogValue`]; an error ends the walk.
#[derive(Debug)]
pub(crate) struct Records<'a> {
    value: LogValue<'a>,
    next: u64,
    offset: usize,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u64, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.next > self.value.last() {
            self.done = true;
            return self.value.check_end(self.offset).err().map(Err);
        }
        let position = self.next;
        match self.value.frame(self.offset, position) {
            Ok((range, next)) => {
                self.next += 1;
                self.offset = next;
                Some(Ok((position, &self.value.value[range])))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A record to put in place of the one at a position: `(position, record bytes)`.
pub(crate) type Replacement = (u64, Vec<u8>);

/// `value` (stored under the log key of `first`) with the records at the given positions
/// replaced, in the same format: a format-1 value becomes the replacement itself.
///
/// # Errors
/// As [`LogValue::parse`] and [`Records`].
pub(crate) fn replace_records(
    first: u64,
    value: &[u8],
    replacements: &[Replacement],
) -> Result<Vec<u8>, Error> {
    let parsed = LogValue::parse(first, value)?;
    if !parsed.is_packed() {
        return match replacements {
            [(position, record)] if *position == first => Ok(record.clone()),
            _ => Err(Error::corrupt(first, "record missing")),
        };
    }
    let mut pack = PackWriter::with_capacity(value.len());
    let mut replacements = replacements.iter().peekable();
    for record in parsed.records() {
        let (position, bytes) = record?;
        match replacements.next_if(|(p, _)| *p == position) {
            Some((_, replacement)) => pack.push(replacement),
            None => pack.push(bytes),
        }
    }
    Ok(pack.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: u8, len: usize) -> Vec<u8> {
        let mut r = vec![FORMAT_VERSION];
        r.resize(len, tag);
        r
    }

    #[test]
    fn a_pack_round_trips_its_records_in_order() {
        let records: Vec<Vec<u8>> = (0..5).map(|i| record(i, 10 + usize::from(i))).collect();
        let mut pack = PackWriter::with_capacity(64);
        for r in &records {
            pack.push(r);
        }
        let value = pack.finish();
        let parsed = LogValue::parse(7, &value).unwrap();
        assert!(parsed.is_packed());
        assert_eq!(parsed.last(), 11);
        let read: Vec<(u64, Vec<u8>)> = parsed
            .records()
            .map(|r| r.map(|(p, b)| (p, b.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, (7..).zip(records.iter().cloned()).collect::<Vec<_>>());
    }

    #[test]
    fn a_format_one_value_is_one_record() {
        let single = record(3, 20);
        let parsed = LogValue::parse(4, &single).unwrap();
        assert!(!parsed.is_packed());
        assert_eq!(parsed.last(), 4);
        let read: Vec<(u64, &[u8])> = parsed.records().map(Result::unwrap).collect();
        assert_eq!(read, vec![(4, single.as_slice())]);
        let replaced = replace_records(4, &single, &[(4, record(9, 5))]).unwrap();
        assert_eq!(replaced, record(9, 5));
    }

    #[test]
    fn damaged_framing_is_reported_never_a_panic() {
        let mut pack = PackWriter::with_capacity(64);
        pack.push(&record(1, 8));
        pack.push(&record(2, 8));
        let value = pack.finish();
        for cut in 0..value.len() {
            if let Ok(parsed) = LogValue::parse(1, &value[..cut]) {
                assert!(
                    parsed.records().any(|r| r.is_err()),
                    "a pack cut to {cut} bytes read as whole"
                );
            }
        }
        let mut longer = value.clone();
        longer.push(0);
        let parsed = LogValue::parse(1, &longer).unwrap();
        assert!(parsed.records().any(|r| r.is_err()), "trailing bytes");
        assert!(matches!(
            LogValue::parse(1, &[9, 0]),
            Err(Error::UnsupportedFormat { found: 9, .. })
        ));
        assert!(LogValue::parse(1, &[]).is_err());
        assert!(LogValue::parse(1, &[PACK_VERSION, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn replacing_keeps_the_other_records() {
        let mut pack = PackWriter::with_capacity(64);
        for i in 0..4 {
            pack.push(&record(i, 6));
        }
        let value = pack.finish();
        let replaced =
            replace_records(10, &value, &[(11, record(7, 3)), (13, record(8, 2))]).unwrap();
        let parsed = LogValue::parse(10, &replaced).unwrap();
        let read: Vec<Vec<u8>> = parsed.records().map(|r| r.unwrap().1.to_vec()).collect();
        assert_eq!(
            read,
            vec![record(0, 6), record(7, 3), record(2, 6), record(8, 2)]
        );
    }
}
