//! Writing a built image to the `--output` destinations other than the store.
//!
//! Archives are written to a temp file beside the destination and renamed into place
//! only when complete, so a failed or interrupted export never leaves a truncated
//! archive under the requested name.

use pybuild_oci::Descriptor;
use pybuild_store::Store;

use crate::Result;
use crate::build::Output;

/// Write `image` (tagged `tags` in the store, for the names archives carry) to `output`.
pub(crate) fn write_output(
    store: &Store,
    image: &Descriptor,
    tags: &[String],
    output: &Output,
) -> Result<()> {
    let named = [(image.clone(), tags.to_vec())];
    match output {
        Output::Store { .. } | Output::Push { .. } => Ok(()),
        Output::OciDir(dir) => Ok(pybuild_export::write_oci_layout_dir(store, &named, dir)?),
        Output::OciArchive(path) => crate::atomic::write_with(path, |out| {
            Ok(pybuild_export::write_oci_archive(store, &named, out).map(drop)?)
        }),
        Output::DockerArchive(path) => crate::atomic::write_with(path, |out| {
            Ok(pybuild_export::write_docker_archive(store, image, tags, out).map(drop)?)
        }),
        Output::LocalDir(dir) => Ok(pybuild_export::export_rootfs_dir(store, image, dir)?),
        Output::RootfsTar(path) => crate::atomic::write_with(path, |out| {
            Ok(pybuild_export::export_rootfs_tar(store, image, out).map(drop)?)
        }),
    }
}
