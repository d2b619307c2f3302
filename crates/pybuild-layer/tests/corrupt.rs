//! Broken streams are errors, never panics or silent partial success.

mod common;

use std::fs;

use common::*;
use pybuild_layer::{
    ApplyMode, ApplyOptions, Compression, Error, WriteOptions, apply_layer, compress_tar,
    write_layer,
};

fn options() -> ApplyOptions {
    ApplyOptions {
        mode: ApplyMode::Merge,
        same_owner: false,
        allow_devices: false,
    }
}

fn small_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("etc")).expect("mkdir");
    fs::write(dir.path().join("etc/a"), pseudo_random(200_000, 7)).expect("write");
    fs::write(dir.path().join("etc/b"), b"hello\n").expect("write");
    dir
}

fn layer(compression: Compression) -> Vec<u8> {
    let tree = small_tree();
    let mut blob = Vec::new();
    write_layer(
        tree.path(),
        &WriteOptions {
            compression,
            mtime_clamp: None,
        },
        &mut blob,
    )
    .expect("write");
    blob
}

#[test]
fn truncated_gzip_and_zstd_are_corrupt() {
    for compression in [
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let blob = layer(compression);
        // Inside the header, inside the data, just before the end (gzip: inside the
        // CRC/size trailer).
        for cut in [5, blob.len() / 2, blob.len() - 4, blob.len() - 1] {
            let dst = tempfile::tempdir().expect("tempdir");
            let err = apply_layer(&blob[..cut], dst.path(), &options())
                .expect_err(&format!("{compression:?} cut at {cut} of {}", blob.len()));
            assert!(
                matches!(err, Error::Corrupt { .. }),
                "{compression:?} {cut}: {err}"
            );
        }
        // The whole blob still applies.
        let dst = tempfile::tempdir().expect("tempdir");
        apply_layer(&blob[..], dst.path(), &options()).expect("complete blob");
    }
}

#[test]
fn flipped_byte_in_gzip_is_corrupt() {
    let mut blob = layer(Compression::Gzip { level: 6 });
    let mid = blob.len() / 2;
    blob[mid] ^= 0x55;
    let dst = tempfile::tempdir().expect("tempdir");
    let err = apply_layer(&blob[..], dst.path(), &options()).expect_err("corrupt");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn truncated_plain_tar_is_corrupt_and_names_the_entry() {
    let tar = layer(Compression::None);
    // etc/ header (512), etc/a header (512), then 200 000 bytes of data: cut inside.
    let cut = 512 * 2 + 1000;
    let dst = tempfile::tempdir().expect("tempdir");
    let err = apply_layer(&tar[..cut], dst.path(), &options()).expect_err("truncated");
    match &err {
        Error::Corrupt { entry, .. } => assert_eq!(entry, "etc/a", "{err}"),
        other => panic!("expected Corrupt, got {other}"),
    }
    // Cut inside a header.
    let err = apply_layer(&tar[..700], dst.path(), &options()).expect_err("truncated");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn pax_size_larger_than_the_stream_is_corrupt() {
    let tar = RawTar::new()
        .pax(&[("size", b"1000000")])
        .entry(b"big", b'0', b"", b"only a few bytes", 0o644)
        .finish();
    let dst = tempfile::tempdir().expect("tempdir");
    let err = apply_layer(&tar[..], dst.path(), &options()).expect_err("short");
    match &err {
        Error::Corrupt { entry, .. } => assert_eq!(entry, "big"),
        other => panic!("expected Corrupt, got {other}"),
    }
    // The largest PAX size there is: an error, not an overflow.
    let tar = RawTar::new()
        .pax(&[("size", b"18446744073709551615")])
        .entry(b"huge", b'0', b"", b"x", 0o644)
        .finish();
    let err = apply_layer(&tar[..], dst.path(), &options()).expect_err("short");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let err = compress_tar(&tar[..], &WriteOptions::default(), &mut Vec::new()).expect_err("short");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // A header size larger than the stream, too.
    let tar = RawTar::new()
        .entry_sized(b"big", b'0', b"", b"tiny", 1 << 30, 0o644)
        .bytes
        .clone();
    let err = apply_layer(&tar[..], dst.path(), &options()).expect_err("short");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // compress_tar parses too.
    let err = compress_tar(&tar[..], &WriteOptions::default(), &mut Vec::new()).expect_err("short");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn bad_checksum_is_corrupt() {
    let mut tar = RawTar::new()
        .entry(b"f", b'0', b"", b"data", 0o644)
        .finish();
    tar[0] = b'g'; // name changed after the checksum was computed
    let dst = tempfile::tempdir().expect("tempdir");
    let err = apply_layer(&tar[..], dst.path(), &options()).expect_err("checksum");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn garbage_never_panics() {
    // A spread of hostile inputs: random bytes behind each magic, random headers.
    let dst = tempfile::tempdir().expect("tempdir");
    for seed in 1..200u64 {
        let mut data = pseudo_random(2048, seed);
        match seed % 4 {
            0 => data[..2].copy_from_slice(&[0x1f, 0x8b]),
            1 => data[..4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]),
            2 => {
                // A valid checksum over random fields.
                let mut h = tar::Header::new_ustar();
                h.as_mut_bytes()[..512].copy_from_slice(&data[..512]);
                h.as_mut_bytes()[257..265].copy_from_slice(b"ustar\x0000");
                h.set_cksum();
                data[..512].copy_from_slice(h.as_bytes());
            }
            _ => {}
        }
        let _ = apply_layer(&data[..], dst.path(), &options());
        let _ = compress_tar(&data[..], &WriteOptions::default(), &mut Vec::new());
    }
    // Whatever happened, nothing escaped the target's parent... and it still exists.
    assert!(dst.path().is_dir());
}

#[test]
fn bzip2_and_xz_layers_are_unsupported() {
    let dst = tempfile::tempdir().expect("tempdir");
    for head in [
        &b"BZh91AY&SY"[..],
        &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00],
    ] {
        let err = apply_layer(head, dst.path(), &options()).expect_err("unsupported");
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    }
}

#[test]
fn diff_id_covers_trailing_padding() {
    let mut tar = layer(Compression::None);
    tar.extend_from_slice(&[0u8; 9216]);
    let dst = tempfile::tempdir().expect("tempdir");
    let stats = apply_layer(&tar[..], dst.path(), &options()).expect("apply");
    assert_eq!(stats.diff_id, pybuild_oci::Digest::of(&tar));
    assert_eq!(stats.entries, 3);
}

/// Mutate the names, link targets and types of a small layer full of links, many
/// times over: whatever each variant does, nothing outside the target may change.
#[test]
fn mutated_layers_never_escape() {
    let base = RawTar::new()
        .entry(b"d/", b'5', b"", b"", 0o755)
        .entry(b"d/s", b'2', b"../../outside", b"", 0o777)
        .entry(b"d/f", b'0', b"", b"content\n", 0o644)
        .entry(b"h", b'1', b"d/f", b"", 0o644)
        .entry(b"d/s/x", b'0', b"", b"pwned\n", 0o644)
        .entry(b"d/.wh.f", b'0', b"", b"", 0)
        .finish();
    // Header offsets: entries with data take two blocks.
    let headers = [0usize, 512, 1024, 2048, 2560, 3584];
    let alphabet = b"./sdfhx\0";
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..400 {
        let mut tar = base.clone();
        for _ in 0..1 + next() % 4 {
            let h = headers[(next() % headers.len() as u64) as usize];
            let c = alphabet[(next() % alphabet.len() as u64) as usize];
            match next() % 3 {
                0 => tar[h + (next() % 12) as usize] = c,
                1 => tar[h + 157 + (next() % 14) as usize] = c,
                _ => tar[h + 156] = b'0' + (next() % 7) as u8,
            }
            let mut header = tar::Header::new_old();
            header.as_mut_bytes().copy_from_slice(&tar[h..h + 512]);
            header.set_cksum();
            tar[h..h + 512].copy_from_slice(header.as_bytes());
        }
        for mode in [ApplyMode::Snapshot, ApplyMode::Merge] {
            let scratch = Scratch::new();
            let _ = apply_layer(
                &tar[..],
                &scratch.target(),
                &ApplyOptions {
                    mode,
                    same_owner: false,
                    allow_devices: false,
                },
            );
            scratch.assert_untouched();
        }
    }
}
