//! Any bytes as a layer blob (plain, gzip or zstd tar): `apply_layer` in both modes
//! must return (Ok or Err) without panicking, and never create anything outside its
//! target directory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pybuild_layer::{ApplyMode, ApplyOptions, apply_layer};

/// Names directly inside `dir`, sorted.
fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let Ok(outer) = tempfile::tempdir() else { return };
    for (i, mode) in [ApplyMode::Snapshot, ApplyMode::Merge].into_iter().enumerate() {
        let target = outer.path().join(format!("target{i}"));
        if std::fs::create_dir(&target).is_err() {
            return;
        }
        let options = ApplyOptions {
            mode,
            same_owner: false,
            allow_devices: false,
        };
        let _ = apply_layer(data, &target, &options);
    }
    // Only the two targets exist beside each other: nothing escaped.
    assert_eq!(listing(outer.path()), ["target0", "target1"]);
});
