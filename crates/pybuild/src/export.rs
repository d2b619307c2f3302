//! Writing a built image to the `--output` destinations other than the store.
//!
//! Archives are written to a temp file beside the destination and renamed into place
//! only when complete, so a failed or interrupted export never leaves a truncated
//! archive under the requested name.

use std::io::{BufWriter, Write};
use std::path::Path;

use pybuild_oci::Descriptor;
use pybuild_store::Store;

use crate::build::Output;
use crate::{Error, Result};

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
        Output::OciArchive(path) => write_archive(path, |out| {
            pybuild_export::write_oci_archive(store, &named, out).map(drop)
        }),
        Output::DockerArchive(path) => write_archive(path, |out| {
            pybuild_export::write_docker_archive(store, image, tags, out).map(drop)
        }),
        Output::LocalDir(dir) => Ok(pybuild_export::export_rootfs_dir(store, image, dir)?),
        Output::RootfsTar(path) => write_archive(path, |out| {
            pybuild_export::export_rootfs_tar(store, image, out).map(drop)
        }),
    }
}

/// Stream an archive into a temp file next to `path`, fsync, rename.
fn write_archive(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&std::fs::File>) -> std::result::Result<(), pybuild_export::Error>,
) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        write(&mut out)?;
        out.flush().map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
