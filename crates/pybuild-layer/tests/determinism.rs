//! Same tree → same bytes; digests are what they claim to be.

mod common;

use std::io::Read;

use common::*;
use pybuild_layer::{Compression, Error, WriteOptions, compress_tar, write_layer};
use pybuild_oci::Digest;

fn write(dir: &std::path::Path, options: &WriteOptions) -> (pybuild_layer::LayerInfo, Vec<u8>) {
    let mut blob = Vec::new();
    let info = write_layer(dir, options, &mut blob).expect("write");
    (info, blob)
}

#[test]
fn same_tree_gives_same_bytes_whatever_the_creation_order_and_atimes() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    build_fixture(a.path(), false, 1000);
    build_fixture(b.path(), true, 2_000_000);
    for compression in [
        Compression::None,
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let options = WriteOptions {
            compression,
            mtime_clamp: None,
        };
        let (first, blob1) = write(a.path(), &options);
        let (second, blob2) = write(a.path(), &options);
        let (copy, blob3) = write(b.path(), &options);
        assert_eq!(first, second, "{compression:?}: twice");
        assert_eq!(first, copy, "{compression:?}: reordered copy");
        assert!(blob1 == blob2 && blob2 == blob3, "{compression:?}: bytes");
    }
}

#[test]
fn mtime_clamp_rewrites_newer_mtimes_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_fixture(dir.path(), false, 1000);
    // One file older than the clamp keeps its own mtime.
    set_times(&dir.path().join("a0"), 0, 1_000_000);
    let (plain, _) = write(dir.path(), &WriteOptions::default());
    let clamp = 1_500_000_000;
    let options = WriteOptions {
        compression: Compression::Gzip { level: 6 },
        mtime_clamp: Some(clamp),
    };
    let (clamped, blob) = write(dir.path(), &options);
    assert_ne!(plain.diff_id, clamped.diff_id);
    let (unchanged, _) = write(
        dir.path(),
        &WriteOptions {
            mtime_clamp: Some(FIXTURE_MTIME + 10),
            ..options.clone()
        },
    );
    assert_eq!(
        unchanged.diff_id, plain.diff_id,
        "a clamp in the future changes nothing"
    );

    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let mut seen = 0;
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let mtime = entry.header().mtime().expect("mtime");
        if entry.path_bytes().as_ref() == b"a0" {
            assert_eq!(mtime, 1_000_000);
        } else {
            // Whiteouts and opaque markers included.
            assert_eq!(mtime, clamp as u64, "{:?}", entry.path_bytes());
        }
        seen += 1;
    }
    assert!(seen > 20);
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

#[test]
fn digests_are_sha256_of_the_blob_and_of_the_decompressed_tar() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_fixture(dir.path(), false, 1000);
    for compression in [
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 9 },
        Compression::Zstd { level: 3 },
        Compression::None,
    ] {
        let (info, blob) = write(
            dir.path(),
            &WriteOptions {
                compression,
                mtime_clamp: None,
            },
        );
        let tar = match compression {
            Compression::Gzip { .. } => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut out)
                    .expect("gunzip");
                out
            }
            Compression::Zstd { .. } => zstd::decode_all(&blob[..]).expect("unzstd"),
            Compression::None => blob.clone(),
        };
        assert_eq!(info.digest, sha256(&blob), "{compression:?}");
        assert_eq!(info.diff_id, sha256(&tar), "{compression:?}");
        assert_eq!(info.size, blob.len() as u64);
        assert_eq!(info.uncompressed_size, tar.len() as u64);
        assert_eq!(info.media_type, compression.media_type(true));
        assert_eq!(tar.len() % 512, 0);
        assert!(tar.ends_with(&[0u8; 1024]), "end-of-archive blocks");
        if compression == Compression::None {
            assert_eq!(info.digest, info.diff_id);
        } else {
            assert_ne!(info.digest, info.diff_id);
        }
        if let Compression::Gzip { .. } = compression {
            // Deterministic gzip header: no mtime, no name, OS "unknown".
            assert_eq!(&blob[3..8], &[0, 0, 0, 0, 0]);
            assert_eq!(blob[9], 255);
        }
    }
}

#[test]
fn compress_tar_hashes_in_one_pass_and_matches_write_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    build_fixture(dir.path(), false, 1000);
    let (plain, tar) = write(
        dir.path(),
        &WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        },
    );
    let (gz_info, gz_blob) = write(dir.path(), &WriteOptions::default());

    let mut out = Vec::new();
    let info = compress_tar(&tar[..], &WriteOptions::default(), &mut out).expect("compress");
    assert_eq!(info, gz_info, "same as writing the tree gzipped");
    assert_eq!(out, gz_blob);
    assert_eq!(info.entries, plain.entries);

    // A compressed input is decompressed first: the diffID is the plain tar's.
    let mut out = Vec::new();
    let zstd_options = WriteOptions {
        compression: Compression::Zstd { level: 5 },
        mtime_clamp: None,
    };
    let info = compress_tar(&gz_blob[..], &zstd_options, &mut out).expect("recompress");
    assert_eq!(info.diff_id, plain.diff_id);
    assert_eq!(info.digest, sha256(&out));
    assert_eq!(zstd::decode_all(&out[..]).expect("unzstd"), tar);

    // Trailing bytes after the end-of-archive blocks belong to the tar as given.
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 10240]);
    let info =
        compress_tar(&padded[..], &WriteOptions::default(), &mut Vec::new()).expect("padded");
    assert_eq!(info.diff_id, sha256(&padded));
    assert_eq!(info.uncompressed_size, padded.len() as u64);
}

#[test]
fn compress_tar_rejects_what_is_not_a_tar() {
    let junk = b"this is not a tar archive, just some text that goes on".repeat(20);
    let err =
        compress_tar(&junk[..], &WriteOptions::default(), &mut Vec::new()).expect_err("not a tar");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let err = compress_tar(
        &b"BZh91AY&SY\0\0\0\0"[..],
        &WriteOptions::default(),
        &mut Vec::new(),
    )
    .expect_err("bzip2");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[test]
fn bad_gzip_level_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = write_layer(
        dir.path(),
        &WriteOptions {
            compression: Compression::Gzip { level: 10 },
            mtime_clamp: None,
        },
        &mut Vec::new(),
    )
    .expect_err("level 10");
    assert!(err.to_string().contains("gzip level 10"), "{err}");
}

#[test]
fn empty_dir_is_an_empty_tar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (info, blob) = write(
        dir.path(),
        &WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        },
    );
    assert_eq!(blob, vec![0u8; 1024]);
    assert_eq!(info.entries, 0);
    assert_eq!(
        info.diff_id.to_string(),
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
        "the well-known empty layer diffID"
    );
}

#[test]
fn file_named_like_a_whiteout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".wh.sneaky"), b"x").expect("write");
    let err =
        write_layer(dir.path(), &WriteOptions::default(), &mut Vec::new()).expect_err("refused");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains(".wh.sneaky"), "{err}");
}

#[test]
fn overlay_redirect_is_refused() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("moved")).expect("mkdir");
    set_xattr(
        &dir.path().join("moved"),
        "trusted.overlay.redirect",
        b"/orig",
    );
    let err =
        write_layer(dir.path(), &WriteOptions::default(), &mut Vec::new()).expect_err("refused");
    assert!(err.to_string().contains("redirect"), "{err}");
}

/// Measures gzip-6 write throughput on ~100 MB of mixed data. Run with
/// `cargo test -p pybuild-layer --test determinism -- --ignored --nocapture`.
#[test]
#[ignore]
#[allow(clippy::print_stderr)]
fn throughput_100mb_gzip6() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Half incompressible, half text-like: roughly a Python site-packages mix.
    let text = b"def function(argument):\n    return argument * 2  # comment\n".repeat(20_000);
    let mut total = 0u64;
    for i in 0..40 {
        let sub = dir.path().join(format!("d{}", i % 8));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let data = if i % 2 == 0 {
            pseudo_random(1_250_000, i + 1)
        } else {
            text[..1_250_000.min(text.len())].to_vec()
        };
        std::fs::write(sub.join(format!("f{i}")), &data).expect("write");
        total += data.len() as u64;
    }
    for i in 0..4000u64 {
        let data = pseudo_random(12_500, i + 100);
        std::fs::write(
            dir.path().join(format!("d{}", i % 8)).join(format!("s{i}")),
            &data,
        )
        .expect("write");
        total += data.len() as u64;
    }
    for (name, compression) in [
        ("gzip-6", Compression::Gzip { level: 6 }),
        ("zstd-3", Compression::Zstd { level: 3 }),
    ] {
        let start = std::time::Instant::now();
        let info = write_layer(
            dir.path(),
            &WriteOptions {
                compression,
                mtime_clamp: None,
            },
            std::io::sink(),
        )
        .expect("write");
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {:.1} MB in {secs:.2} s = {:.1} MB/s (blob {:.1} MB, {} entries)",
            total as f64 / 1e6,
            total as f64 / 1e6 / secs,
            info.size as f64 / 1e6,
            info.entries
        );
    }
}
