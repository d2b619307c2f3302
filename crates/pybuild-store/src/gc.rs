//! Maintenance: garbage collection (`prune`) and consistency checking (`verify`).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use pybuild_oci::{Descriptor, Digest};

use crate::Store;
use crate::blob::hash_file;
use crate::cache::parse_cache_refs;
use crate::error::{Error, io_err};
use crate::fsutil::{remove_tree, tree_size};
use crate::lock::Exclusive;
use crate::tags::{Closure, Issue, Role, ref_name};

/// What [`Store::prune`] may remove beyond unreachable content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Also drop every build-cache record (and so whatever only they kept alive) and
    /// every `RUN --mount=type=cache` directory.
    pub all: bool,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs_removed: usize,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Snapshot directories removed.
    pub snapshots_removed: usize,
    /// Bytes of the files in them.
    pub snapshot_bytes: u64,
    /// Cache records removed (all of them with `all`; otherwise only records that
    /// break the contract of [`Store::put_cache_record`]).
    pub cache_records_removed: usize,
    /// Their bytes.
    pub cache_bytes: u64,
    /// `RUN --mount=type=cache` directories removed (with `all`).
    pub cache_mounts_removed: usize,
    /// Their bytes.
    pub cache_mount_bytes: u64,
    /// Stale entries removed from `ROOT/tmp`.
    pub temp_entries_removed: usize,
    /// Their bytes.
    pub temp_bytes: u64,
}

impl PruneReport {
    /// Total bytes freed.
    pub fn bytes_freed(&self) -> u64 {
        self.blob_bytes
            + self.snapshot_bytes
            + self.cache_bytes
            + self.cache_mount_bytes
            + self.temp_bytes
    }
}

/// One problem [`Store::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A blob whose content does not hash to its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// A file in `blobs/sha256/` that is not named by a digest, or cannot be read.
    BadBlobFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tag (or untagged `index.json` entry, named by its digest) whose image lacks
    /// a blob.
    MissingBlob {
        /// The tag.
        tag: String,
        /// The missing blob.
        digest: Digest,
    },
    /// A tag whose image has a blob that cannot be read or decoded, a size that
    /// disagrees with its descriptor, or indexes nested too deep.
    BrokenImage {
        /// The tag.
        tag: String,
        /// The blob at fault.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// An entry in `snapshots/` that is not a directory named by a digest.
    BadSnapshot {
        /// The entry.
        path: PathBuf,
    },
    /// A cache record with a bad name or content that breaks the contract.
    BadCacheRecord {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `index.json` itself is unreadable.
    BadIndex {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlob { digest, actual } => {
                write!(f, "blob {digest} is corrupt: content hashes to {actual}")
            }
            Problem::BadBlobFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            Problem::MissingBlob { tag, digest } => {
                write!(f, "image {tag}: blob {digest} is missing")
            }
            Problem::BrokenImage {
                tag,
                digest,
                reason,
            } => write!(f, "image {tag}: blob {digest}: {reason}"),
            Problem::BadSnapshot { path } => write!(
                f,
                "{}: not a snapshot (expected a directory named by a sha256 hex digest)",
                path.display()
            ),
            Problem::BadCacheRecord { path, reason } => {
                write!(f, "{}: {reason}", path.display())
            }
            Problem::BadIndex { reason } => write!(f, "index.json: {reason}"),
        }
    }
}

/// What [`Store::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs_checked: usize,
    /// `index.json` entries whose closure was checked.
    pub tags_checked: usize,
    /// Snapshot directories looked at.
    pub snapshots_checked: usize,
    /// Cache records parsed.
    pub cache_records_checked: usize,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The digest a `blobs/sha256/` or `snapshots/` entry name stands for.
fn digest_of_name(name: &std::ffi::OsStr) -> Option<Digest> {
    format!("sha256:{}", name.to_str()?).parse().ok()
}

/// The key a `cache/` entry name stands for.
fn key_of_record_name(name: &std::ffi::OsStr) -> Option<Digest> {
    digest_of_name(std::ffi::OsStr::new(name.to_str()?.strip_suffix(".json")?))
}

/// The entries of a directory (a missing directory has none).
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>, Error> {
    match fs::read_dir(dir) {
        Ok(iter) => iter
            .map(|e| e.map_err(io_err(dir)))
            .collect::<Result<_, _>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

impl Store {
    /// Remove what nothing needs:
    ///
    /// - blobs not reachable from an `index.json` entry (tagged or not: every entry
    ///   is a root, as in any OCI layout) nor listed in a cache record's `"blobs"`;
    /// - snapshots whose diff ID is neither in the `rootfs.diff_ids` of a reachable
    ///   image config nor in a cache record's `"snapshots"`;
    /// - every entry in `ROOT/tmp` (under the exclusive lock, all are stale);
    /// - with `options.all`, every cache record first (so what only they kept goes
    ///   too); without it, only records that break the record contract.
    ///
    /// Refuses with [`Error::Locked`] rather than waiting while any
    /// [`Lease`](crate::Lease) is held (a running build, or a lease of this very
    /// process). Stops with an error, removing no blob, if a reachable manifest or
    /// index cannot be read: what it references would be unknown (run
    /// [`Store::verify`]). Missing blobs are no obstacle.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        let lock_path = self.gc_lock_path();
        let Some(_lock) = Exclusive::try_acquire(&lock_path)? else {
            return Err(Error::Locked {
                path: lock_path,
                what: "the store (for garbage collection)",
            });
        };
        let mut report = PruneReport::default();

        // Mark: the closure of every index.json entry.
        let index = self.read_index()?;
        let mut closure = Closure::default();
        for desc in &index.manifests {
            self.walk(desc, Role::Node, 0, &mut closure);
        }
        for issue in closure.issues {
            match issue {
                // A config we cannot read only hides diff IDs: snapshots are
                // recreatable from layers, so losing them is safe.
                Issue::Bad {
                    role: Role::Config, ..
                }
                | Issue::Missing(_)
                | Issue::Size { .. } => {}
                Issue::Bad { error, .. } => return Err(error),
                Issue::TooDeep(digest) => {
                    return Err(Error::InvalidDescriptor {
                        digest,
                        reason: "indexes nested too deep to collect safely".into(),
                    });
                }
            }
        }
        let mut live_blobs = closure.blobs;
        let mut live_snapshots = closure.diff_ids;

        // Cache records: dropped with `all`, otherwise roots.
        let cache_dir = self.cache_dir();
        for entry in entries(&cache_dir)? {
            let path = entry.path();
            if key_of_record_name(&entry.file_name()).is_none() {
                continue; // not ours; leave it
            }
            let parsed = if options.all {
                None
            } else {
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                parse_cache_refs(&bytes).ok()
            };
            match parsed {
                Some(refs) => {
                    live_blobs.extend(refs.blobs);
                    live_snapshots.extend(refs.snapshots);
                }
                None => {
                    report.cache_bytes += tree_size(&path);
                    remove_tree(&path).map_err(io_err(&path))?;
                    report.cache_records_removed += 1;
                }
            }
        }

        // Sweep blobs.
        let blobs_dir = self.root.join("blobs").join("sha256");
        for entry in entries(&blobs_dir)? {
            let Some(digest) = digest_of_name(&entry.file_name()) else {
                continue; // not a blob name: not ours to judge (verify reports it)
            };
            if live_blobs.contains(&digest) {
                continue;
            }
            let path = entry.path();
            report.blob_bytes += tree_size(&path);
            remove_tree(&path).map_err(io_err(&path))?;
            report.blobs_removed += 1;
        }

        // Sweep snapshots.
        self.sweep_snapshots(&live_snapshots, &mut report)?;

        // Everything in tmp is stale while we hold the lock exclusively.
        let (count, bytes) = self.clean_tmp_locked()?;
        report.temp_entries_removed = count;
        if options.all {
            let dir = self.cache_mounts_dir();
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries {
                    let path = entry.map_err(io_err(&dir))?.path();
                    report.cache_mount_bytes += tree_size(&path);
                    remove_tree(&path).map_err(io_err(&path))?;
                    report.cache_mounts_removed += 1;
                }
            }
        }
        report.temp_bytes = bytes;
        Ok(report)
    }

    fn sweep_snapshots(
        &self,
        live: &BTreeSet<Digest>,
        report: &mut PruneReport,
    ) -> Result<(), Error> {
        for entry in entries(&self.snapshots_dir())? {
            let Some(diff_id) = digest_of_name(&entry.file_name()) else {
                continue;
            };
            if live.contains(&diff_id) {
                continue;
            }
            let path = entry.path();
            report.snapshot_bytes += tree_size(&path);
            remove_tree(&path).map_err(io_err(&path))?;
            report.snapshots_removed += 1;
        }
        Ok(())
    }

    /// Check the whole store: re-hash every blob, check every `index.json` entry's
    /// closure (present, right sizes, decodable), and that every snapshot and cache
    /// record is well named and formed. Problems are reported, not fixed. Holds a
    /// lease, so no prune runs meanwhile.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let _lease = self.lease()?;
        let mut report = VerifyReport::default();

        let blobs_dir = self.root.join("blobs").join("sha256");
        for entry in entries(&blobs_dir)? {
            let path = entry.path();
            let Some(digest) = digest_of_name(&entry.file_name()) else {
                report.problems.push(Problem::BadBlobFile {
                    path,
                    reason: "not named by a sha256 hex digest".into(),
                });
                continue;
            };
            report.blobs_checked += 1;
            match hash_file(&path) {
                Ok(actual) if actual == digest => {}
                Ok(actual) => report
                    .problems
                    .push(Problem::CorruptBlob { digest, actual }),
                Err(e) => report.problems.push(Problem::BadBlobFile {
                    path,
                    reason: e.to_string(),
                }),
            }
        }

        match self.read_index() {
            Ok(index) => {
                for desc in &index.manifests {
                    report.tags_checked += 1;
                    self.verify_entry(desc, &mut report.problems);
                }
            }
            Err(e) => report.problems.push(Problem::BadIndex {
                reason: e.to_string(),
            }),
        }

        for entry in entries(&self.snapshots_dir())? {
            report.snapshots_checked += 1;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || digest_of_name(&entry.file_name()).is_none() {
                report
                    .problems
                    .push(Problem::BadSnapshot { path: entry.path() });
            }
        }

        for entry in entries(&self.cache_dir())? {
            report.cache_records_checked += 1;
            let path = entry.path();
            if key_of_record_name(&entry.file_name()).is_none() {
                report.problems.push(Problem::BadCacheRecord {
                    path,
                    reason: "not named <sha256 hex>.json".into(),
                });
                continue;
            }
            let result = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| parse_cache_refs(&bytes));
            if let Err(reason) = result {
                report
                    .problems
                    .push(Problem::BadCacheRecord { path, reason });
            }
        }
        Ok(report)
    }

    fn verify_entry(&self, desc: &Descriptor, problems: &mut Vec<Problem>) {
        let tag = ref_name(desc).map_or_else(|| desc.digest.to_string(), str::to_string);
        let mut closure = Closure::default();
        self.walk(desc, Role::Node, 0, &mut closure);
        for issue in closure.issues {
            problems.push(match issue {
                Issue::Missing(digest) => Problem::MissingBlob {
                    tag: tag.clone(),
                    digest,
                },
                Issue::Size {
                    digest,
                    expected,
                    actual,
                } => Problem::BrokenImage {
                    tag: tag.clone(),
                    digest,
                    reason: format!("descriptor says {expected} bytes, blob has {actual}"),
                },
                Issue::Bad { digest, error, .. } => Problem::BrokenImage {
                    tag: tag.clone(),
                    digest,
                    reason: error.to_string(),
                },
                Issue::TooDeep(digest) => Problem::BrokenImage {
                    tag: tag.clone(),
                    digest,
                    reason: "indexes nested too deep".into(),
                },
            });
        }
    }
}
