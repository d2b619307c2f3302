//! Merge mode: a layer applied over a lower tree.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use pybuild_layer::{ApplyMode, ApplyOptions, WriteOptions, apply_layer, write_layer};
use rustix::fs::FileType;

fn merge() -> ApplyOptions {
    ApplyOptions {
        mode: ApplyMode::Merge,
        same_owner: is_root(),
        allow_devices: is_root(),
    }
}

fn lower(root: &Path) {
    for (rel, data) in [
        ("keep.txt", "lower keep\n"),
        ("gone.txt", "lower gone\n"),
        ("gonedir/x", "x\n"),
        ("gonedir/y/z", "z\n"),
        ("opq/lowerfile", "lower\n"),
        ("opq/sub/lowerfile2", "lower2\n"),
        ("opq/replaced.txt", "lower version\n"),
        ("plain/lowerfile", "stays\n"),
    ] {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, data).expect("write");
    }
}

fn names(dir: &Path) -> Vec<String> {
    list_tree(dir)
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn whiteouts_and_opaque_dirs_apply_over_a_lower_tree() {
    if !is_root() {
        return; // the diff dir needs 0/0 devices and trusted.overlay.opaque
    }
    // The upper layer as overlayfs would leave it.
    let diff = tempfile::tempdir().expect("tempdir");
    let d = diff.path();
    mknod(&d.join("gone.txt"), FileType::CharacterDevice, 0, 0);
    mknod(&d.join("gonedir"), FileType::CharacterDevice, 0, 0);
    fs::create_dir_all(d.join("opq/sub")).expect("mkdir");
    set_xattr(&d.join("opq"), "trusted.overlay.opaque", b"y");
    fs::write(d.join("opq/new.txt"), b"new\n").expect("write");
    fs::write(d.join("opq/replaced.txt"), b"upper version\n").expect("write");
    fs::write(d.join("opq/sub/newfile"), b"newfile\n").expect("write");
    fs::create_dir(d.join("plain")).expect("mkdir");
    fs::write(d.join("plain/added"), b"added\n").expect("write");
    fs::write(d.join("keep.txt"), b"upper keep\n").expect("write");
    fs::set_permissions(d.join("keep.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut blob = Vec::new();
    let info = write_layer(d, &WriteOptions::default(), &mut blob).expect("write");

    let root = tempfile::tempdir().expect("tempdir");
    lower(root.path());
    let stats = apply_layer(&blob[..], root.path(), &merge()).expect("apply");
    assert_eq!(stats.diff_id, info.diff_id);
    assert_eq!(
        names(root.path()),
        [
            "keep.txt",
            "opq",
            "opq/new.txt",
            "opq/replaced.txt",
            "opq/sub",
            "opq/sub/newfile",
            "plain",
            "plain/added",
            "plain/lowerfile",
        ]
    );
    let r = root.path();
    assert_eq!(fs::read(r.join("keep.txt")).expect("read"), b"upper keep\n");
    assert_eq!(
        fs::metadata(r.join("keep.txt"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        fs::read(r.join("opq/replaced.txt")).expect("read"),
        b"upper version\n"
    );
    // Merge mode never leaves overlay markers behind.
    assert!(xattrs(&r.join("opq")).is_empty());
}

#[test]
fn opaque_marker_after_the_layers_own_children_keeps_them() {
    // Order independence: some writers put `.wh..wh..opq` after the directory's new
    // entries. Only what lower layers had may go.
    let root = tempfile::tempdir().expect("tempdir");
    lower(root.path());
    let tar = RawTar::new()
        .entry(b"opq/", b'5', b"", b"", 0o755)
        .entry(b"opq/sub/", b'5', b"", b"", 0o755)
        .entry(b"opq/sub/mine", b'0', b"", b"mine\n", 0o644)
        .entry(b"opq/new.txt", b'0', b"", b"new\n", 0o644)
        .entry(b"opq/.wh..wh..opq", b'0', b"", b"", 0)
        .entry(b"opq/.wh.new.txt", b'0', b"", b"", 0)
        .finish();
    apply_layer(&tar[..], root.path(), &merge()).expect("apply");
    let all = names(root.path());
    let opq: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("opq"))
        .collect();
    // `.wh.new.txt` names this layer's own file: whiteouts apply to lower layers only.
    assert_eq!(opq, ["opq", "opq/new.txt", "opq/sub", "opq/sub/mine"]);
    assert!(all.contains(&"gone.txt".to_string()), "untouched elsewhere");
}

#[test]
fn whiteout_of_a_missing_path_is_harmless_and_a_file_replaces_a_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    lower(root.path());
    let tar = RawTar::new()
        .entry(b"nothing/here/.wh.nope", b'0', b"", b"", 0)
        .entry(b".wh.never", b'0', b"", b"", 0)
        .entry(b"gonedir", b'0', b"", b"now a file\n", 0o644)
        .entry(b"gone.txt/", b'5', b"", b"", 0o711)
        .finish();
    apply_layer(&tar[..], root.path(), &merge()).expect("apply");
    let r = root.path();
    assert!(
        !r.join("nothing").exists(),
        "a whiteout creates no parents in merge mode"
    );
    assert_eq!(fs::read(r.join("gonedir")).expect("file"), b"now a file\n");
    let m = fs::symlink_metadata(r.join("gone.txt")).expect("dir");
    assert!(m.is_dir());
    assert_eq!(m.permissions().mode() & 0o777, 0o711);
}

#[test]
fn opaque_root_clears_everything_lower() {
    let root = tempfile::tempdir().expect("tempdir");
    lower(root.path());
    let tar = RawTar::new()
        .entry(b".wh..wh..opq", b'0', b"", b"", 0)
        .entry(b"only.txt", b'0', b"", b"only\n", 0o644)
        .finish();
    apply_layer(&tar[..], root.path(), &merge()).expect("apply");
    assert_eq!(names(root.path()), ["only.txt"]);
}

#[test]
fn directory_mtimes_are_set_after_their_children() {
    let root = tempfile::tempdir().expect("tempdir");
    let tar = RawTar::new()
        .entry(b"d/", b'5', b"", b"", 0o555)
        .entry(b"d/e/", b'5', b"", b"", 0o755)
        .entry(b"d/e/f", b'0', b"", b"f\n", 0o644)
        .entry(b"d/g", b'0', b"", b"g\n", 0o644)
        .finish();
    apply_layer(&tar[..], root.path(), &merge()).expect("apply");
    use std::os::unix::fs::MetadataExt;
    for rel in ["d", "d/e", "d/e/f", "d/g"] {
        let m = fs::symlink_metadata(root.path().join(rel)).expect("stat");
        assert_eq!(m.mtime(), 1_600_000_000, "{rel}");
    }
    let m = fs::metadata(root.path().join("d")).expect("stat");
    assert_eq!(
        m.permissions().mode() & 0o777,
        0o555,
        "read-only dir, set last"
    );
}
