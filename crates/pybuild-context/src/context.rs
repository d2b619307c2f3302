//! A build context on disk: resolving COPY/ADD sources and walking what they name.
//!
//! Behaviour follows BuildKit (the Dockerfile frontend's COPY/ADD with
//! `FollowSymlinks`, `AllowWildcard` and `AllowEmptyWildcard` set, tonistiigi/fsutil's
//! copy and BuildKit's contenthash):
//!
//! * a source is cleaned as `filepath.Join("/", src)` (BuildKit's file backend
//!   `cleanPath`): a leading `/` or `./` is the context root, and `..` stops at the root
//!   (`../x` is `x`), lexically, before any symlink is looked at;
//! * the symlinks of the source path are followed, scoped to the context the way
//!   containerd's `fs.RootPath` scopes them: an absolute target starts again at the
//!   context root and `..` never climbs above it, so a link can never lead out of the
//!   context (a link "outside" lands on some path inside, usually a missing one);
//! * wildcards match one segment at a time with Go's `filepath.Match`, only among paths
//!   the `.dockerignore` leaves in the context, and the fixed part before the first
//!   wildcard is followed through symlinks. A wildcard that matches nothing is *not* an
//!   error: BuildKit's file backend (`docopy`) returns without copying when there is no
//!   match and `AllowEmptyWildcard` is set, which dockerfile2llb sets for every
//!   COPY/ADD, and contenthash checksums an empty match as the empty digest;
//! * symlinks met while walking below a source are entries, never followed.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pybuild_oci::{Digest, Sha256Writer};

use crate::Error;
use crate::ignore::PatternMatcher;
use crate::statcache::{FileKey, Stamp, StatCache};
use crate::wildcard::{SegmentPattern, contains_wildcards};

/// How many symlinks resolving one source may follow (Linux's and BuildKit's limit).
const MAX_LINKS: usize = 255;

/// A build context: a directory plus its `.dockerignore`.
///
/// `Send + Sync`: resolution and walks may run from several threads; the stat cache is
/// behind a mutex.
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    ignore: PatternMatcher,
    cache: Mutex<StatCache>,
    files_hashed: AtomicU64,
    cache_hits: AtomicU64,
}

/// One context path named by a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// Where the source is in the context after following its symlinks: clean,
    /// `/`-separated, no leading `/`; `""` is the context root. [`Context::walk`] walks
    /// this path, so the entries it returns start with it.
    pub rel_path: String,
    /// Whether `rel_path` is a directory (COPY copies its contents).
    pub is_dir: bool,
    /// The path as the source named it (cleaned; for a wildcard, the matched path), with
    /// no symlink followed. Its last segment is the name a copied file takes in a
    /// destination directory, as in BuildKit.
    pub requested: String,
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with the sha256 of its content.
    File {
        /// `sha256` of the content.
        digest: Digest,
        /// Size in bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink {
        /// The link's target as stored.
        target: String,
    },
    /// A fifo, socket or device node: skipped by callers or reported as an error.
    Other,
}

/// One file system object of the context, as found by [`Context::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root: clean, `/`-separated, `""` for the root itself.
    pub rel_path: String,
    /// On disk.
    pub path: PathBuf,
    /// What it is (with the content digest of a file).
    pub kind: EntryKind,
    /// Permission bits: `st_mode & 0o7777`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
}

/// Counters of the digest work done by a [`Context`], for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files whose content was read and hashed.
    pub files_hashed: u64,
    /// Files whose digest came from the stat cache without reading them.
    pub cache_hits: u64,
}

impl Context {
    /// A context rooted at `root`, which must be a directory (a symlink to one is
    /// accepted); `ignore` holds the compiled `.dockerignore` patterns (may be empty).
    pub fn new(root: &Path, ignore: PatternMatcher) -> Result<Context, Error> {
        let meta = fs::metadata(root).map_err(|e| io_error(root, e))?;
        if !meta.is_dir() {
            return Err(io_error(
                root,
                io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "the build context is not a directory",
                ),
            ));
        }
        Ok(Context {
            root: root.to_path_buf(),
            ignore,
            cache: Mutex::new(StatCache::default()),
            files_hashed: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        })
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Attach a persistent stat cache file: loaded now if present, ignored if corrupt or
    /// of another version, written by [`Context::save_stat_cache`].
    pub fn with_stat_cache(self, file: PathBuf) -> Context {
        let margin = self.lock_cache().margin();
        Context {
            cache: Mutex::new(StatCache::load(file, margin)),
            ..self
        }
    }

    /// Change the "racily clean" margin (default 2 s): a cached digest is trusted only
    /// for a file whose mtime and ctime were older than the time of hashing minus this.
    /// Raise it for file systems with coarse timestamps or clock skew (network mounts).
    pub fn with_stat_cache_margin(self, margin: Duration) -> Context {
        self.lock_cache().set_margin(margin);
        self
    }

    /// How many files were hashed and how many digests came from the stat cache so far.
    pub fn stats(&self) -> HashStats {
        HashStats {
            files_hashed: self.files_hashed.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Persist the stat cache (atomically: temporary file in the same directory, fsync,
    /// rename), keeping only the entries used in this run. A no-op without a cache file.
    pub fn save_stat_cache(&self) -> Result<(), Error> {
        self.lock_cache().save()
    }

    /// Resolve one COPY/ADD source as written (variables already expanded) to the
    /// context paths it names, sorted by path.
    ///
    /// Without wildcards: exactly one match, or [`Error::SourceNotFound`] when the path
    /// (after following its symlinks) does not exist or `.dockerignore` leaves it out.
    /// With wildcards: every match, possibly none (see the module documentation).
    /// [`Error::SymlinkLoop`] when following links does not end.
    pub fn resolve(&self, src: &str) -> Result<Vec<SourceMatch>, Error> {
        let segments = source_segments(src);
        match segments.iter().position(|s| contains_wildcards(s)) {
            None => {
                let not_found = || Error::SourceNotFound {
                    src: src.to_owned(),
                };
                let (rel_path, meta) = self.follow(&segments, src)?.ok_or_else(not_found)?;
                if !self.in_context(&rel_path, meta.is_dir())? {
                    return Err(not_found());
                }
                Ok(vec![SourceMatch {
                    rel_path,
                    is_dir: meta.is_dir(),
                    requested: segments.join("/"),
                }])
            }
            Some(first) => {
                let (prefix, patterns) = segments.split_at(first);
                self.resolve_wildcard(src, prefix, patterns)
            }
        }
    }

    /// Every entry at and under a resolved match, after `.dockerignore` and the step's
    /// `--exclude` patterns, sorted by path bytes (so parents come before children),
    /// with content digests for files.
    ///
    /// `.dockerignore` is matched against context paths, `--exclude` against paths
    /// relative to the match (as BuildKit does); the match itself is always returned.
    /// An excluded directory is skipped unless a `!` pattern may re-include something
    /// below it, and is returned only when something below it is. Symlinks are entries,
    /// not followed.
    pub fn walk(&self, m: &SourceMatch, exclude: &PatternMatcher) -> Result<Vec<Entry>, Error> {
        let path = self.abs(&m.rel_path);
        let meta = if m.rel_path.is_empty() {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        }
        .map_err(|e| io_error(&path, e))?;
        let mut out = Vec::new();
        let is_dir = meta.is_dir();
        out.push(self.entry(&m.rel_path, path, &meta)?);
        if is_dir {
            self.walk_dir(&m.rel_path, &m.rel_path, exclude, &mut out)?;
        }
        out.sort_by(|a, b| a.rel_path.as_bytes().cmp(b.rel_path.as_bytes()));
        Ok(out)
    }

    fn lock_cache(&self) -> MutexGuard<'_, StatCache> {
        // A panic while holding the lock cannot leave the map half-updated in a way
        // that matters: every record is inserted whole.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn abs(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Follow `segments` from the context root, resolving every symlink on the way
    /// (including the last component) inside the context. `None` when the path does not
    /// exist (or a link on it is not part of the context). Returns the resolved path and
    /// its metadata (of a non-symlink).
    fn follow(
        &self,
        segments: &[&str],
        src: &str,
    ) -> Result<Option<(String, fs::Metadata)>, Error> {
        let mut resolved: Vec<String> = Vec::new();
        let mut pending: VecDeque<String> = segments.iter().map(|s| (*s).to_owned()).collect();
        let mut links = 0usize;
        while let Some(segment) = pending.pop_front() {
            match segment.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(segment);
            let rel = resolved.join("/");
            let path = self.root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(io_error(&path, e)),
            };
            if meta.file_type().is_symlink() {
                // A link the .dockerignore leaves out is not in the context at all.
                if self.ignore.matches_or_parent_matches(&rel) {
                    return Ok(None);
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::SymlinkLoop {
                        src: src.to_owned(),
                    });
                }
                let target = read_link(&path)?;
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for part in target.split('/').rev() {
                    pending.push_front(part.to_owned());
                }
            } else if !pending.is_empty() && !meta.is_dir() {
                return Ok(None);
            }
        }
        let rel = resolved.join("/");
        let path = self.abs(&rel);
        let meta = if rel.is_empty() {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        };
        match meta {
            Ok(meta) => Ok(Some((rel, meta))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    /// Whether `rel` is part of the context after `.dockerignore`: not excluded, or an
    /// excluded directory that still holds something re-included (BuildKit sends such a
    /// directory as the parent of what it holds).
    fn in_context(&self, rel: &str, is_dir: bool) -> Result<bool, Error> {
        if rel.is_empty() || !self.ignore.matches_or_parent_matches(rel) {
            return Ok(true);
        }
        Ok(is_dir && self.ignore.may_reinclude_under(rel) && self.holds_included(rel)?)
    }

    fn holds_included(&self, dir: &str) -> Result<bool, Error> {
        for (name, file_type) in self.read_dir(dir)? {
            let child = join(dir, &name);
            if !self.ignore.matches_or_parent_matches(&child) {
                return Ok(true);
            }
            if file_type.is_dir()
                && self.ignore.may_reinclude_under(&child)
                && self.holds_included(&child)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The names in a context directory with their (unfollowed) types, sorted by bytes.
    fn read_dir(&self, rel: &str) -> Result<Vec<(String, fs::FileType)>, Error> {
        let path = self.abs(rel);
        let mut names = Vec::new();
        let entries = fs::read_dir(&path).map_err(|e| io_error(&path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&path, e))?;
            let file_type = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| Error::NonUtf8Path { path: entry.path() })?;
            names.push((name, file_type));
        }
        names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(names)
    }

    fn resolve_wildcard(
        &self,
        src: &str,
        prefix: &[&str],
        patterns: &[&str],
    ) -> Result<Vec<SourceMatch>, Error> {
        let patterns = patterns
            .iter()
            .map(|p| {
                SegmentPattern::new(p).map_err(|message| Error::BadSourcePattern {
                    src: src.to_owned(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The fixed part is followed through links (fsutil's ResolveWildcards and
        // contenthash's wildcardPrefix); if it is missing there is simply no match.
        let Some((base, meta)) = self.follow(prefix, src)? else {
            return Ok(Vec::new());
        };
        if !meta.is_dir() {
            return Ok(Vec::new());
        }
        // (as requested, where it is)
        let mut current = vec![(prefix.join("/"), base)];
        let mut matched = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let last = index + 1 == patterns.len();
            let mut next = Vec::new();
            for (requested, real) in &current {
                for (name, file_type) in self.read_dir(real)? {
                    if !pattern.is_match(&name) {
                        continue;
                    }
                    let child_requested = join(requested, &name);
                    let child_real = join(real, &name);
                    if last {
                        if self.in_context(&child_real, file_type.is_dir())? {
                            matched.push((child_requested, child_real, file_type));
                        }
                    } else if file_type.is_dir() && self.in_context(&child_real, true)? {
                        // Like contenthash, intermediate wildcard segments match real
                        // directories only; symlinks are followed for final matches.
                        next.push((child_requested, child_real));
                    }
                }
            }
            current = next;
        }
        let mut out = Vec::with_capacity(matched.len());
        for (requested, real, file_type) in matched {
            let (rel_path, is_dir) = if file_type.is_symlink() {
                let not_found = || Error::SourceNotFound {
                    src: requested.clone(),
                };
                let segments: Vec<&str> = real.split('/').collect();
                let (rel, meta) = self.follow(&segments, src)?.ok_or_else(not_found)?;
                if !self.in_context(&rel, meta.is_dir())? {
                    return Err(not_found());
                }
                (rel, meta.is_dir())
            } else {
                (real, file_type.is_dir())
            };
            out.push(SourceMatch {
                rel_path,
                is_dir,
                requested,
            });
        }
        out.sort_by(|a, b| a.requested.as_bytes().cmp(b.requested.as_bytes()));
        Ok(out)
    }

    fn walk_dir(
        &self,
        base: &str,
        dir: &str,
        exclude: &PatternMatcher,
        out: &mut Vec<Entry>,
    ) -> Result<(), Error> {
        for (name, _) in self.read_dir(dir)? {
            let rel = join(dir, &name);
            let below_base = if base.is_empty() {
                rel.as_str()
            } else {
                rel.get(base.len() + 1..).unwrap_or_default()
            };
            let ignored = self.ignore.matches_or_parent_matches(&rel);
            let excluded =
                !exclude.patterns().is_empty() && exclude.matches_or_parent_matches(below_base);
            let path = self.root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Removed while we walk: as if it had never been there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&path, e)),
            };
            if meta.is_dir() {
                if !ignored && !excluded {
                    out.push(self.entry(&rel, path, &meta)?);
                    self.walk_dir(base, &rel, exclude, out)?;
                    continue;
                }
                let may_reinclude = (!ignored || self.ignore.may_reinclude_under(&rel))
                    && (!excluded || exclude.may_reinclude_under(below_base));
                if !may_reinclude {
                    continue;
                }
                let before = out.len();
                self.walk_dir(base, &rel, exclude, out)?;
                if out.len() > before {
                    out.push(self.entry(&rel, path, &meta)?);
                }
            } else if !ignored && !excluded {
                out.push(self.entry(&rel, path, &meta)?);
            }
        }
        Ok(())
    }

    fn entry(&self, rel: &str, path: PathBuf, meta: &fs::Metadata) -> Result<Entry, Error> {
        let file_type = meta.file_type();
        let kind = if file_type.is_file() {
            let (digest, size) = self.file_digest(rel, &path, meta)?;
            EntryKind::File { digest, size }
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            EntryKind::Symlink {
                target: read_link(&path)?,
            }
        } else {
            debug_assert!(
                file_type.is_fifo()
                    || file_type.is_socket()
                    || file_type.is_block_device()
                    || file_type.is_char_device()
            );
            EntryKind::Other
        };
        Ok(Entry {
            rel_path: rel.to_owned(),
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        })
    }

    /// The digest of a regular file, from the stat cache when that is safe, otherwise by
    /// reading it.
    fn file_digest(
        &self,
        rel: &str,
        path: &Path,
        meta: &fs::Metadata,
    ) -> Result<(Digest, u64), Error> {
        let key = FileKey::of(meta);
        if let Some(digest) = self.lock_cache().lookup(rel, &key) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((digest, meta.size()));
        }
        let hashed_at = Stamp::now();
        let (digest, size) = hash_file(path, &key)?;
        self.files_hashed.fetch_add(1, Ordering::Relaxed);
        self.lock_cache().store(rel, key, hashed_at, digest.clone());
        Ok((digest, size))
    }
}

/// Read and hash a regular file, making sure it is the file that was stat'ed and that
/// it did not change while it was read.
fn hash_file(path: &Path, expected: &FileKey) -> Result<(Digest, u64), Error> {
    use rustix::fs::{Mode, OFlags};
    let changed = || Error::Changed {
        path: path.to_path_buf(),
    };
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        // Replaced by a symlink since it was stat'ed.
        Err(rustix::io::Errno::LOOP) => return Err(changed()),
        Err(e) => return Err(io_error(path, e.into())),
    };
    let mut file = fs::File::from(fd);
    let before = file.metadata().map_err(|e| io_error(path, e))?;
    if !before.is_file() || FileKey::of(&before) != *expected {
        return Err(changed());
    }
    let mut hasher = Sha256Writer::new(io::sink());
    let copied = io::copy(&mut file, &mut hasher).map_err(|e| io_error(path, e))?;
    let after = file.metadata().map_err(|e| io_error(path, e))?;
    if FileKey::of(&after) != *expected || copied != before.size() {
        return Err(changed());
    }
    let (digest, size, _) = hasher.finish();
    Ok((digest, size))
}

/// A source cleaned as BuildKit's `filepath.Join("/", src)`: its segments, with `.`
/// dropped and `..` resolved lexically, never above the root.
fn source_segments(src: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(part),
        }
    }
    segments
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn read_link(path: &Path) -> Result<String, Error> {
    fs::read_link(path)
        .map_err(|e| io_error(path, e))?
        .into_os_string()
        .into_string()
        .map_err(|_| Error::NonUtf8Path {
            path: path.to_path_buf(),
        })
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_cleaned_like_filepath_join_root() {
        assert_eq!(source_segments("/"), Vec::<&str>::new());
        assert_eq!(source_segments("."), Vec::<&str>::new());
        assert_eq!(source_segments("./"), Vec::<&str>::new());
        assert_eq!(source_segments("./a//b/"), vec!["a", "b"]);
        assert_eq!(source_segments("../x"), vec!["x"]);
        assert_eq!(source_segments("a/../../b/./c"), vec!["b", "c"]);
        assert_eq!(source_segments("/a/b/.."), vec!["a"]);
    }

    #[test]
    fn a_file_that_changed_since_its_stat_is_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        fs::write(&path, "one")?;
        let key = FileKey::of(&fs::symlink_metadata(&path)?);
        assert_eq!(hash_file(&path, &key)?, (Digest::of(b"one"), 3));
        fs::write(&path, "two, longer")?;
        assert!(matches!(hash_file(&path, &key), Err(Error::Changed { .. })));
        // Replaced by a symlink between the stat and the open.
        fs::remove_file(&path)?;
        std::os::unix::fs::symlink("elsewhere", &path)?;
        assert!(matches!(hash_file(&path, &key), Err(Error::Changed { .. })));
        Ok(())
    }

    #[test]
    fn context_is_send_sync() {
        fn check<T: Send + Sync + std::fmt::Debug>() {}
        check::<Context>();
    }
}
