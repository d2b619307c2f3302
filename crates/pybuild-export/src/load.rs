//! Loading an archive into the store: an OCI image layout in a tar (what
//! [`write_oci_archive`](crate::write_oci_archive), `skopeo copy oci-archive:` and
//! BuildKit's `type=oci` output write) or a docker archive (`docker save`,
//! [`write_docker_archive`](crate::write_docker_archive)), either optionally gzipped.
//!
//! The archive is read once, as a stream, never unpacked to disk:
//!
//! - `blobs/sha256/<hex>` members stream into the store through a
//!   [`BlobWriter`](pybuild_store::BlobWriter) committed with the digest the name
//!   promises, so a damaged blob is refused before it becomes visible;
//! - `*.tar` members (docker archive layers) are gzip-compressed on the fly into a
//!   new blob ([`compress_tar`]), which also yields their diff ID;
//! - small metadata members (`manifest.json`, `index.json`, `oci-layout`, `*.json`)
//!   are kept in memory; anything else is ignored.
//!
//! Once the stream ends, the kind of archive is decided (OCI when it has
//! `oci-layout` and `index.json`, else docker when it has `manifest.json`), every
//! image is checked complete (OCI) or assembled into an OCI manifest whose config's
//! `rootfs.diff_ids` were compared with the layers (docker), and only then, once every
//! image of the archive is present, are tags set. A corrupt or truncated archive
//! therefore never leaves a tag behind; the blobs it did deliver are unreferenced
//! and go with the next prune. A lease is held throughout so that prune cannot
//! remove them while the load runs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use pybuild_layer::{Compression, LayerInfo, WriteOptions, compress_tar};
use pybuild_oci::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest,
    canonical_json, from_json, media_type,
};
use pybuild_store::{Store, normalize_tag};

use crate::docker::ManifestItem;
use crate::error::{Error, io_err};
use crate::oci::read_limited;
use crate::util;

/// Largest metadata member kept in memory (image configs of real images are a few
/// KiB; 16 MiB leaves room for very long histories).
const METADATA_LIMIT: u64 = 16 << 20;

/// containerd's annotation for the full image name, which Docker 25+ `docker save`
/// and BuildKit put next to a short `org.opencontainers.image.ref.name`.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image an archive delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The tag it was given, or `None` for an image the archive names only by
    /// digest (an OCI `index.json` entry without a ref-name annotation, a docker
    /// archive item with no `RepoTags`).
    pub name: Option<String>,
    /// Its manifest (or index) descriptor in the store.
    pub descriptor: Descriptor,
}

/// What an archive member became.
#[derive(Debug, Clone)]
enum Member {
    /// Kept in memory.
    Bytes(Vec<u8>),
    /// Stored as is (a `blobs/sha256/` member).
    Blob(Digest),
    /// A plain tar stored gzip-compressed.
    Layer(LayerInfo),
}

/// The members read so far, and links between them.
#[derive(Debug, Default)]
struct Members {
    files: HashMap<String, Member>,
    links: HashMap<String, String>,
}

impl Members {
    /// The member at `path`, following symlinks and hard links between members
    /// (older `docker save` links repeated layers to their first copy).
    fn get(&self, path: &str) -> Option<&Member> {
        let mut path = clean_path(path)?;
        for _ in 0..16 {
            if let Some(m) = self.files.get(&path) {
                return Some(m);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }

    fn bytes(&self, path: &str) -> Option<&[u8]> {
        match self.files.get(path)? {
            Member::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Load the archive file at `path` (plain or gzip-compressed tar).
pub fn load_archive_file(store: &Store, path: &Path) -> Result<Vec<LoadedImage>, Error> {
    let file = File::open(path).map_err(io_err(path))?;
    load_archive(store, file)
}

/// Load an archive from a stream (plain or gzip-compressed tar); see the module
/// documentation. Returns every image with its name (one entry per name), in
/// archive order.
pub fn load_archive(store: &Store, reader: impl Read) -> Result<Vec<LoadedImage>, Error> {
    let _lease = store.lease()?;
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let head = reader.fill_buf().map_err(|source| Error::Input {
        member: String::new(),
        source,
    })?;
    let input: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let members = read_members(store, input)?;
    let (images, tags) =
        if members.bytes("oci-layout").is_some() && members.bytes("index.json").is_some() {
            finish_oci(store, &members)?
        } else if members.bytes("manifest.json").is_some() {
            finish_docker(store, &members)?
        } else {
            return Err(Error::InvalidArchive {
                reason: "neither an OCI image layout (no oci-layout and index.json) nor a \
                     docker archive (no manifest.json)"
                    .into(),
            });
        };
    // Every image is complete: now, and only now, tag.
    for (name, desc) in &tags {
        store.set_tag(name, desc)?;
    }
    Ok(images)
}

/// Stream every member of the tar into the store or memory.
fn read_members(store: &Store, input: impl Read) -> Result<Members, Error> {
    let input_err = |member: &str| {
        let member = member.to_string();
        move |source| Error::Input { member, source }
    };
    let mut archive = tar::Archive::new(input);
    let mut members = Members::default();
    let not_tar = |e: io::Error| Error::Input {
        member: String::new(),
        source: io::Error::new(e.kind(), format!("not a tar archive, or cut off: {e}")),
    };
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = clean_path(&raw) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            // A symlink is relative to its own directory; a hard link names a
            // member from the archive root.
            let target = if kind.is_symlink() && !target.starts_with('/') {
                match path.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target,
                }
            } else {
                target
            };
            if let Some(target) = clean_path(&target) {
                members.links.insert(path, target);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let member = if let Some(expected) = blob_digest(&path) {
            let mut writer = store.blob_writer()?;
            let copied = io::copy(&mut entry, &mut writer).map_err(input_err(&path))?;
            check_complete(&path, copied, size)?;
            writer.commit(Some(&expected)).map_err(|e| match e {
                pybuild_store::Error::DigestMismatch { expected, actual } => {
                    Error::DigestMismatch {
                        what: format!("archive member {path}"),
                        expected,
                        actual,
                    }
                }
                other => Error::Store(other),
            })?;
            Member::Blob(expected)
        } else if is_metadata(&path) {
            let bytes = read_limited(&mut entry, METADATA_LIMIT, &path)?;
            check_complete(&path, bytes.len() as u64, size)?;
            Member::Bytes(bytes)
        } else if path.ends_with(".tar") {
            let mut counted = util::HashReader::new(&mut entry);
            let stored = store_layer(store, &mut counted, &path);
            // A cut-off archive shows up as a short member, whatever the layer
            // engine made of the part it saw: report the truncation.
            let (_, copied) = counted.drain_and_finish().map_err(input_err(&path))?;
            check_complete(&path, copied, size)?;
            Member::Layer(stored?)
        } else {
            continue;
        };
        members.files.insert(path, member);
    }
    Ok(members)
}

/// Gzip a tar from `reader` into a new blob.
fn store_layer(store: &Store, reader: impl Read, what: &str) -> Result<LayerInfo, Error> {
    let mut writer = store.blob_writer()?;
    let options = WriteOptions {
        compression: Compression::Gzip { level: 6 },
        mtime_clamp: None,
    };
    let info =
        compress_tar(reader, &options, &mut writer).map_err(|source| Error::InvalidArchive {
            reason: format!("{what}: not a usable layer tar: {source}"),
        })?;
    writer.commit(Some(&info.digest))?;
    Ok(info)
}

/// A member shorter than its header says: the archive was cut off.
fn check_complete(path: &str, got: u64, want: u64) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Input {
            member: path.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated: {got} of {want} bytes"),
            ),
        })
    }
}

/// `blobs/sha256/<hex>` → the digest it names.
fn blob_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    format!("sha256:{hex}").parse().ok()
}

/// Members kept in memory.
fn is_metadata(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(
        path,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    ) || name.ends_with(".json")
        || name == "json"
        || name == "VERSION"
}

/// An archive path without `./`, leading or doubled `/`, with `..` resolved;
/// `None` for the root itself or a path leaving it.
fn clean_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

type Finished = (Vec<LoadedImage>, Vec<(String, Descriptor)>);

/// An OCI layout: check each `index.json` entry's image is complete in the store.
fn finish_oci(store: &Store, members: &Members) -> Result<Finished, Error> {
    let layout = members.bytes("oci-layout").unwrap_or_default();
    let version = serde_json::from_slice::<serde_json::Value>(layout)
        .ok()
        .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
    if version
        .as_deref()
        .is_none_or(|v| v.split('.').next() != Some("1"))
    {
        return Err(Error::InvalidArchive {
            reason: format!("oci-layout: unsupported imageLayoutVersion {version:?}"),
        });
    }
    let index: ImageIndex = from_json("index", members.bytes("index.json").unwrap_or_default())
        .map_err(|e| Error::InvalidArchive {
            reason: format!("index.json: {e}"),
        })?;
    let mut images = Vec::new();
    let mut tags = Vec::new();
    for entry in &index.manifests {
        for blob in util::closure(store, entry).map_err(|e| missing(entry, e))? {
            let present = std::fs::metadata(store.blob_path(&blob.digest))
                .is_ok_and(|m| m.is_file() && m.len() == blob.size);
            if !present {
                return Err(Error::InvalidArchive {
                    reason: format!(
                        "image {}: blob {} ({} bytes) is missing from the archive",
                        entry.digest, blob.digest, blob.size
                    ),
                });
            }
        }
        let name = entry
            .annotations
            .get(ANNOTATION_CONTAINERD_NAME)
            .or_else(|| entry.annotations.get(ANNOTATION_REF_NAME))
            .cloned();
        let mut desc = entry.clone();
        desc.annotations.remove(ANNOTATION_REF_NAME);
        if let Some(name) = &name {
            tags.push((name.clone(), desc.clone()));
        }
        images.push(LoadedImage {
            name,
            descriptor: desc,
        });
    }
    Ok((images, tags))
}

/// A manifest or index missing from the archive reads better as that than as the
/// store's "not found".
fn missing(entry: &Descriptor, e: Error) -> Error {
    match e {
        Error::Store(pybuild_store::Error::NotFound { what }) => Error::InvalidArchive {
            reason: format!("image {}: {what} is missing from the archive", entry.digest),
        },
        other => other,
    }
}

/// A docker archive: build an OCI manifest per `manifest.json` item.
fn finish_docker(store: &Store, members: &Members) -> Result<Finished, Error> {
    let items: Vec<ManifestItem> = serde_json::from_slice(
        members.bytes("manifest.json").unwrap_or_default(),
    )
    .map_err(|source| Error::Json {
        what: "manifest.json".into(),
        source,
    })?;
    if items.is_empty() {
        return Err(Error::InvalidArchive {
            reason: "manifest.json lists no image".into(),
        });
    }
    let absent = |path: &str| Error::InvalidArchive {
        reason: format!("{path}, named in manifest.json, is not in the archive"),
    };
    let mut recompressed: HashMap<Digest, LayerInfo> = HashMap::new();
    let mut images = Vec::new();
    let mut tags = Vec::new();
    for item in &items {
        let config_bytes = match members
            .get(&item.config)
            .ok_or_else(|| absent(&item.config))?
        {
            Member::Bytes(b) => b.clone(),
            Member::Blob(d) => store.read_blob(d)?,
            Member::Layer(_) => return Err(absent(&item.config)),
        };
        let config: ImageConfig =
            from_json("config", &config_bytes).map_err(|e| Error::InvalidArchive {
                reason: format!("{}: {e}", item.config),
            })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != item.layers.len() {
            return Err(Error::InvalidArchive {
                reason: format!(
                    "{}: the config lists {} diff IDs, manifest.json {} layers",
                    item.config,
                    diff_ids.len(),
                    item.layers.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (path, diff_id) in item.layers.iter().zip(diff_ids) {
            let info = match members.get(path).ok_or_else(|| absent(path))? {
                Member::Layer(info) => info.clone(),
                Member::Blob(d) => match recompressed.get(d) {
                    Some(info) => info.clone(),
                    None => {
                        let info = store_layer(store, store.open_blob(d)?, path)?;
                        recompressed.insert(d.clone(), info.clone());
                        info
                    }
                },
                Member::Bytes(_) => return Err(absent(path)),
            };
            if info.diff_id != *diff_id {
                return Err(Error::DiffIdMismatch {
                    layer: path.clone(),
                    expected: diff_id.clone(),
                    actual: info.diff_id,
                });
            }
            layers.push(Descriptor::new(info.media_type, info.digest, info.size));
        }
        // The config byte for byte: its digest is the image ID docker shows.
        let (config_digest, config_size) = store.put_blob(&config_bytes)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: Descriptor::new(media_type::OCI_CONFIG, config_digest, config_size),
            layers,
            annotations: Default::default(),
        };
        let bytes = canonical_json(&manifest);
        let (digest, size) = store.put_blob(&bytes)?;
        let desc = Descriptor::new(media_type::OCI_MANIFEST, digest, size);
        let names: Vec<String> = item
            .repo_tags
            .iter()
            .flatten()
            // skopeo writes full names (`docker.io/x/y:t`), docker short ones; the
            // store keeps the short form users type (and `docker images` shows).
            .map(|t| normalize_tag(&crate::docker::familiar_name(t)))
            .collect();
        if names.is_empty() {
            images.push(LoadedImage {
                name: None,
                descriptor: desc.clone(),
            });
        }
        for name in names {
            tags.push((name.clone(), desc.clone()));
            images.push(LoadedImage {
                name: Some(name),
                descriptor: desc.clone(),
            });
        }
    }
    Ok((images, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(
            clean_path("./manifest.json").as_deref(),
            Some("manifest.json")
        );
        assert_eq!(clean_path("/a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(clean_path("a/../b.tar").as_deref(), Some("b.tar"));
        assert_eq!(clean_path("../x"), None);
        assert_eq!(clean_path("./"), None);
    }

    #[test]
    fn member_kinds() {
        let hex = "0".repeat(64);
        assert!(blob_digest(&format!("blobs/sha256/{hex}")).is_some());
        assert!(blob_digest("blobs/sha256/xyz").is_none());
        assert!(is_metadata("manifest.json"));
        assert!(is_metadata("abc/json"));
        assert!(is_metadata(&format!("{hex}.json")));
        assert!(!is_metadata(&format!("{hex}.tar")));
    }

    #[test]
    fn links_are_followed() {
        let mut m = Members::default();
        m.files
            .insert("a/layer.tar".into(), Member::Bytes(b"x".to_vec()));
        m.links.insert("b/layer.tar".into(), "a/layer.tar".into());
        assert!(m.get("./b/layer.tar").is_some());
        assert!(m.get("c/layer.tar").is_none());
    }
}
