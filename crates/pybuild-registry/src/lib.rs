//! pybuild's registry client: pulls images into the local store and pushes them out,
//! over the OCI distribution API (distribution-spec v1.1, which docker's registry
//! API v2 became).
//!
//! - [`Reference`] ([`reference`]): docker's reference grammar and normalization
//!   (`python:3.11-slim` → `docker.io/library/python:3.11-slim`).
//! - [`RegistryConfig`] ([`config`]): per-registry settings from TOML (mirrors,
//!   plain HTTP, skipped verification, extra CAs), buildkitd.toml style.
//! - [`auth`]: credentials from docker's `config.json` and credential helpers,
//!   `login`/`logout` writes, `WWW-Authenticate` challenges and docker's token
//!   protocol.
//! - [`Client`] ([`client`]): one blocking HTTP client per endpoint, mirrors for
//!   pulls, timeouts, retries with backoff for idempotent requests, redirects,
//!   authentication on 401 with one retry.
//! - [`resolve`]/[`pull`] ([`pull`]): manifest negotiation and verification, platform
//!   selection from an index, blobs streamed into the store with digest and size
//!   checked, resumed with `Range` after a dropped connection.
//! - [`push`] ([`push`]): blobs checked with HEAD, mounted across repositories or
//!   uploaded (monolithic or chunked), manifests last.
//!
//! Nothing here prints: progress goes to a [`Progress`] implementation as
//! [`Event`]s. Errors ([`Error`]) name the registry, repository and digest, never a
//! credential.

pub mod auth;
pub mod client;
pub mod config;
mod error;
pub mod fetch;
pub mod pull;
pub mod push;
pub mod reference;

use pybuild_oci::Digest;

pub use auth::{Anonymous, CredentialSource, Credentials, DockerAuth, StaticCredentials};
pub use client::{Client, ClientOptions};
pub use config::{Endpoint, HostSettings, RegistryConfig};
pub use error::Error;
pub use fetch::{Download, download_if_changed};
pub use pull::{PulledImage, Resolved, pull, resolve};
pub use push::{PushOptions, PushResult, push};
pub use reference::Reference;

/// Something that happened during a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A reference was resolved to a manifest (or index) digest.
    Resolved {
        /// The reference, full form.
        reference: String,
        /// The digest of what the tag points at (the index for multi-platform images).
        digest: Digest,
        /// The endpoint host that answered (a mirror, or the registry).
        host: String,
    },
    /// A blob transfer starts.
    BlobStarted {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// Bytes of a blob moved (sent about every MiB).
    BlobProgress {
        /// The blob.
        digest: Digest,
        /// Bytes so far.
        done: u64,
        /// Total size.
        size: u64,
    },
    /// A blob needed no transfer: already in the local store (pull) or the
    /// registry (push).
    BlobSkipped {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A blob was mounted from another repository of the same registry.
    BlobMounted {
        /// The blob.
        digest: Digest,
        /// The repository it came from.
        from: String,
    },
    /// A blob transfer finished and was verified.
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Bytes moved over the network (more than the size after a restart).
        transferred: u64,
    },
    /// A request is retried (dropped connection, 5xx, 429, resumed download).
    Retry {
        /// What is retried.
        operation: String,
        /// Attempt number about to start (2 = first retry).
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A manifest or index was uploaded.
    ManifestPushed {
        /// Its digest.
        digest: Digest,
        /// The tag or digest it was put under.
        reference: String,
    },
}

/// Receives [`Event`]s. Called from several threads during concurrent transfers.
pub trait Progress: Sync {
    /// One event.
    fn event(&self, event: &Event);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &Event) {}
}

impl<F: Fn(&Event) + Sync> Progress for F {
    fn event(&self, event: &Event) {
        self(event)
    }
}
