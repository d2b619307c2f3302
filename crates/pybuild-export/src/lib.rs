//! Getting images out of pybuild's store, and archives into it.
//!
//! Exports (each takes the image's manifest or index [`Descriptor`], as
//! [`Store::resolve`](pybuild_store::Store::resolve) returns it):
//!
//! | function                    | output                                  | used by |
//! |-----------------------------|-----------------------------------------|---------|
//! | [`write_oci_layout_dir`]    | OCI image layout directory              | `--output type=oci,dest=DIR,tar=false` |
//! | [`write_oci_archive`]       | the same layout as a tar stream         | `--output type=oci`, `pybuild save --format oci-archive` |
//! | [`write_docker_archive`]    | `docker save`'s format                  | `--output type=docker`, `pybuild save` |
//! | [`export_rootfs_dir`]       | the merged root filesystem, a directory | `--output type=local` |
//! | [`export_rootfs_tar`]       | the merged root filesystem, a tar       | `--output type=tar` |
//!
//! and the import, [`load_archive`], for `pybuild load`: OCI or docker archive,
//! plain or gzipped, every blob verified while it streams into the store, tags set
//! only once every image of the archive is complete.
//!
//! References: OCI image-spec v1.1 `image-layout.md` (layout, `index.json`,
//! `org.opencontainers.image.ref.name`); Docker image spec v1.2 and containers/image
//! `docker/internal/tarfile` for the docker archive (see [`write_docker_archive`]'s
//! module notes in `docker.rs`).
//!
//! Archives are deterministic: fixed entry order, owner 0:0, mtime 0. Streams are
//! written to a caller's `Write`; making the final file appear atomically (temp file
//! next to the destination, fsync, rename) is the caller's business, since only it
//! knows the destination. Files this crate places itself (layout directories) are
//! written atomically.

mod docker;
mod error;
mod load;
mod oci;
mod rootfs;
mod util;

pub use docker::{familiar_name, write_docker_archive, write_docker_archive_multi};
pub use error::Error;
pub use load::{LoadedImage, load_archive, load_archive_file};
pub use oci::{NamedImage, write_oci_archive, write_oci_layout_dir};
pub use rootfs::{export_rootfs_dir, export_rootfs_tar};

// Re-exported so callers name descriptors without depending on pybuild-oci.
pub use pybuild_oci::Descriptor;
