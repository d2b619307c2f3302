//! File-system building blocks: temp entries under `ROOT/tmp`, atomic replacement,
//! directory fsync, and removal of trees that may contain read-only directories.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, io_err};
use crate::lock::Lease;

/// A name no other live temp entry has: the pid separates processes, the counter
/// separates entries of one process, the clock separates a pid reused after a crash
/// whose entries were not cleaned yet. `create_new` catches whatever is left.
fn temp_name(kind: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{kind}-{}-{seq}-{nanos:x}", std::process::id())
}

/// Make the directory entry changes in `dir` (creations, renames, removals) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A file being written under `ROOT/tmp`, removed on drop unless persisted. It holds
/// a shared lease on the store for its whole life, so neither a garbage collection
/// nor another process's start-up cleaning can remove it while it is in use.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
    _lease: Lease,
}

impl TempFile {
    /// Create a new, empty file (mode 0600) in `tmp_dir`.
    pub(crate) fn create(tmp_dir: &Path, kind: &str, lease: Lease) -> Result<Self, Error> {
        loop {
            let path = tmp_dir.join(temp_name(kind));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file: Some(file),
                        _lease: lease,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file; `None` only after `take_file`.
    pub(crate) fn file(&mut self) -> Result<&mut File, Error> {
        let path = &self.path;
        self.file.as_mut().ok_or_else(|| Error::Io {
            path: path.clone(),
            source: io::Error::other("temp file already closed"),
        })
    }

    /// Hand the open file to a wrapping writer; the guard still removes the path.
    pub(crate) fn take_file(&mut self) -> Result<File, Error> {
        let path = &self.path;
        self.file.take().ok_or_else(|| Error::Io {
            path: path.clone(),
            source: io::Error::other("temp file already closed"),
        })
    }

    /// Flush `file` to disk with mode `mode`, rename it to `dest` (replacing what is
    /// there) and make the rename durable. `file` is the handle taken with
    /// `take_file`, or `None` to use the one still held.
    pub(crate) fn persist(
        mut self,
        file: Option<File>,
        dest: &Path,
        mode: u32,
    ) -> Result<(), Error> {
        let file = match file {
            Some(f) => f,
            None => self.take_file()?,
        };
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&self.path))?;
        // Data and metadata must be on disk before the name can point at them, or a
        // power loss could leave a complete-looking name over a short file.
        file.sync_all().map_err(io_err(&self.path))?;
        drop(file);
        fs::rename(&self.path, dest).map_err(io_err(dest))?;
        // The temp path is gone; do not let Drop try to remove it (it could, in
        // theory, belong to somebody else by now).
        self.path = PathBuf::new();
        let parent = dest.parent().unwrap_or(Path::new("."));
        fsync_dir(parent)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            // Best effort: whatever is left is removed by the next idle open or prune.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Write `bytes` to `dest` atomically through a temp file in `tmp_dir`.
pub(crate) fn write_atomic(
    tmp_dir: &Path,
    lease: Lease,
    dest: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), Error> {
    let mut temp = TempFile::create(tmp_dir, "file", lease)?;
    let path = temp.path().to_path_buf();
    temp.file()?.write_all(bytes).map_err(io_err(&path))?;
    temp.persist(None, dest, mode)
}

/// Create a fresh directory (mode 0755) in `tmp_dir`.
pub(crate) fn create_temp_dir(tmp_dir: &Path, kind: &str) -> Result<PathBuf, Error> {
    loop {
        let path = tmp_dir.join(temp_name(kind));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
}

/// Remove a file or a whole tree. Layer contents may hold directories without write
/// (or read) permission, which `remove_dir_all` cannot empty when not root; those
/// are made accessible first. Symlinks are never followed. Missing is success.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_dirs_accessible(path);
            match fs::remove_dir_all(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

/// Give the owner rwx on every directory under `root` (iteratively: trees can be
/// deeper than the stack is comfortable with).
fn make_dirs_accessible(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700));
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
}

/// Bytes of the regular files and symlinks in a tree (what removing it frees, near
/// enough). Unreadable parts count as zero.
pub(crate) fn tree_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else {
            total += meta.len();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_handles_read_only_and_unreadable_dirs() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("t");
        let ro = root.join("ro");
        let closed = root.join("closed");
        fs::create_dir_all(ro.join("inner")).expect("mkdir");
        fs::create_dir_all(&closed).expect("mkdir");
        fs::write(ro.join("inner/f"), b"x").expect("write");
        fs::write(closed.join("g"), b"y").expect("write");
        std::os::unix::fs::symlink("/", root.join("link")).expect("symlink");
        fs::set_permissions(ro.join("inner"), fs::Permissions::from_mode(0o555)).expect("chmod");
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).expect("chmod");
        assert_eq!(tree_size(&ro), 1);
        remove_tree(&root).expect("removed");
        assert!(!root.exists());
        // Missing is fine.
        remove_tree(&root).expect("missing is ok");
    }

    #[test]
    fn temp_names_are_unique() {
        let a = temp_name("x");
        let b = temp_name("x");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("x-{}-", std::process::id())));
    }
}
