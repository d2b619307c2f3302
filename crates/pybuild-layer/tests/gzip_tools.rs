//! Multi-block gzip layers (compressed in parallel) are ordinary gzip to the
//! system's `gzip`: it tests them clean and decompresses them to the layer's tar.
//! Skipped (with a note) where `gzip` is not installed.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::pseudo_random;
use pybuild_layer::{Compression, WriteOptions, write_layer};
use pybuild_oci::Digest;

fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `gzip ARGS` with `input` on stdin; return its stdout.
fn gzip(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip");
    feeder.join().expect("feeder").expect("feed gzip");
    assert!(
        out.status.success(),
        "gzip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ~7 MiB over several files: text that compresses, and random bytes that do not.
fn build_tree(root: &Path) {
    let mut text = String::new();
    let mut i = 0u64;
    while text.len() < 3 << 20 {
        text.push_str(&format!(
            "line {i}: usr/lib/python3/site-packages/mod{}.py\n",
            i % 977
        ));
        i += 1;
    }
    std::fs::write(root.join("text"), &text).expect("write");
    std::fs::write(root.join("random"), pseudo_random(3 << 20, 7)).expect("write");
    std::fs::create_dir(root.join("d")).expect("mkdir");
    for n in 0..50u64 {
        let body = pseudo_random(20_000, n + 1);
        std::fs::write(
            root.join(format!("d/f{n}")),
            &body[..(n as usize * 397) % 20_000],
        )
        .expect("write");
    }
}

#[test]
#[allow(clippy::print_stderr)] // the skip note
fn system_gzip_accepts_a_multi_block_layer_and_restores_the_tar() {
    if !available("gzip") {
        eprintln!("skipped: gzip is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    build_tree(dir.path());
    for level in [1, 6, 9] {
        let mut blob = Vec::new();
        let options = WriteOptions {
            compression: Compression::Gzip { level },
            mtime_clamp: None,
        };
        let info = write_layer(dir.path(), &options, &mut blob).expect("write");
        assert!(info.uncompressed_size > 6 << 20, "several 1 MiB blocks");
        gzip(&["-t"], &blob);
        let tar = gzip(&["-dc"], &blob);
        assert_eq!(tar.len() as u64, info.uncompressed_size, "level {level}");
        assert_eq!(Digest::of(&tar), info.diff_id, "level {level}: diffID");
        assert_eq!(Digest::of(&blob), info.digest, "level {level}: digest");

        let mut plain = Vec::new();
        let none = WriteOptions {
            compression: Compression::None,
            mtime_clamp: None,
        };
        write_layer(dir.path(), &none, &mut plain).expect("write tar");
        assert!(tar == plain, "level {level}: the same tar as uncompressed");
    }
}
