//! Progress bars for long offline work (`events list|export|verify`, `agents tree`).
//!
//! A bar is drawn on stderr only when stderr is a terminal; piped or redirected, nothing
//! is drawn (so scripts and logs never see bar characters). Commands that stream their
//! results to stdout (`events list`, `events export`) also draw none when stdout is a
//! terminal: the lines themselves show the progress there, and a bar would garble them.
//! The bar is updated every [`EVERY`] events, not per event, to stay cheap.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How many events pass between two updates of the bar.
pub(crate) const EVERY: u64 = 256;

/// A progress bar over `len` events, or a hidden one.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    done: u64,
}

/// Whether stdout is a terminal (a command writing lines there shows no bar).
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

impl Progress {
    /// A bar counting events up to `len`, titled `what`; drawn only if `visible`, stderr
    /// is a terminal and there are at least [`EVERY`] events (less is over at once).
    pub(crate) fn new(len: u64, what: &str, visible: bool) -> Progress {
        Progress::build(
            len,
            visible,
            "{msg} [{bar:40}] {pos}/{len} events ({eta} left)",
            what.to_owned(),
        )
    }

    /// A spinner for work that reports no per-event progress (over `len` events).
    pub(crate) fn spinner(len: u64, what: &str, visible: bool) -> Progress {
        let progress = Progress::build(
            len,
            visible,
            "{spinner} {msg} ({elapsed})",
            format!("{what} ({len} events)"),
        );
        if !progress.bar.is_hidden() {
            progress.bar.enable_steady_tick(Duration::from_millis(120));
        }
        progress
    }

    fn build(len: u64, visible: bool, template: &str, message: String) -> Progress {
        // Styled while hidden, so that the first frame drawn is already the right one.
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message);
        if visible && len >= EVERY && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Progress { bar, done: 0 }
    }

    /// Counts one more event.
    pub(crate) fn inc(&mut self) {
        self.done += 1;
        if self.done % EVERY == 0 {
            self.bar.set_position(self.done);
        }
    }

    /// Clears the bar (call before printing results).
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
