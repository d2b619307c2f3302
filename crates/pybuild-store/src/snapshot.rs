//! Snapshots (`ROOT/snapshots/<diff-id hex>/`: a layer's diff, unpacked) and scratch
//! directories.

use std::fs;
use std::path::{Path, PathBuf};

use pybuild_oci::Digest;

use crate::Store;
use crate::durable::make_durable;
use crate::error::{BoxError, Error, io_err};
use crate::fsutil::{create_temp_dir, fsync_dir, remove_tree};
use crate::lock::Lease;

/// A scratch directory under `ROOT/tmp`, removed (with everything in it) on drop
/// unless [`keep`](TempDir::keep)-ed. It holds a [`Lease`] while alive, so neither a
/// prune nor another process's start-up cleaning removes it under its user.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
    // Dropped after `Drop::drop` has removed the tree: the lease covers the removal.
    _lease: Lease,
}

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop removing the directory on drop and return its path. It stays under
    /// `ROOT/tmp`, now unprotected: the next open that finds the store idle, or the
    /// next prune, removes it. Rename it elsewhere in the store to keep it for good.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep && !self.path.as_os_str().is_empty() {
            // Best effort; leftovers are collected as stale temp entries later.
            let _ = remove_tree(&self.path);
        }
    }
}

impl Store {
    /// Where the snapshot of the layer with uncompressed digest `diff_id` lives.
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(diff_id.hex())
    }

    /// Whether that snapshot exists (snapshots only appear complete).
    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        fs::symlink_metadata(self.snapshot_path(diff_id)).is_ok_and(|m| m.is_dir())
    }

    /// A fresh scratch directory under `ROOT/tmp`, removed on drop.
    pub fn temp_dir(&self) -> Result<TempDir, Error> {
        self.temp_dir_named("dir")
    }

    fn temp_dir_named(&self, kind: &str) -> Result<TempDir, Error> {
        // The lease first: from the moment the directory exists it is protected.
        let lease = self.lease()?;
        let path = create_temp_dir(&self.tmp_dir(), kind)?;
        Ok(TempDir {
            path,
            keep: false,
            _lease: lease,
        })
    }

    /// Create the snapshot for `diff_id` unless it exists, and return its path.
    ///
    /// `fill` gets a fresh, empty directory inside `ROOT/tmp` and populates it (the
    /// directory itself is the layer's root). If it fails, the directory is removed,
    /// nothing appears in `snapshots/`, and its error comes back as [`Error::Fill`].
    /// On success the new tree is made durable (a syncfs, or an fsync of each of its
    /// files and directories, whichever is cheaper) and the directory renamed into
    /// place in one step. When another process (or thread) created the same snapshot first,
    /// ours is dropped and theirs used: diff IDs are content addresses, so both are
    /// the same content. `fill` is not called when the snapshot already exists.
    ///
    /// `fill` must leave the directory itself writable by its owner: moving a
    /// directory to another parent rewrites its `..` entry, which needs write
    /// permission on it (for anyone but root).
    pub fn ensure_snapshot(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> Result<(), BoxError>,
    ) -> Result<PathBuf, Error> {
        let dest = self.snapshot_path(diff_id);
        if self.has_snapshot(diff_id) {
            return Ok(dest);
        }
        let temp = self.temp_dir_named("snap")?;
        fill(temp.path()).map_err(|source| Error::Fill {
            diff_id: diff_id.clone(),
            source,
        })?;
        // Durable before the rename, so that the rename can only ever expose complete
        // content, power loss included: one syncfs, or an fsync of each new file and
        // directory when the file system holds so much of other processes' dirty data
        // that syncfs would wait longer for it (see `durable`).
        make_durable(temp.path()).map_err(io_err(temp.path()))?;
        match fs::rename(temp.path(), &dest) {
            Ok(()) => {
                // Ours is in place; the guard must not remove it.
                let _ = temp.keep();
                fsync_dir(&self.snapshots_dir())?;
                Ok(dest)
            }
            // Lost the race (rename of a directory onto a non-empty one fails): the
            // winner's copy is equivalent; `temp` drops and removes ours.
            Err(_) if self.has_snapshot(diff_id) => Ok(dest),
            Err(e) => Err(io_err(&dest)(e)),
        }
    }
}
