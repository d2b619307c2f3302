//! The facade's one way of producing a file the user asked for (`--iidfile`,
//! `--metadata-file`, archives from `--output` and `save`, small state files): a temp
//! file in the destination's directory is filled, flushed, fsynced and renamed over
//! the destination, then the directory is fsynced. A failure removes the temp file, so
//! the destination is either its old self or complete, never truncated.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{Error, Result};

/// Create or replace `dest` with what `fill` writes.
pub(crate) fn write_with(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<()> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // NamedTempFile removes itself on drop unless persisted.
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(err(dir))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut out)?;
        out.flush().map_err(err(tmp.path()))?;
    }
    tmp.as_file().sync_all().map_err(err(tmp.path()))?;
    tmp.persist(dest).map_err(|e| err(dest)(e.error))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir))
}

/// Create or replace `dest` with `bytes`.
pub(crate) fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_with(dest, |out| {
        out.write_all(bytes).map_err(|source| Error::Write {
            path: dest.to_path_buf(),
            source,
        })
    })
}
