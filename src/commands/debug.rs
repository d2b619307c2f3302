//! `pybuild debug dump FILE`: the parse tree in BuildKit's dump format.

use crate::cli::DebugDumpArgs;

/// Print `pybuild::dump` of the Dockerfile, exactly.
pub fn run_dump(args: &DebugDumpArgs) -> anyhow::Result<()> {
    let source = super::read_dockerfile(
        &args.file,
        "name an existing Dockerfile, or - for standard input",
    )?;
    super::write_stdout(&pybuild::dump(&source)?)
}
