//! Advisory whole-file locks (`flock(2)` through `fs4`) on files in `ROOT/locks`.
//!
//! A lock belongs to an open file description, so two handles in one process
//! conflict just as two processes do; that is what lets threads with separate
//! `Store` values, and the tests, exercise the same protocol as processes. Closing
//! the handle (drop, exit, kill -9) releases the lock: a crash never leaves the store
//! locked.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

// The trait is called with fully qualified syntax throughout: newer `std` has
// inherent `File::lock_shared`/`unlock` methods that would otherwise shadow it,
// and those do not exist on the workspace's minimum Rust version.
use fs4::fs_std::FileExt;

use crate::error::{Error, io_err};

fn open_lock_file(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

/// A shared hold on the store's garbage-collection lock (`ROOT/locks/gc.lock`).
///
/// While any lease is alive, [`Store::prune`](crate::Store::prune) refuses to run, so
/// blobs, snapshots and temp entries a build is creating (and has not tagged or
/// recorded yet) cannot be collected under it. Released on drop.
#[derive(Debug)]
#[must_use = "the lease is released as soon as it is dropped"]
pub struct Lease {
    file: File,
    path: PathBuf,
}

impl Lease {
    /// Wait for (only) a running garbage collection to finish, then hold the lock shared.
    pub(crate) fn acquire(path: &Path) -> Result<Self, Error> {
        let file = open_lock_file(path)?;
        FileExt::lock_shared(&file).map_err(io_err(path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first just makes the
        // release independent of when the descriptor is finally closed.
        let _ = FileExt::unlock(&self.file);
    }
}

/// An exclusive lock, released on drop.
#[derive(Debug)]
pub(crate) struct Exclusive {
    file: File,
}

impl Exclusive {
    /// Wait for the lock.
    pub(crate) fn acquire(path: &Path) -> Result<Self, Error> {
        let file = open_lock_file(path)?;
        FileExt::lock_exclusive(&file).map_err(io_err(path))?;
        Ok(Self { file })
    }

    /// Take the lock if nobody holds it (shared or exclusive).
    pub(crate) fn try_acquire(path: &Path) -> Result<Option<Self>, Error> {
        let file = open_lock_file(path)?;
        if FileExt::try_lock_exclusive(&file).map_err(io_err(path))? {
            Ok(Some(Self { file }))
        } else {
            Ok(None)
        }
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_excludes_exclusive_within_one_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gc.lock");
        let a = Lease::acquire(&path).expect("shared");
        let b = Lease::acquire(&path).expect("second shared is fine");
        assert!(Exclusive::try_acquire(&path).expect("try").is_none());
        drop(a);
        assert!(Exclusive::try_acquire(&path).expect("try").is_none());
        drop(b);
        let ex = Exclusive::try_acquire(&path).expect("try");
        assert!(ex.is_some());
        assert!(Exclusive::try_acquire(&path).expect("try").is_none());
    }
}
