//! `shell.exec`: runs allow-listed programs in the [`Sandbox`].
//!
//! No shell parses the input: the program is looked up by name on the allow-list (which
//! maps names to absolute paths fixed when the tool is built) and the arguments are
//! passed as they are, so nothing in them is interpreted (`;`, `$(..)`, globs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sandbox::{Sandbox, SandboxPolicy};
use crate::tool::{SideEffect, Tool, ToolContext};
use crate::{Error, ToolError};

/// Longest argument list accepted, in bytes.
const MAX_ARGS_BYTES: usize = 128 * 1024;

/// `shell.exec`: runs an allow-listed program in the sandbox.
///
/// ```no_run
/// # fn main() -> Result<(), toka_tools::Error> {
/// use toka_tools::{SandboxPolicy, ShellExec};
/// let tool = ShellExec::new(SandboxPolicy::new("/srv/jail"), ["ls", "cat", "wc"])?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ShellExec {
    sandbox: Arc<Sandbox>,
    programs: Arc<BTreeMap<String, PathBuf>>,
}

/// Input of `shell.exec`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecInput {
    /// The program's name on the allow-list (e.g. `ls`).
    pub program: String,
    /// Its arguments, passed verbatim (no shell).
    #[serde(default)]
    pub args: Vec<String>,
}

/// Output of `shell.exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Its stdout (lossy UTF-8).
    pub stdout: String,
    /// Its stderr (lossy UTF-8).
    pub stderr: String,
}

impl ShellExec {
    /// `shell.exec` running `programs` (names looked up in `/usr/bin` and `/bin`, or
    /// absolute paths) under `policy`.
    ///
    /// # Errors
    /// [`Error::Registration`] for a program not found; as [`Sandbox::new`].
    pub fn new<S: AsRef<str>>(
        policy: SandboxPolicy,
        programs: impl IntoIterator<Item = S>,
    ) -> Result<Self, Error> {
        let mut allowed = BTreeMap::new();
        for program in programs {
            let program = program.as_ref();
            let path = resolve_program(program).ok_or_else(|| Error::Registration {
                name: "shell.exec".into(),
                reason: format!("program {program:?} not found in /usr/bin or /bin"),
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.to_owned());
            allowed.insert(name, path);
        }
        Ok(ShellExec {
            sandbox: Arc::new(Sandbox::new(policy)?),
            programs: Arc::new(allowed),
        })
    }

    /// The sandbox the programs run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

fn resolve_program(program: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if program.starts_with('/') {
        vec![PathBuf::from(program)]
    } else if program.contains('/') {
        return None;
    } else {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|d| PathBuf::from(d).join(program))
            .collect()
    };
    candidates.into_iter().find(|p| p.is_file())
}

impl Tool for ShellExec {
    type Input = ExecInput;
    type Output = ExecOutput;

    fn name(&self) -> &str {
        "shell.exec"
    }
    fn description(&self) -> &str {
        "Runs an allow-listed program (no shell) in a sandbox: jailed working directory, \
         empty environment, resource limits, capped output."
    }
    fn input_schema(&self) -> serde_json::Value {
        let names: Vec<&String> = self.programs.keys().collect();
        json!({"type": "object", "properties": {
                "program": {"enum": names},
                "args": {"type": "array", "items": {"type": "string"}}},
               "required": ["program"], "additionalProperties": false})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::External
    }

    async fn invoke(&self, input: ExecInput, _cx: ToolContext) -> Result<ExecOutput, ToolError> {
        let program = self.programs.get(&input.program).ok_or_else(|| {
            ToolError::invalid_input(format!(
                "program {:?} is not on the allow-list",
                input.program
            ))
        })?;
        let size: usize = input.args.iter().map(String::len).sum();
        if size > MAX_ARGS_BYTES || input.args.iter().any(|a| a.contains('\0')) {
            return Err(ToolError::invalid_input(
                "arguments are too long or contain NUL bytes",
            ));
        }
        let out = self.sandbox.run(program, &input.args).await?;
        Ok(ExecOutput {
            code: out.code,
            signal: out.signal,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
