//! The store's one error type.

use std::io;
use std::path::{Path, PathBuf};

use pybuild_oci::Digest;

/// A fill callback's error (see [`Store::ensure_snapshot`](crate::Store::ensure_snapshot)).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the store. Each variant names the path, digest or tag it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Reading the content handed to [`Store::put_blob_from`](crate::Store::put_blob_from)
    /// failed (the source, not the store, is at fault).
    #[error("reading blob content: {source}")]
    Read {
        /// The reader's error.
        source: io::Error,
    },
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: Digest,
        /// The digest of what was actually written.
        actual: Digest,
    },
    /// Something asked for is not in the store.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for (`blob sha256:...`, `tag app:latest`).
        what: String,
    },
    /// `set_tag` was asked to tag an image whose closure is not fully present.
    #[error("cannot tag {tag}: image is incomplete, blob {missing} is missing")]
    IncompleteImage {
        /// The tag that was refused.
        tag: String,
        /// The first missing blob found.
        missing: Digest,
    },
    /// A lock is held by someone else and the operation does not wait for it.
    #[error("{}: {what} is locked by another process (or an open lease in this one)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What could not be locked (`the store for garbage collection`).
        what: &'static str,
    },
    /// Something on disk is not what the store wrote (hash mismatch, bad JSON, a
    /// directory that is not an OCI layout).
    #[error("{}: corrupt: {reason}", path.display())]
    Corrupt {
        /// The damaged file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob too large for an in-memory read ([`Store::read_blob`](crate::Store::read_blob)
    /// is for JSON documents; stream layers with `open_blob`).
    #[error("blob {digest} is {size} bytes, more than the {limit}-byte limit for in-memory reads")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size on disk.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document in the store (manifest, index, config) does not decode.
    #[error("blob {digest}: {source}")]
    Decode {
        /// The blob.
        digest: Digest,
        /// The decoder's error.
        source: pybuild_oci::Error,
    },
    /// A descriptor handed to the store is unusable (wrong media type for the
    /// operation, size that disagrees with the blob, nesting too deep).
    #[error("descriptor {digest}: {reason}")]
    InvalidDescriptor {
        /// The descriptor's digest.
        digest: Digest,
        /// Why it is rejected.
        reason: String,
    },
    /// An index lists no manifest for the requested platform.
    #[error("index {digest} has no manifest for platform {platform}")]
    NoMatchingPlatform {
        /// The index.
        digest: Digest,
        /// The requested platform, `os/arch[/variant]`.
        platform: String,
    },
    /// A tag name the store cannot record.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A build-cache record that does not follow the contract of
    /// [`Store::put_cache_record`](crate::Store::put_cache_record).
    #[error("cache record {key}: {reason}")]
    InvalidCacheRecord {
        /// The record's key.
        key: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// The callback of [`Store::ensure_snapshot`](crate::Store::ensure_snapshot) failed;
    /// nothing was added to the store.
    #[error("filling snapshot {diff_id}: {source}")]
    Fill {
        /// The snapshot's diff ID.
        diff_id: Digest,
        /// The callback's error.
        source: BoxError,
    },
}

/// Shorthand for an [`Error::Io`] about `path`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
