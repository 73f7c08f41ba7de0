//! Directory helpers for tests that inspect or copy what a journal stored.

use std::path::{Path, PathBuf};

/// All files below `dir` (recursively), sorted.
///
/// # Panics
/// If `dir` cannot be read.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading a directory") {
        let entry = entry.expect("a directory entry");
        if entry.file_type().expect("a file type").is_dir() {
            files.extend(files_under(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}

/// Copies the directory tree `from` to `to` (created if missing).
///
/// # Panics
/// If anything cannot be read or written.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a directory");
    for entry in std::fs::read_dir(from).expect("reading a directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copying a file");
        }
    }
}
