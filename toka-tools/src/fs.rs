//! File tools confined to a root directory: `fs.read`, `fs.write`, `fs.list`.
//!
//! Paths in inputs are relative to the root (a leading `/` means the root). They are
//! checked twice: lexically (no `..`, no NUL; the normalized `/`-rooted form is what
//! `path-prefix` caveats see), then by the kernel, which resolves every path with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` against the
//! root's directory handle: `..` that would leave the root fails with `EXDEV`, and no
//! symlink is followed at all (`ELOOP`), with no window between check and use. Following
//! symlinks that stay inside the root would still let a path under an allowed
//! `path-prefix` reach files outside that prefix.
//!
//! `fs.read` opens without blocking and reads regular files only, so a FIFO or device
//! under the root cannot hold a thread.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2, renameat};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::tool::{Scope, SideEffect, Tool, ToolContext};
use crate::{Error, ToolError};

/// Largest file `fs.read` returns unless configured otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;

/// A directory the file tools are confined to.
#[derive(Clone, Debug)]
pub struct FsRoot {
    inner: Arc<RootInner>,
}

#[derive(Debug)]
struct RootInner {
    path: PathBuf,
    dir: OwnedFd,
    max_file_bytes: u64,
}

impl FsRoot {
    /// Confines file tools to `root` (which must be a directory).
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be opened as a directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, Error> {
        let path = root.as_ref().to_owned();
        let dir = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: "opening the tools' root directory",
            path: path.clone(),
            source: e.into(),
        })?;
        Ok(FsRoot {
            inner: Arc::new(RootInner {
                path,
                dir,
                max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            }),
        })
    }

    /// Sets the largest file `fs.read` returns and `fs.write` accepts.
    #[must_use]
    pub fn max_file_bytes(self, bytes: u64) -> Self {
        FsRoot {
            inner: Arc::new(RootInner {
                path: self.inner.path.clone(),
                dir: match self.inner.dir.try_clone() {
                    Ok(dir) => dir,
                    Err(_) => return self,
                },
                max_file_bytes: bytes,
            }),
        }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens `relative` beneath the root; the kernel refuses any escape.
    fn open(&self, relative: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, ToolError> {
        let target = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        openat2(&self.inner.dir, target, how).map_err(|e| match e {
            Errno::EXDEV => ToolError::invalid_input(format!(
                "{}: the path leaves the tool's root",
                target.display()
            )),
            Errno::ELOOP => ToolError::invalid_input(format!(
                "{}: the path goes through a symlink (the file tools do not follow symlinks, \
                 so neither the root nor a path-prefix caveat can be left through one)",
                target.display()
            )),
            Errno::ENOENT => {
                ToolError::failed(format!("{}: no such file or directory", target.display()))
            }
            other => ToolError::failed(format!("{}: {other}", target.display())),
        })
    }
}

/// A path checked lexically: its `/`-rooted normal form and the relative path to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckedPath {
    pub(crate) logical: String,
    pub(crate) relative: PathBuf,
}

/// Normalizes `path`: drops `.` and empty parts; refuses `..` and NUL.
pub(crate) fn check_path(path: &str) -> Result<CheckedPath, ToolError> {
    if path.contains('\0') {
        return Err(ToolError::invalid_input("path contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ToolError::invalid_input(format!(
                    "path {path:?} contains `..` (traversal is not allowed)"
                )));
            }
            part => parts.push(part),
        }
    }
    Ok(CheckedPath {
        logical: format!("/{}", parts.join("/")),
        relative: parts.iter().collect(),
    })
}

fn path_schema(what: &str) -> serde_json::Value {
    json!({"type": "string", "description": format!("{what}, relative to the tools' root")})
}

/// `fs.read`: reads a file under the root.
#[derive(Clone, Debug)]
pub struct FsRead {
    root: FsRoot,
}

/// Input of `fs.read`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadInput {
    /// The file, relative to the root.
    pub path: String,
}

/// Output of `fs.read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOutput {
    /// The normalized path read.
    pub path: String,
    /// Its contents: UTF-8 text, or base64 when not text.
    pub content: String,
    /// `utf-8` or `base64`.
    pub encoding: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl FsRead {
    /// `fs.read` over `root`.
    ///
    /// # Errors
    /// As [`FsRoot::new`].
    pub fn new(root: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(FsRead {
            root: FsRoot::new(root)?,
        })
    }

    /// `fs.read` over an opened root.
    pub fn with_root(root: FsRoot) -> Self {
        FsRead { root }
    }
}

impl Tool for FsRead {
    type Input = ReadInput;
    type Output = ReadOutput;

    fn name(&self) -> &str {
        "fs.read"
    }
    fn description(&self) -> &str {
        "Reads a file under the tools' root directory."
    }
    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {"path": path_schema("The file")},
               "required": ["path"], "additionalProperties": false})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::ReadOnly
    }
    fn scope(&self, input: &ReadInput) -> Result<Scope, ToolError> {
        Ok(Scope {
            path: Some(check_path(&input.path)?.logical),
            bytes: None,
        })
    }

    async fn invoke(&self, input: ReadInput, cx: ToolContext) -> Result<ReadOutput, ToolError> {
        let root = self.root.clone();
        blocking(move || {
            let path = check_path(&input.path)?;
            let fd = root.open(
                &path.relative,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
                Mode::empty(),
            )?;
            let stat = nix::sys::stat::fstat(&fd)
                .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))?;
            if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
                return Err(ToolError::invalid_input(format!(
                    "{}: not a regular file",
                    path.logical
                )));
            }
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
                .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))?;
            let mut file = std::fs::File::from(fd);
            let size = file
                .metadata()
                .map_err(|e| ToolError::failed(e.to_string()))?
                .len();
            let limit = root.inner.max_file_bytes;
            if size > limit {
                return Err(ToolError::failed(format!(
                    "{}: {size} bytes exceed the tool's limit of {limit}",
                    path.logical
                )));
            }
            cx.check_bytes(size)?;
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            Read::by_ref(&mut file)
                .take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))?;
            let read = bytes.len() as u64;
            cx.check_bytes(read)?;
            let (content, encoding) = match String::from_utf8(bytes) {
                Ok(text) => (text, "utf-8"),
                Err(e) => (STANDARD.encode(e.as_bytes()), "base64"),
            };
            Ok(ReadOutput {
                path: path.logical,
                content,
                encoding: encoding.into(),
                bytes: read,
            })
        })
        .await
    }
}

/// `fs.write`: writes a whole file under the root, atomically (idempotent).
#[derive(Clone, Debug)]
pub struct FsWrite {
    root: FsRoot,
}

/// Input of `fs.write`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteInput {
    /// The file, relative to the root.
    pub path: String,
    /// The new contents.
    pub content: String,
    /// `utf-8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Create missing parent directories.
    #[serde(default)]
    pub create_dirs: bool,
}

impl WriteInput {
    fn bytes(&self) -> Result<Vec<u8>, ToolError> {
        match self.encoding.as_deref() {
            None | Some("utf-8") => Ok(self.content.as_bytes().to_vec()),
            Some("base64") => STANDARD
                .decode(&self.content)
                .map_err(|e| ToolError::invalid_input(format!("content is not base64: {e}"))),
            Some(other) => Err(ToolError::invalid_input(format!(
                "unknown encoding {other:?}"
            ))),
        }
    }
}

/// Output of `fs.write`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutput {
    /// The normalized path written.
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
}

impl FsWrite {
    /// `fs.write` over `root`.
    ///
    /// # Errors
    /// As [`FsRoot::new`].
    pub fn new(root: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(FsWrite {
            root: FsRoot::new(root)?,
        })
    }

    /// `fs.write` over an opened root.
    pub fn with_root(root: FsRoot) -> Self {
        FsWrite { root }
    }
}

impl Tool for FsWrite {
    type Input = WriteInput;
    type Output = WriteOutput;

    fn name(&self) -> &str {
        "fs.write"
    }
    fn description(&self) -> &str {
        "Writes a whole file under the tools' root directory (replacing it atomically)."
    }
    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {
                "path": path_schema("The file"),
                "content": {"type": "string"},
                "encoding": {"enum": ["utf-8", "base64"]},
                "create_dirs": {"type": "boolean"}},
               "required": ["path", "content"], "additionalProperties": false})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::Idempotent
    }
    fn scope(&self, input: &WriteInput) -> Result<Scope, ToolError> {
        Ok(Scope {
            path: Some(check_path(&input.path)?.logical),
            bytes: Some(input.bytes()?.len() as u64),
        })
    }

    async fn invoke(&self, input: WriteInput, cx: ToolContext) -> Result<WriteOutput, ToolError> {
        let root = self.root.clone();
        blocking(move || {
            let path = check_path(&input.path)?;
            let content = input.bytes()?;
            cx.check_bytes(content.len() as u64)?;
            if content.len() as u64 > root.inner.max_file_bytes {
                return Err(ToolError::failed(format!(
                    "{}: {} bytes exceed the tool's limit of {}",
                    path.logical,
                    content.len(),
                    root.inner.max_file_bytes
                )));
            }
            let (Some(name), Some(parent)) = (path.relative.file_name(), path.relative.parent())
            else {
                return Err(ToolError::invalid_input(
                    "fs.write needs a file path, not the root",
                ));
            };
            if input.create_dirs {
                create_dirs(&root, parent)?;
            }
            let dir = root.open(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
            let tmp_name = format!(".toka-write-{}", uuid::Uuid::now_v7());
            let how = OpenHow::new()
                .flags(
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_CLOEXEC
                        | OFlag::O_NOFOLLOW,
                )
                .mode(Mode::from_bits_truncate(0o644))
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            let tmp = openat2(&dir, tmp_name.as_str(), how)
                .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))?;
            let mut file = std::fs::File::from(tmp);
            let written = file.write_all(&content).and_then(|()| file.sync_all());
            let renamed = written
                .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))
                .and_then(|()| {
                    renameat(&dir, tmp_name.as_str(), &dir, name)
                        .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))
                });
            if renamed.is_err() {
                let _ = nix::unistd::unlinkat(
                    &dir,
                    tmp_name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
            renamed?;
            let _ = nix::unistd::fsync(&dir);
            Ok(WriteOutput {
                path: path.logical,
                bytes: content.len() as u64,
            })
        })
        .await
    }
}

fn create_dirs(root: &FsRoot, parent: &Path) -> Result<(), ToolError> {
    let mut so_far = PathBuf::new();
    for part in parent.components() {
        let at = root.open(&so_far, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        match nix::sys::stat::mkdirat(&at, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(ToolError::failed(format!(
                    "creating {}: {e}",
                    parent.display()
                )));
            }
        }
        so_far.push(part);
    }
    Ok(())
}

/// `fs.list`: lists a directory under the root.
#[derive(Clone, Debug)]
pub struct FsList {
    root: FsRoot,
}

/// Input of `fs.list`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// The directory, relative to the root (`""` or `/` for the root).
    #[serde(default)]
    pub path: String,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The entry's name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
}

/// Output of `fs.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOutput {
    /// The normalized path listed.
    pub path: String,
    /// Its entries, sorted by name.
    pub entries: Vec<ListEntry>,
}

impl FsList {
    /// `fs.list` over `root`.
    ///
    /// # Errors
    /// As [`FsRoot::new`].
    pub fn new(root: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(FsList {
            root: FsRoot::new(root)?,
        })
    }

    /// `fs.list` over an opened root.
    pub fn with_root(root: FsRoot) -> Self {
        FsList { root }
    }
}

impl Tool for FsList {
    type Input = ListInput;
    type Output = ListOutput;

    fn name(&self) -> &str {
        "fs.list"
    }
    fn description(&self) -> &str {
        "Lists a directory under the tools' root directory."
    }
    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {"path": path_schema("The directory")},
               "additionalProperties": false})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::ReadOnly
    }
    fn scope(&self, input: &ListInput) -> Result<Scope, ToolError> {
        Ok(Scope {
            path: Some(check_path(&input.path)?.logical),
            bytes: None,
        })
    }

    async fn invoke(&self, input: ListInput, _cx: ToolContext) -> Result<ListOutput, ToolError> {
        let root = self.root.clone();
        blocking(move || {
            let path = check_path(&input.path)?;
            let fd = root.open(
                &path.relative,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            )?;
            let mut dir = nix::dir::Dir::from_fd(fd)
                .map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))?;
            let mut entries = Vec::new();
            for entry in dir.iter() {
                let entry =
                    entry.map_err(|e| ToolError::failed(format!("{}: {e}", path.logical)))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let kind = match entry.file_type() {
                    Some(nix::dir::Type::File) => "file",
                    Some(nix::dir::Type::Directory) => "dir",
                    Some(nix::dir::Type::Symlink) => "symlink",
                    _ => "other",
                };
                entries.push(ListEntry {
                    name,
                    kind: kind.into(),
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(ListOutput {
                path: path.logical,
                entries,
            })
        })
        .await
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ToolError::failed(format!("file task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_and_traversal_is_refused() {
        assert_eq!(check_path("a/./b//c").unwrap().logical, "/a/b/c");
        assert_eq!(check_path("/a/b").unwrap().relative, PathBuf::from("a/b"));
        assert_eq!(check_path("").unwrap().logical, "/");
        assert!(check_path("../etc/passwd").is_err());
        assert!(check_path("a/../../b").is_err());
        assert!(check_path("a\0b").is_err());
    }
}
