//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while working out the build context.
///
/// Errors about a COPY/ADD source carry the source as written (`src`); the caller adds
/// the Dockerfile line. (The field is not called `source`: `thiserror` reserves that
/// name for the underlying error.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.dockerignore` pattern that Docker would reject (or that this implementation
    /// cannot give Docker's meaning).
    #[error("bad .dockerignore pattern {pattern:?}: {message}")]
    BadPattern {
        /// The pattern as written (trimmed).
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file of the context could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A COPY/ADD source without wildcards names nothing in the context (after
    /// `.dockerignore` and following its symlinks), or a wildcard match is a symlink
    /// that leads nowhere. (A wildcard matching nothing is not an error, as in BuildKit.)
    /// BuildKit: `failed to calculate checksum of ref ...: "/x": not found`.
    #[error("{src:?}: not found in the build context")]
    SourceNotFound {
        /// The source as written, or for a wildcard match whose symlink leads nowhere,
        /// the context path of that match.
        src: String,
    },
    /// A COPY/ADD source whose wildcards Go's `filepath.Match` would reject.
    #[error("bad wildcard in source {src:?}: {message}")]
    BadSourcePattern {
        /// The source as written.
        src: String,
        /// What is wrong with it.
        message: String,
    },
    /// Following the symlinks of a COPY/ADD source took more than 255 steps (a loop).
    #[error("{src:?}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The source as written.
        src: String,
    },
    /// A context path whose name is not UTF-8, which this implementation cannot carry.
    #[error("{}: file name is not valid UTF-8", path.display())]
    NonUtf8Path {
        /// The path on disk.
        path: PathBuf,
    },
    /// A context file changed (or was replaced) while it was being read.
    #[error("{}: changed while it was being read", path.display())]
    Changed {
        /// The path on disk.
        path: PathBuf,
    },
}
