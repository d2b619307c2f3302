//! `pybuild save NAME... -o FILE [--format docker-archive|oci-archive]`.

use crate::cli::{ArchiveFormat, GlobalArgs, SaveArgs};

/// Write the images to the archive, atomically. Silent on success, as docker.
pub fn run(args: &SaveArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let format = match args.format {
        ArchiveFormat::DockerArchive => pybuild::store::SaveFormat::DockerArchive,
        ArchiveFormat::OciArchive => pybuild::store::SaveFormat::OciArchive,
    };
    pybuild::store::save(&store, &args.names, format, &args.output)?;
    Ok(())
}
