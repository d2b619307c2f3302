//! The persistent stat cache: content digests of context files, reused across builds
//! only when it is safe to.
//!
//! A cached digest is keyed by the file's identity and metadata (device, inode, size,
//! mode, mtime and ctime, all to the nanosecond) and carries the time the hash was
//! taken. It is trusted only when all of those still match *and* both mtime and ctime
//! are strictly older than the hash time minus a margin: git's "racily clean" rule.
//! Metadata alone never decides that two different contents are equal (the bug of
//! moby/buildkit#4950, where a same-size rewrite with a restored mtime kept its old
//! checksum): users can set mtime back, but not ctime, and any write, `touch -d`,
//! `cp -p` or tar extraction moves ctime forward, which forces a re-hash. The margin
//! covers timestamps taken from a coarse kernel clock that may lag the wall clock we
//! record, so a write just after hashing could otherwise look older than the hash.
//!
//! On disk: `{"version":1,"entries":{"<context path>":{...}}}`. A missing, corrupt or
//! differently-versioned file is ignored (everything is re-hashed). Saving keeps only
//! the entries looked up or stored in this run, so the file stays bounded by the context.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pybuild_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The version written to, and required of, the cache file.
pub(crate) const VERSION: u32 = 1;

/// The default racily-clean margin.
pub(crate) const DEFAULT_MARGIN: Duration = Duration::from_secs(2);

/// A point in time as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    s: i64,
    ns: u32,
}

impl Stamp {
    fn nanos(self) -> i128 {
        i128::from(self.s) * 1_000_000_000 + i128::from(self.ns)
    }

    /// The current wall-clock time.
    pub(crate) fn now() -> Stamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Stamp {
                s: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                ns: d.subsec_nanos(),
            },
            // A clock before 1970: nothing can be trusted against it.
            Err(_) => Stamp { s: i64::MIN, ns: 0 },
        }
    }
}

/// What identifies a file's content as far as metadata can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: Stamp,
    ctime: Stamp,
}

impl FileKey {
    /// The key of a file from its (l)stat.
    pub(crate) fn of(meta: &fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mode: meta.mode(),
            mtime: Stamp {
                s: meta.mtime(),
                ns: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            },
            ctime: Stamp {
                s: meta.ctime(),
                ns: u32::try_from(meta.ctime_nsec()).unwrap_or(0),
            },
        }
    }
}

/// One cached digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    key: FileKey,
    /// When the hash was taken (just before the file was opened).
    hashed_at: Stamp,
    digest: Digest,
}

/// The cache file's layout.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, Record>,
}

/// The in-memory cache (behind the context's mutex).
#[derive(Debug)]
pub(crate) struct StatCache {
    file: Option<PathBuf>,
    margin: Duration,
    entries: BTreeMap<String, Record>,
    seen: HashSet<String>,
}

impl Default for StatCache {
    fn default() -> Self {
        StatCache {
            file: None,
            margin: DEFAULT_MARGIN,
            entries: BTreeMap::new(),
            seen: HashSet::new(),
        }
    }
}

impl StatCache {
    /// A cache persisted in `file`, loaded from it if it holds a valid cache of this
    /// version; anything else (absent, unreadable, corrupt, another version) starts empty.
    pub(crate) fn load(file: PathBuf, margin: Duration) -> StatCache {
        let entries = fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|cache| cache.version == VERSION)
            .map(|cache| cache.entries)
            .unwrap_or_default();
        StatCache {
            file: Some(file),
            margin,
            entries,
            seen: HashSet::new(),
        }
    }

    pub(crate) fn margin(&self) -> Duration {
        self.margin
    }

    pub(crate) fn set_margin(&mut self, margin: Duration) {
        self.margin = margin;
    }

    /// The cached digest of `rel`, if its metadata still matches `key` and the file was
    /// already old (by more than the margin) when it was hashed.
    pub(crate) fn lookup(&mut self, rel: &str, key: &FileKey) -> Option<Digest> {
        self.seen.insert(rel.to_owned());
        let record = self.entries.get(rel)?;
        let margin = i128::try_from(self.margin.as_nanos()).unwrap_or(i128::MAX);
        let trusted_before = record.hashed_at.nanos().saturating_sub(margin);
        let trusted = record.key == *key
            && key.mtime.nanos() < trusted_before
            && key.ctime.nanos() < trusted_before;
        trusted.then(|| record.digest.clone())
    }

    /// Remember the digest of `rel`, hashed at `hashed_at` while it had `key`.
    pub(crate) fn store(&mut self, rel: &str, key: FileKey, hashed_at: Stamp, digest: Digest) {
        self.seen.insert(rel.to_owned());
        self.entries.insert(
            rel.to_owned(),
            Record {
                key,
                hashed_at,
                digest,
            },
        );
    }

    /// Write the cache (only entries seen in this run) atomically: a temporary file in
    /// the same directory, fsynced, renamed over the old one, then the directory synced.
    pub(crate) fn save(&self) -> Result<(), Error> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let entries: BTreeMap<String, Record> = self
            .entries
            .iter()
            .filter(|(rel, _)| self.seen.contains(*rel))
            .map(|(rel, record)| (rel.clone(), record.clone()))
            .collect();
        let json = serde_json::to_vec(&CacheFile {
            version: VERSION,
            entries,
        })
        .map_err(|e| io_error(file, std::io::Error::other(e)))?;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".statcache-")
            .tempfile_in(dir)
            .map_err(|e| io_error(dir, e))?;
        tmp.write_all(&json)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| io_error(tmp.path(), e))?;
        tmp.persist(file).map_err(|e| io_error(file, e.error))?;
        // Make the rename itself durable; some file systems cannot sync a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mtime: i64, ctime: i64) -> FileKey {
        FileKey {
            dev: 1,
            ino: 2,
            size: 3,
            mode: 0o100644,
            mtime: Stamp { s: mtime, ns: 0 },
            ctime: Stamp { s: ctime, ns: 0 },
        }
    }

    fn digest() -> Digest {
        Digest::of(b"x")
    }

    #[test]
    fn trusted_only_when_older_than_hash_time_minus_margin() {
        let mut cache = StatCache::default();
        cache.store("f", key(100, 100), Stamp { s: 103, ns: 0 }, digest());
        assert_eq!(cache.lookup("f", &key(100, 100)), Some(digest()));
        // Racily clean: modified within the margin before the hash.
        cache.store("f", key(100, 101), Stamp { s: 103, ns: 0 }, digest());
        assert_eq!(cache.lookup("f", &key(100, 101)), None);
        cache.store("f", key(102, 100), Stamp { s: 103, ns: 0 }, digest());
        assert_eq!(cache.lookup("f", &key(102, 100)), None);
        // Any metadata difference (here ctime) is a miss.
        cache.store("f", key(100, 100), Stamp { s: 200, ns: 0 }, digest());
        assert_eq!(cache.lookup("f", &key(100, 150)), None);
        assert_eq!(cache.lookup("g", &key(100, 100)), None);
    }

    #[test]
    fn margin_is_configurable() {
        let mut cache = StatCache::default();
        cache.set_margin(Duration::ZERO);
        cache.store("f", key(100, 100), Stamp { s: 100, ns: 1 }, digest());
        assert_eq!(cache.lookup("f", &key(100, 100)), Some(digest()));
        cache.store("f", key(100, 100), Stamp { s: 100, ns: 0 }, digest());
        assert_eq!(cache.lookup("f", &key(100, 100)), None, "strictly older");
    }
}
