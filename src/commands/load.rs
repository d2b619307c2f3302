//! `pybuild load -i FILE`: prints `Loaded image: NAME` per tag and `Loaded image
//! ID: sha256:...` for images the archive does not name (docker's wording).

use crate::cli::{GlobalArgs, LoadArgs};

/// Load the archive into the store.
pub fn run(args: &LoadArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let loaded = pybuild::store::load(&store, &args.input)?;
    if args.quiet {
        return Ok(());
    }
    let text: String = loaded
        .iter()
        .map(|image| match &image.name {
            Some(name) => format!("Loaded image: {name}\n"),
            None => format!("Loaded image ID: {}\n", image.descriptor.digest),
        })
        .collect();
    super::write_stdout(&text)
}
