//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

use pybuild_oci::Digest;

/// Errors of the exporters and of [`load_archive`](crate::load_archive). Every
/// variant names the file, blob or archive member it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed (missing blob, corrupt manifest, lock, ...).
    #[error(transparent)]
    Store(#[from] pybuild_store::Error),
    /// A layer could not be decompressed, recompressed or applied.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer (its blob digest, or for a docker archive member its diff ID
        /// when known).
        digest: Digest,
        /// What the layer engine reported.
        source: pybuild_layer::Error,
    },
    /// A file-system operation on the export destination failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Writing the archive stream failed.
    #[error("writing the archive: {source}")]
    Output {
        /// The writer's error.
        source: io::Error,
    },
    /// Reading the archive given to `load_archive` failed (truncated, not a tar,
    /// bad gzip).
    #[error("reading the archive{}: {source}", member_suffix(member))]
    Input {
        /// The archive member being read, if any (empty otherwise).
        member: String,
        /// The reader's error.
        source: io::Error,
    },
    /// Content did not hash to the digest it is named or described by.
    #[error("{what}: digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch {
        /// What was checked (`blob sha256:...`, `archive member blobs/sha256/...`).
        what: String,
        /// The digest the content should have.
        expected: Digest,
        /// What it hashes to.
        actual: Digest,
    },
    /// A layer's uncompressed content does not match the config's `rootfs.diff_ids`.
    #[error(
        "layer {layer}: diff ID mismatch: the image config says {expected}, the layer is {actual}"
    )]
    DiffIdMismatch {
        /// The layer (blob digest or archive member name).
        layer: String,
        /// The diff ID in the config.
        expected: Digest,
        /// The uncompressed layer's sha256.
        actual: Digest,
    },
    /// An archive that is neither an OCI layout nor a docker archive, or whose
    /// metadata is inconsistent.
    #[error("invalid archive: {reason}")]
    InvalidArchive {
        /// What is wrong.
        reason: String,
    },
    /// An image whose manifest or config cannot be exported as asked.
    #[error("image {digest}: {reason}")]
    InvalidImage {
        /// The image's manifest digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// A JSON document that does not decode.
    #[error("{what}: {source}")]
    Json {
        /// Which document (`manifest.json`, `index.json`, a config).
        what: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

fn member_suffix(member: &str) -> String {
    if member.is_empty() {
        String::new()
    } else {
        format!(" (member {member:?})")
    }
}

/// Shorthand for an [`Error::Io`] about `path`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Shorthand for an [`Error::Output`].
pub(crate) fn out_err(source: io::Error) -> Error {
    Error::Output { source }
}
