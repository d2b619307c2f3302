//! `pybuild rmi NAME...`: remove tags (`Untagged: NAME` per tag, as docker prints).

use crate::cli::{GlobalArgs, RmiArgs};

/// Remove the names; the data stays until `pybuild prune`.
pub fn run(args: &RmiArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let removed = pybuild::store::rmi(&store, &args.names)?;
    let text: String = removed.iter().map(|n| format!("Untagged: {n}\n")).collect();
    super::write_stdout(&text)
}
