//! Building one layer's diff directory: what a COPY, ADD or WORKDIR adds on top of
//! the image, in overlay format, ready for `pybuild_layer::write_layer` and to become
//! a snapshot.
//!
//! Overlayfs (and so the layer format) needs every parent of a changed path present
//! in the diff. A parent the image already has is written with the image's own
//! mode, owner and mtime, so the layer does not change it; a parent the image lacks
//! is created 0755 with the step's owner (BuildKit's `mkdir -p` with `--chown`).
//! Destinations are resolved through the image's symlinks first (Debian's
//! `/bin -> usr/bin`): writing `bin/x` into the diff would otherwise hide the link.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};

use crate::rootfs::LowerTree;
use crate::user::Owner;

/// What an entry holds.
#[derive(Debug, Clone)]
pub enum Content {
    /// A regular file, copied from this path.
    File(PathBuf),
    /// A regular file with these bytes (heredocs).
    Bytes(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target (never followed).
    Symlink(String),
}

/// One entry to write, at an image path.
#[derive(Debug, Clone)]
pub struct Item {
    /// The image path's components (before resolving the image's symlinks).
    pub target: Vec<String>,
    /// What to write.
    pub content: Content,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: Owner,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
}

/// A diff directory being filled.
#[derive(Debug)]
pub struct DiffBuilder<'a> {
    root: PathBuf,
    lower: Option<&'a LowerTree>,
    new_dir_owner: Owner,
    new_dir_mtime: i64,
    /// Directories whose mtime must be set last (writing children changes it).
    dir_times: Vec<(PathBuf, (i64, u32))>,
    /// Resolved parents, so deep trees do not re-resolve every prefix.
    resolved: HashMap<Vec<String>, Vec<String>>,
}

fn io_at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

pub(crate) fn set_mtime(path: &Path, (secs, nanos): (i64, u32)) -> io::Result<()> {
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: nanos.into(),
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_at(path, e.into()))
}

impl<'a> DiffBuilder<'a> {
    /// Fill `root` (an empty directory). `lower` is the image underneath (`None` for
    /// `COPY --link`, which must not depend on it).
    pub fn new(
        root: &Path,
        lower: Option<&'a LowerTree>,
        new_dir_owner: Owner,
        new_dir_mtime: i64,
    ) -> Self {
        Self {
            root: root.to_path_buf(),
            lower,
            new_dir_owner,
            new_dir_mtime,
            dir_times: Vec::new(),
            resolved: HashMap::new(),
        }
    }

    /// The diff directory being filled.
    pub fn root_path(&self) -> &Path {
        &self.root
    }

    /// Resolve an image path through the image's symlinks (all components when
    /// `follow_last`, else all but the last).
    pub fn resolve(&mut self, comps: &[String], follow_last: bool) -> io::Result<Vec<String>> {
        let Some(lower) = self.lower else {
            return Ok(comps.to_vec());
        };
        let Some((last, parent)) = comps.split_last() else {
            return Ok(Vec::new());
        };
        let mut out = match self.resolved.get(parent) {
            Some(r) => r.clone(),
            None => {
                let r = lower.resolve(&format!("/{}", parent.join("/")), true)?;
                self.resolved.insert(parent.to_vec(), r.clone());
                r
            }
        };
        out.push(last.clone());
        if follow_last {
            out = lower.resolve(&format!("/{}", out.join("/")), true)?;
        }
        Ok(out)
    }

    /// Make sure the directory at resolved `comps` exists in the diff, with every
    /// parent.
    pub fn ensure_dir(&mut self, comps: &[String]) -> io::Result<()> {
        let mut path = self.root.clone();
        for k in 0..comps.len() {
            path.push(&comps[k]);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => fs::remove_file(&path).map_err(|e| io_at(&path, e))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path, e)),
            }
            let existing = match self.lower {
                Some(lower) => lower.lookup(&comps[..=k])?.filter(|f| f.meta.is_dir()),
                None => None,
            };
            let (mode, owner, mtime) = match existing {
                Some(f) => (
                    f.meta.mode() & 0o7777,
                    Owner {
                        uid: f.meta.uid(),
                        gid: f.meta.gid(),
                    },
                    (f.meta.mtime(), f.meta.mtime_nsec() as u32),
                ),
                None => (0o755, self.new_dir_owner, (self.new_dir_mtime, 0)),
            };
            fs::create_dir(&path).map_err(|e| io_at(&path, e))?;
            self.finish_entry(&path, mode, owner)?;
            self.dir_times.push((path.clone(), mtime));
        }
        Ok(())
    }

    fn finish_entry(&self, path: &Path, mode: u32, owner: Owner) -> io::Result<()> {
        // chown before chmod: chown clears set-id bits.
        lchown(path, Some(owner.uid), Some(owner.gid)).map_err(|e| io_at(path, e))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_at(path, e))
    }

    /// Write one entry.
    pub fn put(&mut self, item: &Item) -> io::Result<()> {
        let is_dir = matches!(item.content, Content::Dir);
        let comps = self.resolve(&item.target, is_dir)?;
        if is_dir {
            self.ensure_dir(&comps)?;
            let path = self.root.join(comps.join("/"));
            self.finish_entry(&path, item.mode, item.owner)?;
            // The entry's own mtime wins over the one ensure_dir recorded.
            self.dir_times.retain(|(p, _)| *p != path);
            self.dir_times.push((path, item.mtime));
            return Ok(());
        }
        let Some((_, parent)) = comps.split_last() else {
            return Err(io::Error::other(
                "cannot replace the root directory with a file",
            ));
        };
        self.ensure_dir(parent)?;
        let path = self.root.join(comps.join("/"));
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path).map_err(|e| io_at(&path, e))?,
            Ok(_) => fs::remove_file(&path).map_err(|e| io_at(&path, e))?,
            Err(_) => {}
        }
        match &item.content {
            Content::File(src) => {
                // Either side can fail (a vanished source, a full store disk): name both.
                fs::copy(src, &path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("copying {} to {}: {e}", src.display(), path.display()),
                    )
                })?;
                self.finish_entry(&path, item.mode, item.owner)?;
            }
            Content::Bytes(bytes) => {
                fs::write(&path, bytes).map_err(|e| io_at(&path, e))?;
                self.finish_entry(&path, item.mode, item.owner)?;
            }
            Content::Symlink(target) => {
                symlink(target, &path).map_err(|e| io_at(&path, e))?;
                lchown(&path, Some(item.owner.uid), Some(item.owner.gid))
                    .map_err(|e| io_at(&path, e))?;
            }
            // Directories returned early above.
            Content::Dir => {}
        }
        set_mtime(&path, item.mtime)
    }

    /// Set the directories' mtimes, deepest first, now that nothing more is written.
    pub fn finish(mut self) -> io::Result<()> {
        self.dir_times.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, mtime) in &self.dir_times {
            set_mtime(path, *mtime)?;
        }
        Ok(())
    }
}
