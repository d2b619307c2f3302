//! The docker archive: what `docker save` writes and `docker load`, `podman load`
//! and `skopeo copy docker-archive:FILE ...` read.
//!
//! # Format
//!
//! Docker's image spec v1.2 ("Combined Image JSON + Filesystem Changeset Format")
//! defines the archive by its `manifest.json`: an array with one object per image,
//! `{"Config": PATH, "RepoTags": [...], "Layers": [PATH, ...]}`, paths relative to the
//! archive root; readers find everything else through those paths. We write what
//! containers/image's docker-archive writer (`docker/internal/tarfile`, used by
//! skopeo and podman) writes, minus its legacy v1 extras:
//!
//! ```text
//! manifest.json          [{"Config":"<config-hex>.json","RepoTags":["app:1"],"Layers":["<diffid-hex>.tar",...]}]
//! <config-hex>.json      the image config, byte for byte (so the image ID is kept)
//! <diffid-hex>.tar       each layer, uncompressed
//! ```
//!
//! Uncompressed layers because older `docker load` only takes plain tars and
//! because the config's `rootfs.diff_ids` then equal the sha256 of the very files
//! in the archive, which is what every reader (containers/image included) checks.
//! `RepoTags` hold names the way docker prints them (`app:latest` for
//! `docker.io/library/app:latest`, see [`familiar_name`]). `manifest.json` comes
//! first so streaming readers see it before the blobs; the legacy `repositories`
//! file and `<id>/json` directories are not written (docker load ignores them when
//! `manifest.json` exists, since Docker 1.10).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use pybuild_layer::{Compression, WriteOptions, compress_tar};
use pybuild_oci::{Descriptor, media_type};
use pybuild_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Error, io_err, out_err};
use crate::util::{self, HashReader};

/// One element of a docker archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestItem {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// Docker's short form of a name: `docker.io/library/x:t` → `x:t`,
/// `docker.io/u/x:t` → `u/x:t`; names on other registries, and names already short,
/// unchanged. (Docker's "familiar" reference form, which `docker images` shows and
/// `docker save` writes into `RepoTags`.)
pub fn familiar_name(name: &str) -> String {
    for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest.strip_prefix("library/").unwrap_or(rest).to_string();
        }
    }
    name.to_string()
}

/// Write the image `desc` (a manifest, or an index resolved to the host platform's
/// manifest) as a docker archive tagged `tags` (given in any form; written in
/// [`familiar_name`] form). Returns the writer.
pub fn write_docker_archive<W: Write>(
    store: &Store,
    desc: &Descriptor,
    tags: &[String],
    out: W,
) -> Result<W, Error> {
    write_docker_archive_multi(store, &[(desc.clone(), tags.to_vec())], out)
}

/// [`write_docker_archive`] for several images in one archive (`docker save a b`):
/// one `manifest.json` item per image, layers shared between images written once.
///
/// Each layer is decompressed into a scratch file in the store (a tar entry needs
/// its size before its content), checked against the config's diff ID, and
/// streamed into the archive; the compressed blob's own digest is verified on the
/// way. On error what was written is incomplete: write to a temp file and rename it
/// only on success.
pub fn write_docker_archive_multi<W: Write>(
    store: &Store,
    images: &[(Descriptor, Vec<String>)],
    out: W,
) -> Result<W, Error> {
    let _lease = store.lease()?;
    let mut items = Vec::new();
    let mut resolved = Vec::new();
    for (desc, tags) in images {
        let image = store.image(desc, None)?;
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.manifest.layers.len() {
            return Err(Error::InvalidImage {
                digest: image.descriptor.digest.clone(),
                reason: format!(
                    "the manifest has {} layers but the config {} diff IDs",
                    image.manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let mut repo_tags: Vec<String> = tags.iter().map(|t| familiar_name(t)).collect();
        repo_tags.dedup();
        items.push(ManifestItem {
            config: format!("{}.json", image.config_descriptor.digest.hex()),
            repo_tags: Some(repo_tags),
            layers: diff_ids
                .iter()
                .map(|d| format!("{}.tar", d.hex()))
                .collect(),
        });
        resolved.push(image);
    }
    let manifest_json = serde_json::to_vec(&items).map_err(|source| Error::Json {
        what: "manifest.json".into(),
        source,
    })?;

    let mut tar = tar::Builder::new(out);
    util::append_bytes(&mut tar, "manifest.json", &manifest_json)?;
    let mut written = HashSet::new();
    let scratch = store.temp_dir()?;
    for image in &resolved {
        let config = &image.config_descriptor;
        if written.insert(config.digest.clone()) {
            let path = format!("{}.json", config.digest.hex());
            util::append_blob(&mut tar, store, config, &path)?;
        }
        for (layer, diff_id) in image
            .manifest
            .layers
            .iter()
            .zip(&image.config.rootfs.diff_ids)
        {
            if !written.insert(diff_id.clone()) {
                continue;
            }
            let path = format!("{}.tar", diff_id.hex());
            if layer.media_type == media_type::OCI_LAYER_TAR
                || layer.media_type == pybuild_layer::DOCKER_LAYER_TAR
            {
                // Already a plain tar: its digest is its diff ID.
                if layer.digest != *diff_id {
                    return Err(Error::DiffIdMismatch {
                        layer: layer.digest.to_string(),
                        expected: diff_id.clone(),
                        actual: layer.digest.clone(),
                    });
                }
                util::append_blob(&mut tar, store, layer, &path)?;
                continue;
            }
            let scratch_path = scratch.path().join(diff_id.hex());
            let mut file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&scratch_path)
                .map_err(io_err(&scratch_path))?;
            let blob = store.open_blob(&layer.digest)?;
            let mut hashed = HashReader::new(blob);
            let options = WriteOptions {
                compression: Compression::None,
                mtime_clamp: None,
            };
            let info =
                compress_tar(&mut hashed, &options, &mut file).map_err(|source| Error::Layer {
                    digest: layer.digest.clone(),
                    source,
                })?;
            let (blob_digest, _) = hashed
                .drain_and_finish()
                .map_err(io_err(&store.blob_path(&layer.digest)))?;
            util::check_digest(
                &format!("blob {}", layer.digest),
                &layer.digest,
                blob_digest,
            )?;
            if info.diff_id != *diff_id {
                return Err(Error::DiffIdMismatch {
                    layer: layer.digest.to_string(),
                    expected: diff_id.clone(),
                    actual: info.diff_id,
                });
            }
            file.seek(SeekFrom::Start(0))
                .map_err(io_err(&scratch_path))?;
            let mut h = util::header(tar::EntryType::Regular, info.uncompressed_size);
            tar.append_data(&mut h, &path, (&mut file).take(info.uncompressed_size))
                .map_err(out_err)?;
            drop(file);
            std::fs::remove_file(&scratch_path).map_err(io_err(&scratch_path))?;
        }
    }
    tar.into_inner().map_err(out_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names() {
        assert_eq!(familiar_name("docker.io/library/foo:latest"), "foo:latest");
        assert_eq!(familiar_name("docker.io/me/foo:1"), "me/foo:1");
        assert_eq!(familiar_name("foo:latest"), "foo:latest");
        assert_eq!(
            familiar_name("localhost:5000/foo:latest"),
            "localhost:5000/foo:latest"
        );
        assert_eq!(familiar_name("quay.io/a/b:c"), "quay.io/a/b:c");
    }

    #[test]
    fn manifest_item_shape() {
        let item = ManifestItem {
            config: "c.json".into(),
            repo_tags: Some(vec!["a:1".into()]),
            layers: vec!["l.tar".into()],
        };
        assert_eq!(
            serde_json::to_string(&[item]).unwrap(),
            r#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l.tar"]}]"#
        );
        // docker writes "RepoTags": null for untagged images.
        let back: Vec<ManifestItem> =
            serde_json::from_str(r#"[{"Config":"c","RepoTags":null,"Layers":[]}]"#).unwrap();
        assert_eq!(back[0].repo_tags, None);
    }
}
