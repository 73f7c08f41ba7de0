//! [`JsonErrorIo`]: a connection wrapper that gives hyper's own error responses a JSON body.
//!
//! When a request cannot even be parsed (a malformed request line, a URI or header block
//! over hyper's limits), hyper answers by itself, before any handler runs, with an empty
//! `400`, `414` or `431` and closes the connection. The node promises that every error it
//! sends is `{"error": "..."}` with `application/json`, so this wrapper recognises those
//! automatic responses as they are written and rewrites them.
//!
//! They are recognisable without guessing: hyper writes them as one head ending in
//! `connection: close`, `content-length: 0`, `date: …` and no body, and every response
//! the router sends with a status of 400 or more carries a JSON body (see
//! [`super::error::json_errors`]), so no response of the node's own ever matches.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper's automatic error response starts with (any 4xx status).
const STATUS_LINE_START: &[u8] = b"HTTP/1.1 4";
/// What marks it as hyper's own: no body and a closing connection.
const EMPTY_CLOSING: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";

/// A connection whose hyper-generated error responses get a JSON body.
#[derive(Debug)]
pub(crate) struct JsonErrorIo<T> {
    inner: T,
    /// A rewritten response not yet fully written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonErrorIo<T> {
    /// Wraps a connection.
    pub(crate) fn new(inner: T) -> Self {
        JsonErrorIo {
            inner,
            pending: None,
        }
    }
}

/// The JSON version of hyper's automatic response `head`, if `head` is one.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(STATUS_LINE_START) || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let at = head
        .windows(EMPTY_CLOSING.len())
        .position(|w| w == EMPTY_CLOSING)?;
    let status_line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let status_line = std::str::from_utf8(&head[..status_line_end]).ok()?;
    let mut parts = status_line.splitn(3, ' ');
    let (_, code, reason) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    let message = match code {
        "400" => "bad request: the request line or headers could not be parsed",
        "414" => "URI too long",
        "431" => "request header fields too large",
        _ => reason,
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 48);
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(
        b"\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ",
    );
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&head[at + EMPTY_CLOSING.len()..]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<T: AsyncWrite + Unpin> JsonErrorIo<T> {
    /// Writes what is pending; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrorIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(rewritten) = rewrite(buf) {
            self.pending = Some((rewritten, 0));
            // The caller's bytes are taken; ours go out now or on the next flush.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A head hyper wrote on its own comes alone; anything else passes through (no
        // allocation on this path: it carries every response).
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next()) {
            if only.starts_with(STATUS_LINE_START) && rewrite(only).is_some() {
                return self.poll_write(cx, only);
            }
        }
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_automatic_responses_are_rewritten() {
        let automatic = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 00:31:48 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(automatic).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Sun"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "request header fields too large");
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"{\"error\": \"HTTP/1.1 400\"}",
        ] {
            assert!(rewrite(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
