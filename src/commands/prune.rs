//! `pybuild prune [--all]`: remove unreferenced data and say what was freed.

use crate::cli::{GlobalArgs, PruneArgs};

/// Prune the store.
pub fn run(args: &PruneArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let r = pybuild::store::prune(&store, args.all)?;
    let size = super::human_size;
    let text = format!(
        "Deleted {} blobs ({}), {} snapshots ({}), {} cache records ({}), {} cache mounts ({}), \
         {} temporary entries ({})\n\
         Total reclaimed space: {}\n",
        r.blobs_removed,
        size(r.blob_bytes),
        r.snapshots_removed,
        size(r.snapshot_bytes),
        r.cache_records_removed,
        size(r.cache_bytes),
        r.cache_mounts_removed,
        size(r.cache_mount_bytes),
        r.temp_entries_removed,
        size(r.temp_bytes),
        size(r.bytes_freed()),
    );
    super::write_stdout(&text)
}
