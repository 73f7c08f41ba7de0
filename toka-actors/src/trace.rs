//! Trace context across the journal: the hook through which an embedding application
//! (the node, with OpenTelemetry) carries a trace from a message's send to its handling.
//!
//! The runtime emits [`tracing`] spans and knows nothing of OpenTelemetry:
//! - `toka.journal.append` around a durable send (agent id): the message is appended and
//!   made durable inside it;
//! - `toka.handle` around each live handling of a message (agent id, kind, sequence,
//!   whether it is a recovery's). Replayed messages (already handled before a restart,
//!   re-applied to rebuild the state) get no span, and neither do the effects whose
//!   recorded outcome a replay reuses.
//!
//! With a [`TracePropagator`] set ([`RuntimeBuilder::trace_propagator`]), the send
//! captures the append span's context and the message record keeps it (format 3, see
//! [`record`](crate::record)); the handling span then continues it: as a child when the
//! message is handled as it arrives, *linked* to it when it is handled by a recovery
//! (after a crash or a restart, in another process than the request's). Without one,
//! nothing is captured and the record's trace is `None`.
//!
//! Spans are at `INFO` level: a subscriber that does not want them (the node's default
//! `warn` log filter without `[otel]`) disables them, and a disabled span costs a
//! callsite check.
//!
//! [`RuntimeBuilder::trace_propagator`]: crate::RuntimeBuilder::trace_propagator

use std::fmt;
use std::sync::Arc;

/// A W3C trace context (`traceparent`): the trace, the span that is the parent, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id (never all zeros in a valid context).
    pub trace_id: [u8; 16],
    /// The parent span's id (never all zeros in a valid context).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is *sampled*.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a W3C `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`); `None`
    /// for anything else, an all-zero id, or version `ff`. A later version's value is
    /// read by its first four fields, as the W3C spec asks.
    pub fn from_traceparent(value: &str) -> Option<TraceContext> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let version = hex::<1>(version)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let context = TraceContext {
            trace_id: hex::<16>(trace)?,
            span_id: hex::<8>(span)?,
            flags: hex::<1>(flags)?[0],
        };
        context.is_valid().then_some(context)
    }

    /// The `traceparent` header value (version `00`).
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// Whether neither id is all zeros.
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Carries trace context between [`tracing`] spans and message records: implemented by
/// the embedding application over its tracing backend (the node does it with
/// `tracing-opentelemetry`). Set with
/// [`RuntimeBuilder::trace_propagator`](crate::RuntimeBuilder::trace_propagator).
pub trait TracePropagator: Send + Sync + 'static {
    /// The trace context of `span` (a send's `toka.journal.append` span), to keep in the
    /// message record; `None` keeps none (no active trace, not recorded).
    fn context_of(&self, span: &tracing::Span) -> Option<TraceContext>;

    /// Makes `span` (a `toka.handle` span, not yet entered) continue `sent`, the context
    /// kept with the message: as its child, or, when `recovered` (the message is handled
    /// by a recovery, after a crash or restart), as a new trace linked to it.
    fn continue_trace(&self, span: &tracing::Span, sent: &TraceContext, recovered: bool);
}

/// The propagator as the kernel keeps it (stored among the builder's extensions).
#[derive(Clone)]
pub(crate) struct TraceHook(pub(crate) Arc<dyn TracePropagator>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_w3c_rejects() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::from_traceparent(header).unwrap();
        assert_eq!(context.trace_id[0], 0x4b);
        assert_eq!(context.span_id[7], 0xb7);
        assert!(context.is_sampled());
        assert_eq!(context.traceparent(), header);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
        // A later version may append fields.
        assert!(
            TraceContext::from_traceparent(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more"
            )
            .is_some()
        );
    }
}
