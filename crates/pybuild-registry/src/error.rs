//! The crate's one error type. Variants carry the registry host, repository and
//! digest they are about; none ever carries a password, token or `Authorization`
//! header (credentials are only ever held by [`Credentials`](crate::Credentials),
//! whose `Debug` is redacted).

use std::path::PathBuf;

use pybuild_oci::Digest;

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image reference that does not follow docker's grammar.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// What was given.
        reference: String,
        /// Why it is rejected.
        reason: String,
    },
    /// An `ADD https://...` download failed.
    #[error("downloading {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A settings file that cannot be read or does not decode.
    #[error("registry settings {}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Docker's `config.json` (credentials) cannot be read, decoded or written.
    #[error("credentials file {}: {reason}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the file's content).
        reason: String,
    },
    /// A `docker-credential-*` helper failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        /// The helper's name (`pass`, `secretservice`, ...).
        helper: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong (exit status, first line of its error output).
        reason: String,
    },
    /// The connection failed (after retries, for idempotent requests).
    #[error("{registry}/{repository}: {operation}: {reason}")]
    Transport {
        /// Registry host (with port).
        registry: String,
        /// Repository.
        repository: String,
        /// What was being done (`GET manifest 3.11-slim`).
        operation: String,
        /// The HTTP library's error, without the URL.
        reason: String,
    },
    /// The registry refused the credentials (or wants some and none are known).
    #[error("{registry}/{repository}: {operation}: unauthorized: {message}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What was being done.
        operation: String,
        /// The registry's explanation, or ours (`no credentials for this registry`).
        message: String,
    },
    /// The registry answered with an unexpected status.
    #[error("{registry}/{repository}: {operation}: HTTP {status}: {message}")]
    Status {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What was being done.
        operation: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's error codes and messages (distribution spec error body), or
        /// the start of the body.
        message: String,
    },
    /// Something asked for does not exist in the registry (HTTP 404).
    #[error("{registry}/{repository}: {what} not found")]
    NotFound {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What (`manifest 3.11`, `blob sha256:...`).
        what: String,
    },
    /// Content did not hash to the digest it was fetched or announced by.
    #[error("{registry}/{repository}: {what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What (`manifest latest`, `blob`).
        what: String,
        /// The digest asked for or announced.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A blob longer or shorter than its descriptor says.
    #[error(
        "{registry}/{repository}: blob {digest}: size mismatch: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// The blob.
        digest: Digest,
        /// The descriptor's size.
        expected: u64,
        /// What arrived (for an oversized blob: at least this much).
        actual: u64,
    },
    /// A manifest or config larger than the limit for in-memory documents.
    #[error("{registry}/{repository}: {what} is larger than {limit} bytes")]
    TooLarge {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What (`manifest latest`).
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A document that does not decode, or of a media type pybuild does not handle.
    #[error("{registry}/{repository}: {what}: {reason}")]
    InvalidContent {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What (`manifest latest`).
        what: String,
        /// Why.
        reason: String,
    },
    /// An index without a manifest for the requested platform.
    #[error("{registry}/{repository}: {reference} has no image for platform {platform} (available: {})", available.join(", "))]
    NoMatchingPlatform {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// The tag or digest resolved.
        reference: String,
        /// The requested platform, `os/arch[/variant]`.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// The registry broke the distribution protocol (no `Location` on an upload, an
    /// unparsable challenge).
    #[error("{registry}/{repository}: {operation}: protocol error: {reason}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// What was being done.
        operation: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The local store failed.
    #[error("local store: {0}")]
    Store(#[from] pybuild_store::Error),
}
