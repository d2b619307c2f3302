//! Layer compression throughput, for the benchmark harness (`bench/run.sh`): runs a
//! tar file through pybuild's real one-pass layer pipeline (tar parse, sha256 of the
//! tar, compressor, sha256 of the blob) into a sink, and prints the seconds and MB/s.
//!
//! `cargo run --release -p pybuild-layer --example compress_throughput -- FILE.tar gzip 6`
//! (`gzip LEVEL`, `zstd LEVEL` or `none`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::io::{self, BufReader};
use std::process::ExitCode;
use std::time::Instant;

use pybuild_layer::{Compression, WriteOptions, compress_tar};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, algo, level) = match args.as_slice() {
        [path, algo] => (path, algo.as_str(), None),
        [path, algo, level] => (path, algo.as_str(), Some(level.as_str())),
        _ => {
            eprintln!("usage: compress_throughput FILE.tar gzip|zstd|none [LEVEL]");
            return ExitCode::from(2);
        }
    };
    let compression = match (algo, level) {
        ("none", _) => Compression::None,
        ("gzip", l) => Compression::Gzip {
            level: l.map_or(Ok(6), str::parse).unwrap_or(6),
        },
        ("zstd", l) => Compression::Zstd {
            level: l.map_or(Ok(3), str::parse).unwrap_or(3),
        },
        _ => {
            eprintln!("unknown compression {algo}");
            return ExitCode::from(2);
        }
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = WriteOptions {
        compression,
        mtime_clamp: None,
    };
    let start = Instant::now();
    let info = match compress_tar(
        BufReader::with_capacity(1 << 20, file),
        &options,
        io::sink(),
    ) {
        Ok(info) => info,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let mb = info.uncompressed_size as f64 / 1e6;
    println!(
        "in_bytes={} out_bytes={} seconds={:.3} mb_per_s={:.1}",
        info.uncompressed_size,
        info.size,
        secs,
        mb / secs
    );
    ExitCode::SUCCESS
}
