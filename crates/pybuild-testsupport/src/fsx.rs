//! Small file-system readers that fail the test with the path on error, and the
//! sha256 of some bytes computed by an independent implementation.
//!
//! Metadata is read without following symlinks: tests look at what an image holds,
//! where a link is an entry of its own.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::cmd::{text, tool};

/// The contents of the file at `path`, as UTF-8 text.
#[track_caller]
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metadata of `path` itself (a symlink is not followed).
#[track_caller]
pub fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The permission bits of `path` (with setuid, setgid and sticky: `& 0o7777`).
#[track_caller]
pub fn mode(path: &Path) -> u32 {
    meta(path).mode() & 0o7777
}

/// The `(uid, gid)` owning `path`.
#[track_caller]
pub fn owner(path: &Path) -> (u32, u32) {
    let m = meta(path);
    (m.uid(), m.gid())
}

/// The target of the symlink at `path`.
#[track_caller]
pub fn link(path: &Path) -> PathBuf {
    fs::read_link(path).unwrap_or_else(|e| panic!("{} is not a symlink: {e}", path.display()))
}

/// The names in directory `dir`, sorted.
#[track_caller]
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The sha256 of `bytes`, lowercase hex, computed by `sha256sum` so that a digest
/// pybuild wrote is checked against another implementation than its own.
#[track_caller]
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = tool("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("wait for sha256sum");
    assert!(out.status.success(), "sha256sum failed: {}", out.status);
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn readers_see_the_entry_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o4750)).unwrap();
        symlink("f", dir.path().join("l")).unwrap();
        assert_eq!(read(&file), "x");
        assert_eq!(mode(&file), 0o4750);
        assert_eq!(link(&dir.path().join("l")), Path::new("f"));
        assert!(meta(&dir.path().join("l")).file_type().is_symlink());
        assert_eq!(names(dir.path()), ["f", "l"]);
        let m = fs::metadata(&file).unwrap();
        assert_eq!(owner(&file), (m.uid(), m.gid()));
    }

    #[test]
    fn sha256_of_known_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
