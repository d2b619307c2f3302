//! Extended attributes, never following symlinks.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::io::Errno;

/// Name/value pairs.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// overlayfs's private xattr namespaces: they describe the upper dir to the kernel,
/// are never part of a layer's content, and must never be taken from one.
pub(crate) fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// The xattrs of `path` (not following a final symlink), sorted by name. A
/// filesystem without xattr support has none.
pub(crate) fn list(path: &Path) -> io::Result<Xattrs> {
    let names = match read_sized(|buf| match buf {
        None => rustix::fs::llistxattr_query(path),
        Some(buf) => rustix::fs::llistxattr(path, buf),
    }) {
        Ok(names) => names,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let os = OsStr::from_bytes(name);
        match read_sized(|buf| match buf {
            None => rustix::fs::lgetxattr_query(path, os),
            Some(buf) => rustix::fs::lgetxattr(path, os, buf),
        }) {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed between list and get: it is not there.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

/// The size-query-then-read dance of the xattr calls, retried when the value grows
/// in between (ERANGE).
fn read_sized(
    mut call: impl FnMut(Option<&mut [u8]>) -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    for _ in 0..8 {
        let size = call(None)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match call(Some(&mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

/// Set an xattr on `path` without following a final symlink.
pub(crate) fn set(path: &Path, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::lsetxattr(
        path,
        OsStr::from_bytes(name),
        value,
        rustix::fs::XattrFlags::empty(),
    )
}
