//! Hostile layers: every escape is refused and nothing outside the target changes.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use pybuild_layer::{ApplyMode, ApplyOptions, ApplyStats, Error, apply_layer};

fn options(mode: ApplyMode) -> ApplyOptions {
    ApplyOptions {
        mode,
        same_owner: is_root(),
        allow_devices: is_root(),
    }
}

fn apply(scratch: &Scratch, tar: &[u8], mode: ApplyMode) -> Result<ApplyStats, Error> {
    apply_layer(tar, &scratch.target(), &options(mode))
}

/// Apply in both modes (each into a fresh scratch) and expect an unsafe-entry error
/// naming `entry`, with nothing outside the target touched.
fn assert_refused(tar: &[u8], entry: &str) {
    for mode in [ApplyMode::Snapshot, ApplyMode::Merge] {
        let scratch = Scratch::new();
        let err = apply(&scratch, tar, mode).expect_err("must be refused");
        match &err {
            Error::UnsafeEntry { entry: e, .. } => assert_eq!(e, entry, "{err}"),
            other => panic!("{mode:?}: expected UnsafeEntry for {entry}, got {other}"),
        }
        assert!(err.to_string().contains(&format!("{entry:?}")), "{err}");
        scratch.assert_untouched();
    }
}

#[test]
fn dot_dot_is_refused() {
    let tar = RawTar::new()
        .entry(b"../evil", b'0', b"", b"pwned\n", 0o644)
        .finish();
    assert_refused(&tar, "../evil");
    let tar = RawTar::new()
        .entry(b"ok/", b'5', b"", b"", 0o755)
        .entry(b"ok/../../outside.txt", b'0', b"", b"pwned\n", 0o644)
        .finish();
    assert_refused(&tar, "ok/../../outside.txt");
}

#[test]
fn absolute_path_with_dot_dot_is_refused() {
    let tar = RawTar::new()
        .entry(b"/abs/../../x", b'0', b"", b"pwned\n", 0o644)
        .finish();
    assert_refused(&tar, "/abs/../../x");
}

#[test]
fn absolute_and_dot_slash_names_land_inside_the_target() {
    let scratch = Scratch::new();
    let tar = RawTar::new()
        .entry(b"./", b'5', b"", b"", 0o755)
        .entry(b"/etc/", b'5', b"", b"", 0o755)
        .entry(b"/etc/hostname", b'0', b"", b"inside\n", 0o644)
        .entry(b"./etc//./motd", b'0', b"", b"motd\n", 0o644)
        .finish();
    let stats = apply(&scratch, &tar, ApplyMode::Snapshot).expect("apply");
    assert_eq!(stats.entries, 4);
    let target = scratch.target();
    assert_eq!(
        fs::read(target.join("etc/hostname")).expect("read"),
        b"inside\n"
    );
    assert_eq!(fs::read(target.join("etc/motd")).expect("read"), b"motd\n");
    scratch.assert_untouched();
}

#[test]
fn writing_through_a_symlink_from_an_earlier_entry_is_refused() {
    let scratch = Scratch::new();
    let outside = scratch.outside();
    let tar = RawTar::new()
        .entry(
            b"a",
            b'2',
            outside.as_os_str().as_encoded_bytes(),
            b"",
            0o777,
        )
        .entry(b"a/pwned", b'0', b"", b"pwned\n", 0o644)
        .finish();
    assert_refused(&tar, "a/pwned");
    // Relative escapes through a symlink, and a directory entry through one.
    let tar = RawTar::new()
        .entry(b"up", b'2', b"../..", b"", 0o777)
        .entry(b"up/x/", b'5', b"", b"", 0o755)
        .finish();
    assert_refused(&tar, "up/x/");
}

#[test]
fn symlink_from_a_lower_layer_is_not_followed_in_merge_mode() {
    let scratch = Scratch::new();
    std::os::unix::fs::symlink(scratch.outside(), scratch.target().join("lib")).expect("symlink");
    let tar = RawTar::new()
        .entry(b"lib/libc.so", b'0', b"", b"evil\n", 0o755)
        .finish();
    let err = apply(&scratch, &tar, ApplyMode::Merge).expect_err("refused");
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    scratch.assert_untouched();
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let scratch = Scratch::new();
    let outside_file = scratch.parent().join("outside.txt");
    let tar = RawTar::new()
        .entry(
            b"link",
            b'2',
            outside_file.as_os_str().as_encoded_bytes(),
            b"",
            0o777,
        )
        .entry(b"link", b'0', b"", b"replaced\n", 0o600)
        .finish();
    apply(&scratch, &tar, ApplyMode::Snapshot).expect("apply");
    let m = fs::symlink_metadata(scratch.target().join("link")).expect("lstat");
    assert!(m.file_type().is_file());
    assert_eq!(
        fs::read(scratch.target().join("link")).expect("read"),
        b"replaced\n"
    );
    scratch.assert_untouched();

    // Same in merge mode with the symlink coming from the lower tree.
    let scratch = Scratch::new();
    std::os::unix::fs::symlink(&outside_file, scratch.target().join("link")).expect("symlink");
    let tar = RawTar::new()
        .entry(b"link", b'0', b"", b"replaced\n", 0o4755)
        .finish();
    apply(&scratch, &tar, ApplyMode::Merge).expect("apply");
    assert!(
        fs::symlink_metadata(scratch.target().join("link"))
            .expect("lstat")
            .is_file()
    );
    scratch.assert_untouched();
}

#[test]
fn hard_link_outside_is_refused() {
    let tar = RawTar::new()
        .entry(b"h", b'1', b"../../etc/passwd", b"", 0o644)
        .finish();
    assert_refused(&tar, "h");
    // To a target that does not exist, or through a symlinked directory.
    let tar = RawTar::new()
        .entry(b"h", b'1', b"etc/passwd", b"", 0o644)
        .finish();
    assert_refused(&tar, "h");
    let scratch_outside = Scratch::new();
    let escape = scratch_outside.parent().to_path_buf();
    let tar = RawTar::new()
        .entry(
            b"d",
            b'2',
            escape.as_os_str().as_encoded_bytes(),
            b"",
            0o777,
        )
        .entry(b"h", b'1', b"d/outside.txt", b"", 0o644)
        .finish();
    assert_refused(&tar, "h");
    scratch_outside.assert_untouched();
}

#[test]
fn hard_link_to_an_escaping_symlink_links_the_symlink_itself() {
    let scratch = Scratch::new();
    let outside_file = scratch.parent().join("outside.txt");
    let tar = RawTar::new()
        .entry(
            b"s",
            b'2',
            outside_file.as_os_str().as_encoded_bytes(),
            b"",
            0o777,
        )
        .entry(b"h", b'1', b"s", b"", 0o644)
        .finish();
    apply(&scratch, &tar, ApplyMode::Snapshot).expect("apply");
    let h = fs::symlink_metadata(scratch.target().join("h")).expect("lstat");
    assert!(
        h.file_type().is_symlink(),
        "h is the symlink, not /outside.txt"
    );
    assert_eq!(h.nlink(), 2);
    scratch.assert_untouched();
}

#[test]
fn whiteouts_of_dot_and_dot_dot_are_refused() {
    let tar = RawTar::new().entry(b".wh...", b'0', b"", b"", 0).finish();
    assert_refused(&tar, ".wh...");
    let tar = RawTar::new()
        .entry(b"d/", b'5', b"", b"", 0o755)
        .entry(b"d/.wh..", b'0', b"", b"", 0)
        .finish();
    assert_refused(&tar, "d/.wh..");
    let tar = RawTar::new().entry(b".wh.", b'0', b"", b"", 0).finish();
    assert_refused(&tar, ".wh.");
}

#[test]
fn whiteout_behind_a_symlink_is_refused() {
    let scratch = Scratch::new();
    fs::write(scratch.outside().join("victim"), b"keep").expect("write");
    std::os::unix::fs::symlink(scratch.outside(), scratch.target().join("l")).expect("symlink");
    let tar = RawTar::new()
        .entry(b"l/.wh.victim", b'0', b"", b"", 0)
        .finish();
    let err = apply(&scratch, &tar, ApplyMode::Merge).expect_err("refused");
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(
        scratch.outside().join("victim").exists(),
        "deleted through a symlink"
    );
    let tar = RawTar::new()
        .entry(b"l/.wh..wh..opq", b'0', b"", b"", 0)
        .finish();
    let err = apply(&scratch, &tar, ApplyMode::Merge).expect_err("refused");
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(
        scratch.outside().join("victim").exists(),
        "cleared through a symlink"
    );
}

#[test]
fn deferred_directory_metadata_never_lands_outside() {
    // `d/sub/` is recorded for a final chmod; then `d` becomes a symlink to a
    // directory outside that has a `sub`. The final pass must not chmod outside/sub.
    let scratch = Scratch::new();
    let outside = scratch.outside();
    let tar = RawTar::new()
        .entry(b"d/", b'5', b"", b"", 0o755)
        .entry(b"d/sub/", b'5', b"", b"", 0o700)
        .entry(
            b"d",
            b'2',
            outside.as_os_str().as_encoded_bytes(),
            b"",
            0o777,
        )
        .finish();
    fs::create_dir(outside.join("sub")).expect("mkdir");
    fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o755)).expect("chmod");
    apply(&scratch, &tar, ApplyMode::Snapshot).expect("apply");
    let m = fs::metadata(outside.join("sub")).expect("stat");
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o755,
        "outside/sub was chmodded"
    );
    assert!(
        fs::symlink_metadata(scratch.target().join("d"))
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
}

#[test]
fn nul_in_a_pax_path_is_refused() {
    let tar = RawTar::new()
        .pax(&[("path", b"a\0/../../x")])
        .entry(b"placeholder", b'0', b"", b"x", 0o644)
        .finish();
    assert_refused(&tar, "a\0/../../x");
}

#[test]
fn pax_path_with_dot_dot_is_refused() {
    let tar = RawTar::new()
        .pax(&[("path", b"fine/../../../outside.txt")])
        .entry(b"fine", b'0', b"", b"pwned\n", 0o644)
        .finish();
    assert_refused(&tar, "fine/../../../outside.txt");
}

#[test]
fn overlay_xattrs_from_a_layer_are_dropped() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new();
    let tar = RawTar::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"1"),
        ])
        .entry(b"d/", b'5', b"", b"", 0o755)
        .finish();
    apply(&scratch, &tar, ApplyMode::Snapshot).expect("apply");
    assert_eq!(
        xattrs(&scratch.target().join("d")),
        [(b"user.kept".to_vec(), b"1".to_vec())]
    );
}
