//! `pybuild inspect NAME...`: a JSON array, one object per image:
//! `{"Name", "Id" (config digest), "Digest" (manifest digest), "Manifest", "Config"}`.
//! An array, like `docker inspect`, so `jq '.[0].Config'` works for one image or
//! many.

use crate::cli::{GlobalArgs, InspectArgs};

/// Print the images' manifests and configs.
pub fn run(args: &InspectArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let mut out = Vec::new();
    for name in &args.names {
        let d = pybuild::store::inspect(&store, name)?;
        out.push(serde_json::json!({
            "Name": d.name,
            "Id": d.id.to_string(),
            "Digest": d.digest.to_string(),
            "Manifest": d.manifest,
            "Config": d.config,
        }));
    }
    let mut text = serde_json::to_string_pretty(&out)?;
    text.push('\n');
    super::write_stdout(&text)
}
