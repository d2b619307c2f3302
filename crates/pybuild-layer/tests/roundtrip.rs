//! Diff dir → layer → snapshot: everything survives, and the tar itself has the
//! documented shape.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::*;
use pybuild_layer::{ApplyMode, ApplyOptions, Compression, WriteOptions, apply_layer, write_layer};

fn snapshot_options() -> ApplyOptions {
    ApplyOptions {
        mode: ApplyMode::Snapshot,
        same_owner: true,
        allow_devices: true,
    }
}

#[test]
fn round_trip_through_a_snapshot_preserves_everything() {
    let src = tempfile::tempdir().expect("tempdir");
    build_fixture(src.path(), false, 1000);
    let mut blob = Vec::new();
    let info = write_layer(src.path(), &WriteOptions::default(), &mut blob).expect("write");
    assert_eq!(info.size, blob.len() as u64);

    let dst = tempfile::tempdir().expect("tempdir");
    let stats = apply_layer(&blob[..], dst.path(), &snapshot_options()).expect("apply");
    assert_eq!(stats.diff_id, info.diff_id, "apply hashes the same tar");
    assert_eq!(stats.entries, info.entries);
    assert_eq!(stats.skipped_devices, 0);
    assert!(
        stats.bytes >= 3 << 20,
        "the big file was written: {}",
        stats.bytes
    );

    if is_root() {
        assert_same_tree(src.path(), dst.path());
        // The specific things the tree comparison covers, spelled out.
        let gone = fs::symlink_metadata(dst.path().join("deleted")).expect("whiteout");
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        assert_eq!(
            xattrs(&dst.path().join("opq")),
            [(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())]
        );
        let owned = fs::metadata(dst.path().join("owned.txt")).expect("stat");
        assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    } else {
        // Unprivileged: the fixture has no devices, whiteouts or foreign owners.
        assert_same_tree(src.path(), dst.path());
    }
    let su = fs::metadata(dst.path().join("bin/su")).expect("stat");
    assert_eq!(
        su.mode() & 0o7777,
        0o4755,
        "setuid survives (chmod after chown)"
    );
    let tmp = fs::metadata(dst.path().join("tmp")).expect("stat");
    assert_eq!(tmp.mode() & 0o7777, 0o1777, "sticky dir");
    let (a, b) = (
        fs::metadata(dst.path().join("hl/a")).expect("stat"),
        fs::metadata(dst.path().join("hl/b")).expect("stat"),
    );
    assert_eq!(a.ino(), b.ino(), "hard link pair is one inode");
    assert_eq!(
        fs::read(dst.path().join("big.bin")).expect("read"),
        pseudo_random(3 << 20, 42)
    );
    assert_eq!(
        fs::read_link(dst.path().join("longlink")).expect("readlink"),
        std::path::PathBuf::from(long_target())
    );
    assert_eq!(
        xattrs(&dst.path().join("attrs.txt")),
        [(b"user.test".to_vec(), b"1".to_vec())]
    );
    assert!(
        fs::symlink_metadata(dst.path().join("fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );

    // Writing the snapshot back gives the very same layer.
    let mut again = Vec::new();
    let info2 = write_layer(dst.path(), &WriteOptions::default(), &mut again).expect("rewrite");
    assert_eq!(info2.diff_id, info.diff_id);
    assert_eq!(info2.digest, info.digest);
    assert_eq!(again, blob);
}

/// Entry names in stream order, decoded by the `tar` crate (an independent reader).
fn decode(blob: &[u8]) -> Vec<(Vec<u8>, tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        out.push((
            entry.path_bytes().into_owned(),
            entry.header().entry_type(),
            link,
        ));
        let mut sink = Vec::new();
        entry.read_to_end(&mut sink).expect("data");
    }
    out
}

/// The key the writer orders by: path components, with `.wh.x` in `x`'s place and
/// the opaque marker first among its siblings.
fn order_key(path: &[u8]) -> Vec<Vec<u8>> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    trimmed
        .split(|b| *b == b'/')
        .map(|c| {
            if c == b".wh..wh..opq" {
                Vec::new()
            } else {
                c.strip_prefix(b".wh.").unwrap_or(c).to_vec()
            }
        })
        .collect()
}

#[test]
fn tar_has_the_documented_order_and_shape() {
    let src = tempfile::tempdir().expect("tempdir");
    build_fixture(src.path(), false, 1000);
    let mut blob = Vec::new();
    let info = write_layer(src.path(), &WriteOptions::default(), &mut blob).expect("write");
    let entries = decode(&blob);
    assert_eq!(entries.len() as u64, info.entries);
    let names: Vec<String> = entries
        .iter()
        .map(|(p, _, _)| String::from_utf8(p.clone()).expect("utf-8 names"))
        .collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} missing from {names:#?}"))
    };

    // Sorted by components (not by raw bytes: "a-b" < "a/" bytewise).
    for pair in names.windows(2) {
        assert!(
            order_key(pair[0].as_bytes()) < order_key(pair[1].as_bytes()),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
    assert!(pos("a/") < pos("a/b.txt") && pos("a/b.txt") < pos("a-b"));
    assert!(pos("a-b") < pos("a.txt") && pos("a.txt") < pos("a0"));
    // No "./", no leading slash; directories end in '/', parents come first.
    for (i, n) in names.iter().enumerate() {
        assert!(!n.starts_with("./") && !n.starts_with('/'), "{n}");
        let mut parent = n.trim_end_matches('/');
        while let Some(cut) = parent.rfind('/') {
            parent = &parent[..cut];
            assert!(pos(&format!("{parent}/")) < i, "{parent}/ after {n}");
        }
    }
    for (name, kind, _) in &entries {
        if name.ends_with(b"/") {
            assert_eq!(*kind, tar::EntryType::Directory);
        }
    }
    assert_eq!(entries[pos("hl/b")].1, tar::EntryType::Link);
    assert_eq!(entries[pos("hl/b")].2, b"hl/a");
    assert_eq!(entries[pos("hl/a")].1, tar::EntryType::Regular);
    assert_eq!(entries[pos("longlink")].2, long_target().as_bytes());
    pos(&format!("long/{}", long_name()));
    pos(&format!("{}/leaf.txt", deep_dir()));
    pos("ünïcødé-文件.txt");
    assert_eq!(entries[pos("fifo")].1, tar::EntryType::Fifo);

    if is_root() {
        assert!(!names.iter().any(|n| n == "deleted"));
        assert_eq!(entries[pos(".wh.deleted")].1, tar::EntryType::Regular);
        pos("dir/.wh.gone");
        let opq = pos("opq/");
        assert_eq!(
            names[opq + 1],
            "opq/.wh..wh..opq",
            "marker first among children"
        );
        assert_eq!(names[opq + 2], "opq/inner.txt");
        assert_eq!(entries[pos("dev/null1")].1, tar::EntryType::Char);
        assert_eq!(entries[pos("dev/blk")].1, tar::EntryType::Block);
    }

    // Header details: no user/group names, xattrs as PAX SCHILY records, overlay's
    // own xattrs never, and no atime/ctime records.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let mut saw_xattr = false;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path_bytes().into_owned();
        let h = entry.header().clone();
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        if path.starts_with(b".wh.") || path.ends_with(b"/.wh.gone") {
            assert_eq!(h.mode().expect("mode"), 0);
            assert_eq!((h.uid().expect("uid"), h.gid().expect("gid")), (0, 0));
            assert_eq!(h.size().expect("size"), 0);
        }
        if let Some(pax) = entry.pax_extensions().expect("pax") {
            for rec in pax {
                let rec = rec.expect("record");
                let key = rec.key().expect("key");
                assert!(!key.contains("overlay"), "{key} leaked");
                assert!(key != "atime" && key != "ctime", "{key}");
                if key == "SCHILY.xattr.user.test" {
                    assert_eq!(path, b"attrs.txt");
                    assert_eq!(rec.value_bytes(), b"1");
                    saw_xattr = true;
                }
            }
        }
    }
    assert!(saw_xattr, "user.test xattr not in the tar");
}

#[test]
fn devices_are_skipped_and_counted_without_allow_devices() {
    if !is_root() {
        return; // the fixture has no devices without root
    }
    let src = tempfile::tempdir().expect("tempdir");
    build_fixture(src.path(), false, 1000);
    let mut blob = Vec::new();
    write_layer(
        src.path(),
        &WriteOptions {
            compression: Compression::Zstd { level: 3 },
            mtime_clamp: None,
        },
        &mut blob,
    )
    .expect("write");
    let dst = tempfile::tempdir().expect("tempdir");
    let stats = apply_layer(
        &blob[..],
        dst.path(),
        &ApplyOptions {
            mode: ApplyMode::Snapshot,
            same_owner: false,
            allow_devices: false,
        },
    )
    .expect("apply");
    assert_eq!(stats.skipped_devices, 2, "dev/null1 and dev/blk");
    assert!(!dst.path().join("dev/null1").exists());
    assert!(
        fs::symlink_metadata(dst.path().join("fifo"))
            .expect("fifo made anyway")
            .file_type()
            .is_fifo()
    );
}
