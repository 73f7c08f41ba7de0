//! Reading the log from a back-end: which stored value holds a position, point reads, and
//! scans in position order. Everything here understands both value formats of
//! [`pack`](crate::pack), so the journal above reads record by record.

use std::ops::Range;

use crate::Error;
use crate::backend::Backend;
use crate::codec::keys;
use crate::pack::LogValue;

/// The stored value whose records include `position`, with its first position; `None` when
/// no value covers it (past the head, or removed).
pub(crate) fn value_at<B: Backend>(
    backend: &B,
    position: u64,
) -> Result<Option<(u64, B::Value)>, Error> {
    let end = match position.checked_add(1) {
        Some(next) => keys::log(next).to_vec(),
        None => keys::LOG_END.to_vec(),
    };
    let Some((key, value)) = backend.last_in(&keys::log(0), &end)? else {
        return Ok(None);
    };
    let first = first_position(key.as_ref(), position)?;
    let covers = LogValue::parse(first, value.as_ref())?.last() >= position;
    Ok(covers.then_some((first, value)))
}

/// The last stored value of the log, with its first position.
pub(crate) fn last_value<B: Backend>(backend: &B) -> Result<Option<(u64, B::Value)>, Error> {
    let Some((key, value)) = backend.last_in(&keys::log(0), &keys::LOG_END)? else {
        return Ok(None);
    };
    Ok(Some((first_position(key.as_ref(), 0)?, value)))
}

/// The position in a log key; a malformed key is metadata damage.
fn first_position(key: &[u8], near: u64) -> Result<u64, Error> {
    keys::log_position(key).ok_or_else(|| Error::corrupt(near, "malformed log key"))
}

/// Point reads of records, remembering the last value read: the records of one stream
/// that were appended together sit in one value, and a walk reads them in order.
pub(crate) struct PointReader<B: Backend> {
    /// The value last read, its first and last position, and where the walk inside it is
    /// (the next position and its frame offset).
    cached: Option<Cached<B::Value>>,
}

struct Cached<V> {
    first: u64,
    last: u64,
    value: V,
    next: u64,
    offset: usize,
}

impl<V: AsRef<[u8]>> Cached<V> {
    /// The value stored under the log key of `first`, walked from its first record.
    fn start(first: u64, value: V) -> Result<Self, Error> {
        let parsed = LogValue::parse(first, value.as_ref())?;
        let (last, offset) = (parsed.last(), parsed.start());
        Ok(Cached {
            first,
            last,
            next: first,
            offset,
            value,
        })
    }
}

impl<B: Backend> Default for PointReader<B> {
    fn default() -> Self {
        PointReader { cached: None }
    }
}

impl<B: Backend> PointReader<B> {
    /// First position of the value the last successful read came from.
    pub(crate) fn value_first(&self) -> Option<u64> {
        self.cached.as_ref().map(|c| c.first)
    }

    /// The bytes of the record at `position`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `position` when no stored value holds it ("record
    /// missing") or its value is damaged; [`Error::Backend`].
    pub(crate) fn read(&mut self, backend: &B, position: u64) -> Result<&[u8], Error> {
        let cached = self
            .cached
            .as_ref()
            .is_some_and(|c| c.first <= position && position <= c.last);
        if !cached {
            let (first, value) = value_at(backend, position)?
                .ok_or_else(|| Error::corrupt(position, "record missing"))?;
            self.cached = Some(Cached::start(first, value)?);
        }
        let Some(cached) = self.cached.as_mut() else {
            return Err(Error::corrupt(position, "record missing"));
        };
        let parsed = LogValue::parse(cached.first, cached.value.as_ref())?;
        if position < cached.next {
            cached.next = cached.first;
            cached.offset = parsed.start();
        }
        let range = loop {
            let (range, next) = parsed.frame(cached.offset, cached.next)?;
            let at = cached.next;
            cached.next += 1;
            cached.offset = next;
            if at == position {
                break range;
            }
        };
        Ok(&cached.value.as_ref()[range])
    }
}

/// The records of `from..=to` in position order, checking that no position is missing.
/// A lending iterator: each record borrows the scan until the next call.
pub(crate) struct Scan<B: Backend> {
    range: Option<B::Range>,
    /// The value being walked.
    current: Option<Cached<B::Value>>,
    /// The next position the log must hold.
    expected: u64,
    /// Records before this position are skipped (the first value may start earlier).
    from: u64,
    /// Records after this position end the scan.
    to: u64,
    /// An error to report on the next call (from opening the scan).
    pending: Option<Error>,
    done: bool,
}

impl<B: Backend> Scan<B> {
    /// A scan of `from..=to` (`to = None`: to the end of the log).
    pub(crate) fn new(backend: &B, from: u64, to: Option<u64>) -> Self {
        let from = from.max(1);
        let to = to.unwrap_or(u64::MAX);
        let end = match to.checked_add(1) {
            Some(next) => keys::log(next).to_vec(),
            None => keys::LOG_END.to_vec(),
        };
        let mut scan = Scan {
            range: None,
            current: None,
            expected: from,
            from,
            to,
            pending: None,
            done: false,
        };
        if from > to {
            scan.done = true;
            return scan;
        }
        // Start at the value that holds `from`, which may begin before it.
        let start = match value_at(backend, from) {
            Ok(Some((first, _))) => first,
            Ok(None) => from,
            Err(e) => {
                scan.pending = Some(e);
                from
            }
        };
        scan.expected = start;
        scan.range = Some(backend.range(&keys::log(start), &end));
        scan
    }

    /// The position the next record must have (one past the last one walked).
    pub(crate) fn expected(&self) -> u64 {
        self.expected
    }

    /// The next record as `(position, record bytes)`; `None` at the end. An error ends
    /// the scan.
    pub(crate) fn next_record(&mut self) -> Option<Result<(u64, &[u8]), Error>> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some((position, range))) => {
                let value = self.current.as_ref()?;
                Some(Ok((position, &value.value.as_ref()[range])))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// Moves to the next record in range: its position and byte range in the current value.
    fn advance(&mut self) -> Result<Option<(u64, Range<usize>)>, Error> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        loop {
            if self.expected > self.to {
                return Ok(None);
            }
            let walking = self.current.as_ref().is_some_and(|c| c.next <= c.last);
            if !walking {
                if let Some(done) = &self.current {
                    LogValue::parse(done.first, done.value.as_ref())?.check_end(done.offset)?;
                }
                if !self.load_next()? {
                    return Ok(None);
                }
            }
            let Some(current) = self.current.as_mut() else {
                return Ok(None);
            };
            let parsed = LogValue::parse(current.first, current.value.as_ref())?;
            let position = current.next;
            let (range, next) = parsed.frame(current.offset, position)?;
            current.next += 1;
            current.offset = next;
            self.expected = position + 1;
            if position >= self.from {
                return Ok(Some((position, range)));
            }
        }
    }

    /// Reads the next stored value; `false` at the end of the range.
    fn load_next(&mut self) -> Result<bool, Error> {
        let Some(range) = self.range.as_mut() else {
            return Ok(false);
        };
        let Some(entry) = range.next() else {
            self.current = None;
            return Ok(false);
        };
        let (key, value) = entry?;
        let first = first_position(key.as_ref(), self.expected)?;
        if first != self.expected {
            return Err(Error::corrupt(
                self.expected,
                format!("record missing (next stored record is at position {first})"),
            ));
        }
        self.current = Some(Cached::start(first, value)?);
        Ok(true)
    }
}
