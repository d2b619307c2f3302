//! `pybuild tag SOURCE TARGET`.

use crate::cli::{GlobalArgs, TagArgs};

/// Give the image `SOURCE` the name `TARGET` too. Silent on success, as docker.
pub fn run(args: &TagArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    pybuild::store::tag(&store, &args.source, &args.target)?;
    Ok(())
}
