//! `pybuild store verify`: re-hash every blob, check every image; exit 1 listing
//! the problems when the store is inconsistent.

use crate::cli::GlobalArgs;
use crate::report::CliError;

/// Verify the store.
pub fn run(global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let r = pybuild::store::verify(&store)?;
    let summary = format!(
        "checked {} blobs, {} images, {} snapshots, {} cache records",
        r.blobs_checked, r.tags_checked, r.snapshots_checked, r.cache_records_checked
    );
    if r.is_ok() {
        return super::write_stdout(&format!("store OK: {summary}\n"));
    }
    let mut message = format!(
        "the store at {} has {} problem(s) ({summary}):",
        store.root().display(),
        r.problems.len()
    );
    for problem in &r.problems {
        message.push_str(&format!("\n  - {problem}"));
    }
    Err(CliError::new(message)
        .hint("`pybuild prune` removes unreferenced damage; re-create or re-load damaged images")
        .into())
}
