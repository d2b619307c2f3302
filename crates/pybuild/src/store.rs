//! The local image store, as the `pybuild images/inspect/tag/rmi/save/load/prune`
//! and `store verify` commands use it. Thin: each function is one store or export
//! operation plus the name resolution and error context a user needs.
//!
//! Names are looked up the store's way ([`Store::resolve`]: exact, else with
//! `:latest` appended) and new tags are stored through
//! [`normalize_tag`](pybuild_store::normalize_tag), so `app`, `app:latest` and what
//! `skopeo inspect oci:ROOT:app:latest` sees agree.

use std::path::Path;

use pybuild_oci::{Descriptor, Digest};
use pybuild_store::normalize_tag;

pub use pybuild_export::LoadedImage;
pub use pybuild_store::{Problem, PruneOptions, PruneReport, Store, VerifyReport, host_platform};

use crate::{Error, Result};

/// One tagged image, as `pybuild images` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The tag, as stored (`app:latest`, `registry.example.com/team/app:1`).
    pub name: String,
    /// The image ID: the config's digest (what docker shows as IMAGE ID).
    pub id: Digest,
    /// The manifest's (or index's) digest.
    pub digest: Digest,
    /// The config's `created` (RFC 3339), if any.
    pub created: Option<String>,
    /// Bytes in the store: manifest, config and layer blobs (compressed).
    pub size: u64,
}

/// What `pybuild inspect` shows about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    /// The tag as stored.
    pub name: String,
    /// The image ID (config digest).
    pub id: Digest,
    /// The manifest's digest (for an index, the host platform's manifest).
    pub digest: Digest,
    /// The manifest, as JSON.
    pub manifest: serde_json::Value,
    /// The image config, as JSON.
    pub config: serde_json::Value,
}

/// Archive formats of [`save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFormat {
    /// What `docker save` writes (`manifest.json`, config, uncompressed layers).
    #[default]
    DockerArchive,
    /// An OCI image layout in a tar.
    OciArchive,
}

/// Open the store at `root`, or at [`Store::default_root`].
pub fn open_store(root: Option<&Path>) -> Result<Store> {
    let root = root.map_or_else(Store::default_root, Path::to_path_buf);
    Ok(Store::open(&root)?)
}

/// Wrap an error with the image it concerns.
fn about(image: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |source| Error::Image {
        image: image.to_string(),
        source: Box::new(source),
    }
}

/// The descriptor tagged `name` (without its tag annotation), or
/// [`Error::ImageNotFound`].
fn resolve(store: &Store, name: &str) -> Result<(String, Descriptor)> {
    let desc = store
        .resolve(name)
        .map_err(|e| about(name)(e.into()))?
        .ok_or_else(|| Error::ImageNotFound {
            name: name.to_string(),
        })?;
    let stored = desc
        .annotations
        .get(pybuild_oci::ANNOTATION_REF_NAME)
        .cloned()
        .unwrap_or_else(|| name.to_string());
    let mut plain = desc;
    plain.annotations.remove(pybuild_oci::ANNOTATION_REF_NAME);
    Ok((stored, plain))
}

/// Every tagged image, sorted by name. An image whose manifest or config cannot be
/// read is still listed (ID = manifest digest, no date, size of the manifest):
/// `pybuild store verify` says what is wrong with it.
pub fn images(store: &Store) -> Result<Vec<ImageSummary>> {
    let mut out = Vec::new();
    for (name, desc) in store.list_tags()? {
        let summary = match store.image(&desc, None) {
            Ok(image) => ImageSummary {
                id: image.config_descriptor.digest.clone(),
                digest: desc.digest.clone(),
                created: image.config.created.clone(),
                size: desc.size
                    + image.config_descriptor.size
                    + image.manifest.layers.iter().map(|l| l.size).sum::<u64>(),
                name,
            },
            Err(_) => ImageSummary {
                id: desc.digest.clone(),
                digest: desc.digest.clone(),
                created: None,
                size: desc.size,
                name,
            },
        };
        out.push(summary);
    }
    Ok(out)
}

/// The manifest and config of the image tagged `name`.
pub fn inspect(store: &Store, name: &str) -> Result<ImageDetails> {
    let (stored, desc) = resolve(store, name)?;
    let image = store
        .image(&desc, None)
        .map_err(|e| about(&stored)(e.into()))?;
    let to_json = |bytes: Vec<u8>, what: &'static str| {
        serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| Error::Image {
            image: stored.clone(),
            source: Box::new(Error::Invalid {
                what,
                reason: e.to_string(),
            }),
        })
    };
    // The documents as stored (not re-serialized): what a registry would serve.
    let manifest = store
        .read_blob(&image.descriptor.digest)
        .map_err(|e| about(&stored)(e.into()))?;
    let config = store
        .read_blob(&image.config_descriptor.digest)
        .map_err(|e| about(&stored)(e.into()))?;
    Ok(ImageDetails {
        manifest: to_json(manifest, "manifest")?,
        config: to_json(config, "config")?,
        id: image.config_descriptor.digest,
        digest: image.descriptor.digest,
        name: stored,
    })
}

/// Tag the image `src` also as `dst` (normalized: `app` → `app:latest`). Returns
/// the new tag as stored.
pub fn tag(store: &Store, src: &str, dst: &str) -> Result<String> {
    let (_, desc) = resolve(store, src)?;
    let dst = normalize_tag(dst);
    store
        .set_tag(&dst, &desc)
        .map_err(|e| about(&dst)(e.into()))?;
    Ok(dst)
}

/// Remove tags. Every name must exist (else [`Error::ImageNotFound`] and nothing
/// is removed). The images' blobs stay until [`prune`]. Returns the tags removed,
/// as stored.
pub fn rmi(store: &Store, names: &[String]) -> Result<Vec<String>> {
    let mut stored = Vec::new();
    for name in names {
        stored.push(resolve(store, name)?.0);
    }
    let mut removed = Vec::new();
    for name in stored {
        if store.remove_tag(&name)? {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Remove unreferenced blobs, snapshots and stale temp files; with `all`, the
/// build cache too.
pub fn prune(store: &Store, all: bool) -> Result<PruneReport> {
    Ok(store.prune(&PruneOptions { all })?)
}

/// Re-hash every blob and check every image and record.
pub fn verify(store: &Store) -> Result<VerifyReport> {
    Ok(store.verify()?)
}

/// Write the images `names` into the archive `out`. The file appears atomically:
/// it is written to a temp file next to `out`, fsynced and renamed over it, so a
/// failed save leaves no partial archive (and an existing `out` untouched).
/// Several names of one image become several tags of one archive entry.
pub fn save(store: &Store, names: &[String], format: SaveFormat, out: &Path) -> Result<()> {
    let mut images: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for name in names {
        let (stored, desc) = resolve(store, name)?;
        match images.iter_mut().find(|(d, _)| d.digest == desc.digest) {
            Some((_, tags)) => tags.push(stored),
            None => images.push((desc, vec![stored])),
        }
    }
    let subject = names.join(", ");
    crate::atomic::write_with(out, |file| {
        let result = match format {
            SaveFormat::DockerArchive => {
                pybuild_export::write_docker_archive_multi(store, &images, file).map(drop)
            }
            SaveFormat::OciArchive => {
                pybuild_export::write_oci_archive(store, &images, file).map(drop)
            }
        };
        result.map_err(|e| about(&subject)(e.into()))
    })
}

/// Load a docker or OCI archive (plain or gzipped) into the store.
pub fn load(store: &Store, path: &Path) -> Result<Vec<LoadedImage>> {
    pybuild_export::load_archive_file(store, path).map_err(|e| Error::Load {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    })
}
