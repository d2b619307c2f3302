//! Crash leftovers in ROOT/tmp are cleaned on open, but never another user's live
//! temp entries.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::{build_image, names};
use pybuild_oci::Digest;
use pybuild_store::Store;

#[test]
fn reopen_cleans_half_written_leftovers_and_keeps_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let img = {
        let store = Store::open(&root).expect("open");
        let img = build_image(&store, "survivor", 2);
        store
            .set_tag("survivor:latest", &img.manifest)
            .expect("tag");
        img
    };
    // What a process killed mid-write leaves: a half blob, a half index.json, a
    // half-filled snapshot dir with a read-only subdirectory.
    let tmp = root.join("tmp");
    fs::write(tmp.join("blob-4242-0-abc"), b"half a la").expect("w");
    fs::write(tmp.join("file-4242-1-abc"), br#"{"schemaVersion":2,"manif"#).expect("w");
    let snap = tmp.join("snap-4242-2-abc");
    fs::create_dir_all(snap.join("usr/lib")).expect("mkdir");
    fs::write(snap.join("usr/lib/libx.so"), b"\x7fELF").expect("w");
    fs::set_permissions(snap.join("usr"), fs::Permissions::from_mode(0o555)).expect("chmod");
    assert_eq!(names(&tmp).len(), 3);

    let store = Store::open(&root).expect("reopen");
    assert!(names(&tmp).is_empty(), "stale temp entries removed");
    let desc = store
        .resolve("survivor:latest")
        .expect("resolve")
        .expect("tag");
    assert_eq!(desc.digest, img.manifest.digest);
    store.image(&desc, None).expect("image intact");
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn open_never_removes_live_temp_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("open");
    let mut writer = store.blob_writer().expect("writer");
    writer.write_all(b"in progress").expect("write");
    let scratch = store.temp_dir().expect("temp dir");
    fs::write(scratch.path().join("work"), b"x").expect("w");

    // Another user of the store opens it meanwhile (a second process would be the
    // same: the locks are per open file).
    let other = Store::open(&root).expect("second open");
    assert_eq!(names(&root.join("tmp")).len(), 2, "live entries kept");
    assert!(scratch.path().join("work").exists());

    let (d, _) = writer.commit(None).expect("commit still works");
    assert_eq!(other.read_blob(&d).expect("read"), b"in progress");
    drop(scratch);
    assert!(
        names(&root.join("tmp")).is_empty(),
        "scratch removed on drop"
    );
}

#[test]
fn kept_temp_dirs_survive_drop_until_the_store_is_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("open");
    let kept = store.temp_dir().expect("temp dir").keep();
    assert!(kept.is_dir());
    assert!(kept.starts_with(root.join("tmp")));
    let lease = store.lease().expect("lease");
    Store::open(&root).expect("open while leased");
    assert!(kept.is_dir(), "not cleaned while the store is in use");
    drop(lease);
    Store::open(&root).expect("open when idle");
    assert!(!kept.exists(), "cleaned once idle");
}

#[test]
fn a_crash_before_oci_layout_was_written_is_recoverable() {
    // The first open died after creating some directories.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    fs::create_dir_all(root.join("blobs/sha256")).expect("mkdir");
    fs::create_dir_all(root.join("tmp")).expect("mkdir");
    fs::write(root.join("tmp/file-1-0-0"), b"{").expect("w");
    let store = Store::open(&root).expect("open completes the layout");
    assert!(root.join("oci-layout").is_file());
    assert!(names(&root.join("tmp")).is_empty());
    let (d, _) = store.put_blob(b"ok").expect("usable");
    assert_eq!(d, Digest::of(b"ok"));
}
