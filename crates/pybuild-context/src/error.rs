//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while working out the build context.
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
}
