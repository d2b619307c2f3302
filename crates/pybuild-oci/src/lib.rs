//! OCI image format types, shared by pybuild's store, layer engine, exporters and
//! registry client.
//!
//! - [`Digest`]: a validated `sha256:<64 hex>` content address, and [`Sha256Writer`]
//!   to compute one while streaming.
//! - [`Descriptor`], [`ImageManifest`], [`ImageIndex`]: the OCI image spec's JSON
//!   documents (also able to carry Docker schema2 media types).
//! - [`ImageConfig`]: the image configuration, with the Docker extensions BuildKit
//!   writes (`Healthcheck`, `OnBuild`, `Shell`) that `oci-spec`'s type drops.
//! - [`canonical_json`]: the one serialization used for everything that is hashed:
//!   object keys sorted at every level, no insignificant whitespace. Digests of
//!   manifests and configs are therefore stable across runs and machines.
//!
//! References: OCI image-spec v1.1 (`descriptor.md`, `manifest.md`,
//! `image-index.md`, `config.md`, `image-layout.md`) and Docker's image spec v1.2 for
//! the config extensions.

mod config;
mod digest;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use config::{Config, Empty, HealthConfig, History, ImageConfig, RootFs};
pub use digest::{Digest, Sha256Writer};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string that is not a valid digest.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// What was given.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A JSON document that does not decode as the expected type.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// Which document (manifest, index, config).
        what: &'static str,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

/// Media types pybuild reads and writes.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer, uncompressed tar.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer, gzip.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, gzip.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// Whether a media type names a single-image manifest (OCI or Docker).
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }

    /// Whether a media type names an index (OCI index or Docker manifest list).
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}

/// Annotation holding a tag in an OCI layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation for the image's creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// The platform an image is for, as it appears in an index descriptor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// `os.version`, for Windows.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// `os.features`.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor: what a blob is, how big, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Annotations (sorted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, for manifests listed in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type (OCI 1.1).
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Platform {
    /// The platform images default to: `linux` on the host's CPU architecture, in
    /// Go's `GOARCH` names, which the image spec uses (`amd64`, `arm64`, ...).
    pub fn host() -> Self {
        Self {
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            os: "linux".to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: None,
        }
    }

    /// A Linux-style platform: no OS version, no OS features.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            architecture: architecture.to_string(),
            os: os.to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        }
    }
}

/// Rust's architecture name → Go's `GOARCH`.
fn go_arch(rust_arch: &str) -> &str {
    let little = cfg!(target_endian = "little");
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if little => "ppc64le",
        "mips64" if little => "mips64le",
        "mips" if little => "mipsle",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl Descriptor {
    /// A descriptor without annotations or platform.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// An image manifest: one config and an ordered list of layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// OCI or Docker manifest media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (or Docker manifest list): manifests, usually one per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// OCI index or Docker manifest list media type.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An empty OCI index.
    pub fn new() -> Self {
        Self {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

impl Default for ImageIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// Serialize a value canonically: object keys sorted at every level (serde_json's map
/// is ordered by key), compact, UTF-8. Everything pybuild hashes goes through this.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // A value that cannot become JSON is a bug in our own types (all maps have string
    // keys), so fall back to an empty object rather than panic.
    let tree = serde_json::to_value(value).unwrap_or(serde_json::Value::Object(Default::default()));
    serde_json::to_vec(&tree).unwrap_or_default()
}

/// Decode a JSON document, naming it in the error.
pub fn from_json<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json { what, source })
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_platform_uses_go_arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
        assert_eq!(Platform::host().os, "linux");
        assert_eq!(
            Platform::new("linux", "arm", Some("v7")),
            Platform {
                architecture: "arm".into(),
                os: "linux".into(),
                os_version: None,
                os_features: Vec::new(),
                variant: Some("v7".into()),
            }
        );
    }

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_everywhere() {
        let mut annotations = BTreeMap::new();
        annotations.insert("z".to_string(), "1".to_string());
        annotations.insert("a".to_string(), "2".to_string());
        let d = Descriptor {
            annotations,
            ..Descriptor::new(media_type::OCI_CONFIG, Digest::of(b"x"), 1)
        };
        let text = String::from_utf8(canonical_json(&d)).expect("utf-8");
        assert_eq!(
            text,
            r#"{"annotations":{"a":"2","z":"1"},"digest":"sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881","mediaType":"application/vnd.oci.image.config.v1+json","size":1}"#
        );
    }

    const GOLDEN_MANIFEST_DIGEST: &str =
        "sha256:598749a8d82bacbb44d02ebe1685754ac213ab516cbb0284081f0bd5750bc4fb";

    #[test]
    fn manifest_round_trip_and_golden_digest() {
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: Descriptor::new(media_type::OCI_CONFIG, Digest::of(b"{}"), 2),
            layers: vec![Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                Digest::of(b""),
                0,
            )],
            annotations: BTreeMap::new(),
        };
        let bytes = canonical_json(&m);
        let back: ImageManifest = from_json("manifest", &bytes).expect("decodes");
        assert_eq!(back, m);
        // Golden: a change in the encoding changes every image digest; it must be
        // deliberate.
        assert_eq!(Digest::of(&bytes).to_string(), GOLDEN_MANIFEST_DIGEST);
    }
}
