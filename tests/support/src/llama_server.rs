//! A real model server for tests: llama.cpp's server (the code of `llama-server`, as the
//! PyPI package `xllamacpp` ships it prebuilt) on `127.0.0.1`, serving a tiny model whose
//! answers are known in advance.
//!
//! [`LlamaServer::start`] writes the model (`tests/support/llama/tiny_model.py`, with the
//! PyPI package `gguf`) into a temporary folder, starts `tests/support/llama/serve.py`
//! as a child process on a free port, and waits until it listens. The model is a fixed
//! token chain (see `tiny_model.py`): asked without tools it answers `Hello world!`
//! (3 tokens, then the end of text); offered tools, it calls `get_weather` with
//! `{"city": "Paris"}` through the Hermes 2 Pro `<tool_call>` format, which the server
//! parses into OpenAI `tool_calls`. Everything on the wire is the real server's.
//!
//! Where it runs:
//! - `TOKA_LLAMA_PYTHON`: the Python that has `xllamacpp` and `gguf` (default `python3`);
//!   `.ci/run` installs them into a virtual environment and sets it.
//! - Without them the server is absent: [`LlamaServer::start`] says so on stderr and
//!   returns `None` (the test skips), unless `TOKA_REQUIRE_LLAMA_SERVER` is set (to
//!   anything but `0`), as CI sets it: then it panics, so CI can never skip silently.
//!
//! The server is killed (SIGKILL) when the handle drops; it also exits by itself when its
//! stdin closes, so a test process that dies leaves no server behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The name the model is served under (the `model` of every answer).
pub const MODEL_ALIAS: &str = "toka-tiny";

/// How long the server may take to load the model and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The folder of the model and server scripts: `tests/support/llama/`.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("llama")
}

/// The Python that runs the server: `TOKA_LLAMA_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("TOKA_LLAMA_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Whether a missing server fails the test instead of skipping it
/// (`TOKA_REQUIRE_LLAMA_SERVER` set, and not `0`).
pub fn required() -> bool {
    std::env::var("TOKA_REQUIRE_LLAMA_SERVER").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A running llama.cpp server on `127.0.0.1`; killed when dropped.
pub struct LlamaServer {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LlamaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaServer")
            .field("base", &self.base)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl LlamaServer {
    /// Starts a server for `test`, or returns `None` (after saying why on stderr) when the
    /// server is not installed here and [`required`] is false.
    ///
    /// # Panics
    ///
    /// If the server is required but absent, or is installed but fails to start.
    pub fn start(test: &str) -> Option<LlamaServer> {
        let python = python();
        let probe = Command::new(&python)
            .args(["-c", "import xllamacpp, gguf"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let absent = match &probe {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("it failed")
                    .trim()
                    .to_owned(),
            ),
            Err(e) => Some(format!("cannot run {python}: {e}")),
        };
        if let Some(why) = absent {
            let what = format!(
                "{test}: no llama.cpp server here: {python} cannot import xllamacpp and gguf \
                 ({why}); install them with `pip install xllamacpp gguf` (as .ci/run does) \
                 or point TOKA_LLAMA_PYTHON at a Python that has them"
            );
            assert!(!required(), "{what} (TOKA_REQUIRE_LLAMA_SERVER is set)");
            eprintln!("SKIPPED {what}");
            return None;
        }

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary folder: {e}"));
        let model = dir.path().join("tiny.gguf");
        let made = Command::new(&python)
            .arg(scripts_dir().join("tiny_model.py"))
            .arg(&model)
            .output()
            .unwrap_or_else(|e| panic!("run tiny_model.py: {e}"));
        assert!(
            made.status.success(),
            "tiny_model.py failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );

        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let mut child = Command::new(&python)
            .arg(scripts_dir().join("serve.py"))
            .arg(&model)
            .arg(MODEL_ALIAS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start serve.py: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(START_TIMEOUT).ok().flatten();
        let base = line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening "))
            .map(|url| url.trim().trim_end_matches('/').to_owned());
        let mut server = LlamaServer {
            child,
            base: String::new(),
            dir,
        };
        match base {
            Some(base) if base.starts_with("http://127.0.0.1:") => server.base = base,
            _ => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                panic!(
                    "{test}: the llama.cpp server did not start (first line {line:?}); its log:\n{}",
                    server.log()
                );
            }
        }
        Some(server)
    }

    /// The server's root, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The OpenAI-compatible base URL, `{base}/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// What the server logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
