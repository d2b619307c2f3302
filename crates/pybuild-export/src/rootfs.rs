//! Root filesystem exports: every layer of an image applied in order, as a
//! directory (`--output type=local`) or a plain tar (`--output type=tar`).

use std::fs;
use std::io::Write;
use std::path::Path;

use pybuild_layer::{ApplyMode, ApplyOptions, Compression, WriteOptions, apply_layer, write_layer};
use pybuild_oci::Descriptor;
use pybuild_store::Store;

use crate::error::{Error, io_err};
use crate::util::{self, HashReader};

/// Apply every layer of the image `desc` (an index resolves to the host platform)
/// onto `dir`, base layer first, with [`ApplyMode::Merge`]: whiteouts delete, opaque
/// markers clear. `dir` is created if missing; what it already holds is merged
/// into, as BuildKit's local exporter does. Each layer's compressed digest and
/// uncompressed diff ID are checked while it is applied.
///
/// Ownership and device nodes are reproduced only when running as root (an
/// unprivileged process cannot chown or mknod); otherwise files belong to the
/// caller and devices are skipped.
pub fn export_rootfs_dir(store: &Store, desc: &Descriptor, dir: &Path) -> Result<(), Error> {
    let _lease = store.lease()?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
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
    // Owners as root (also of a user namespace), devices only as the host's root.
    let options = ApplyOptions::for_this_process(ApplyMode::Merge);
    for (layer, diff_id) in image.manifest.layers.iter().zip(diff_ids) {
        let blob = store.open_blob(&layer.digest)?;
        let mut hashed = HashReader::new(blob);
        let stats = apply_layer(&mut hashed, dir, &options).map_err(|source| Error::Layer {
            digest: layer.digest.clone(),
            source,
        })?;
        let (digest, _) = hashed
            .drain_and_finish()
            .map_err(io_err(&store.blob_path(&layer.digest)))?;
        util::check_digest(&format!("blob {}", layer.digest), &layer.digest, digest)?;
        if stats.diff_id != *diff_id {
            return Err(Error::DiffIdMismatch {
                layer: layer.digest.to_string(),
                expected: diff_id.clone(),
                actual: stats.diff_id,
            });
        }
    }
    Ok(())
}

/// The image's root filesystem as one plain tar in `out`: the layers are merged
/// into a scratch directory of the store ([`export_rootfs_dir`]), which is then
/// written with the layer engine's deterministic tar writer (sorted entries, no
/// user names, no atime). Returns the writer.
pub fn export_rootfs_tar<W: Write>(store: &Store, desc: &Descriptor, out: W) -> Result<W, Error> {
    let scratch = store.temp_dir()?;
    let tree = scratch.path().join("rootfs");
    export_rootfs_dir(store, desc, &tree)?;
    let options = WriteOptions {
        compression: Compression::None,
        mtime_clamp: None,
    };
    let mut out = out;
    write_layer(&tree, &options, &mut out).map_err(|source| Error::Layer {
        digest: desc.digest.clone(),
        source,
    })?;
    Ok(out)
}
