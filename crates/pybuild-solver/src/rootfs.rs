//! A read-only view of a root filesystem made of stacked snapshots, resolved the way
//! overlayfs would merge them, without mounting anything.
//!
//! Snapshots are overlay diff directories (see `pybuild-layer`): a 0/0 character
//! device is a deleted path, a directory with the `trusted.overlay.opaque=y` (or
//! `user.overlay.opaque=y`) xattr hides everything below it in lower layers. COPY
//! needs this view to resolve the destination through the image's symlinks (Debian's
//! `/bin -> usr/bin`), to give the parent directories it writes the metadata they
//! already have, to read `/etc/passwd` for `--chown=name`, and to read the files of
//! another stage for `COPY --from`.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Linux's own limit on symlinks followed while resolving one path (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Stacked snapshot directories, top-most first.
#[derive(Debug, Clone, Default)]
pub struct LowerTree {
    layers: Vec<PathBuf>,
}

/// A path found in the merged view.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where the winning entry lives on disk.
    pub path: PathBuf,
    /// Its metadata (not followed).
    pub meta: Metadata,
}

/// One entry of a merged walk.
#[derive(Debug, Clone)]
pub struct MergedEntry {
    /// Path relative to the walk's start, `/`-separated, `""` for the start itself.
    pub rel_path: String,
    /// The winning entry on disk.
    pub path: PathBuf,
    /// Its metadata (not followed).
    pub meta: Metadata,
}

pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

pub(crate) fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut buf = [0u8; 4];
            matches!(rustix::fs::lgetxattr(path, *name, &mut buf), Ok(n) if buf[..n] == *b"y")
        })
}

fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Split an absolute or relative image path into its normal components, dropping
/// `.`, and applying `..` lexically without going above the root (as a path inside a
/// container root can never leave it).
pub fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other.to_string()),
        }
    }
    out
}

impl LowerTree {
    /// A view of `layers`, given top-most first.
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// The snapshot directories, top-most first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The entry at `comps` (already resolved: no symlinks followed here), if the
    /// merged view has one.
    pub fn lookup(&self, comps: &[String]) -> io::Result<Option<Found>> {
        if comps.is_empty() {
            // The root itself: the top-most layer's root directory stands for it.
            return match self.layers.first() {
                Some(top) => Ok(lstat(top)?.map(|meta| Found {
                    path: top.clone(),
                    meta,
                })),
                None => Ok(None),
            };
        }
        'layers: for layer in &self.layers {
            let mut dir = layer.clone();
            let mut blocks_lower = false;
            for (i, comp) in comps.iter().enumerate() {
                dir.push(comp);
                let Some(meta) = lstat(&dir)? else {
                    if blocks_lower {
                        return Ok(None);
                    }
                    continue 'layers;
                };
                if is_whiteout(&meta) {
                    return Ok(None);
                }
                if i + 1 == comps.len() {
                    return Ok(Some(Found { path: dir, meta }));
                }
                if !meta.is_dir() {
                    // A file (or symlink) here hides whatever lower layers have below.
                    return Ok(None);
                }
                if is_opaque(&dir) {
                    blocks_lower = true;
                }
            }
        }
        Ok(None)
    }

    /// Resolve `path` (absolute in the image) through the image's symlinks, scoped to
    /// the image root: `..` never leaves it and absolute link targets start from it.
    /// The last component is followed only when `follow_last`. Returns the resolved
    /// components (which may name something that does not exist).
    pub fn resolve(&self, path: &str, follow_last: bool) -> io::Result<Vec<String>> {
        let mut pending: Vec<String> = components(path);
        pending.reverse();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                done.pop();
                continue;
            }
            if comp == "." || comp.is_empty() {
                continue;
            }
            done.push(comp);
            let last = pending.is_empty();
            if last && !follow_last {
                break;
            }
            let Some(found) = self.lookup(&done)? else {
                continue;
            };
            if !found.meta.file_type().is_symlink() {
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(io::Error::other(format!(
                    "/{}: too many levels of symbolic links",
                    done.join("/")
                )));
            }
            let target = fs::read_link(&found.path)?;
            let target = target.to_string_lossy().into_owned();
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            // Push the target's parts (and `..`) so they are resolved in turn.
            for part in target.split('/').rev() {
                pending.push(part.to_string());
            }
        }
        Ok(done)
    }

    /// The entry at the image path `path`, following symlinks (all of them).
    pub fn stat(&self, path: &str) -> io::Result<Option<Found>> {
        let comps = self.resolve(path, true)?;
        self.lookup(&comps)
    }

    /// Read a whole file of the image (for `/etc/passwd` and `/etc/group`); `None` when
    /// it does not exist or is not a regular file.
    pub fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.stat(path)? {
            Some(found) if found.meta.is_file() => fs::read(&found.path).map(Some),
            _ => Ok(None),
        }
    }

    /// The merged children names of the directory at `comps`.
    fn children(&self, comps: &[String]) -> io::Result<BTreeSet<Vec<u8>>> {
        use std::os::unix::ffi::OsStrExt;
        let mut names = BTreeSet::new();
        let mut hidden: BTreeSet<Vec<u8>> = BTreeSet::new();
        'layers: for layer in &self.layers {
            let mut dir = layer.clone();
            let mut opaque = false;
            for (i, comp) in comps.iter().enumerate() {
                dir.push(comp);
                match lstat(&dir)? {
                    None => continue 'layers,
                    Some(m) if is_whiteout(&m) => break 'layers,
                    Some(m) if !m.is_dir() => break 'layers,
                    Some(_) => {
                        if i + 1 < comps.len() && is_opaque(&dir) {
                            // Only matters for what is below this layer.
                            opaque = true;
                        }
                    }
                }
            }
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().as_bytes().to_vec();
                if hidden.contains(&name) || names.contains(&name) {
                    continue;
                }
                let meta = entry.metadata()?;
                if is_whiteout(&meta) {
                    hidden.insert(name);
                } else {
                    names.insert(name);
                }
            }
            if opaque || is_opaque(&dir) {
                break;
            }
        }
        Ok(names)
    }

    /// Every entry at and under the image path `path` (its symlinks followed to reach
    /// it, none followed below), parents before children, names sorted by bytes.
    pub fn walk(&self, path: &str) -> io::Result<Vec<MergedEntry>> {
        let start = self.resolve(path, true)?;
        let mut out = Vec::new();
        let Some(found) = self.lookup(&start)? else {
            return Ok(out);
        };
        let is_dir = found.meta.is_dir();
        out.push(MergedEntry {
            rel_path: String::new(),
            path: found.path,
            meta: found.meta,
        });
        if is_dir {
            self.walk_dir(&start, "", &mut out)?;
        }
        Ok(out)
    }

    fn walk_dir(&self, comps: &[String], rel: &str, out: &mut Vec<MergedEntry>) -> io::Result<()> {
        for name in self.children(comps)? {
            let name = String::from_utf8(name).map_err(|n| {
                io::Error::other(format!(
                    "/{}/{}: file name is not valid UTF-8",
                    comps.join("/"),
                    String::from_utf8_lossy(n.as_bytes())
                ))
            })?;
            let mut child = comps.to_vec();
            child.push(name.clone());
            let Some(found) = self.lookup(&child)? else {
                continue;
            };
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = found.meta.is_dir();
            out.push(MergedEntry {
                rel_path: rel_path.clone(),
                path: found.path,
                meta: found.meta,
            });
            if is_dir {
                self.walk_dir(&child, &rel_path, out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, LowerTree) {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        let upper = t.path().join("upper");
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::write(lower.join("usr/bin/sh"), "sh").unwrap();
        fs::write(lower.join("usr/bin/gone"), "x").unwrap();
        symlink("usr/bin", lower.join("bin")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::create_dir_all(upper.join("usr/bin")).unwrap();
        fs::write(upper.join("usr/bin/new"), "new").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("usr/bin/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        (t, LowerTree::new(vec![upper, lower]))
    }

    #[test]
    #[allow(clippy::print_stderr)]
    fn resolves_through_symlinks_and_whiteouts() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: whiteouts (0/0 character devices) need root to create");
            return;
        }
        let (_t, tree) = tree();
        // Parents are always followed, the last component only when asked.
        assert_eq!(
            tree.resolve("/bin/sh", false).unwrap(),
            ["usr", "bin", "sh"]
        );
        assert_eq!(tree.resolve("/bin", false).unwrap(), ["bin"]);
        assert_eq!(tree.resolve("/bin", true).unwrap(), ["usr", "bin"]);
        assert_eq!(tree.resolve("/bin/sh", true).unwrap(), ["usr", "bin", "sh"]);
        assert!(tree.stat("/bin/sh").unwrap().is_some());
        assert!(tree.stat("/bin/new").unwrap().is_some());
        assert!(tree.stat("/bin/gone").unwrap().is_none());
        assert_eq!(
            tree.read("/etc/passwd").unwrap().unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        let names: Vec<String> = tree
            .walk("/bin")
            .unwrap()
            .into_iter()
            .map(|e| e.rel_path)
            .collect();
        assert_eq!(names, ["", "new", "sh"]);
    }

    #[test]
    fn dotdot_never_leaves_the_root() {
        let tree = LowerTree::new(vec![]);
        assert_eq!(tree.resolve("/../../etc/x", true).unwrap(), ["etc", "x"]);
        assert_eq!(components("a/./b/../c"), ["a", "c"]);
    }
}
