//! Helpers shared by the integration tests: a store in a temp dir and small fake
//! images (layer blobs are arbitrary bytes: the store never looks inside layers).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pybuild_oci::{Descriptor, Digest, ImageConfig, ImageManifest, media_type};
use pybuild_store::{Store, host_platform};

/// A fresh store; keep the `TempDir` alive as long as the store is used.
pub fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    (dir, store)
}

/// What `build_image` put in the store.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

/// A fake image for the host platform with `layers` layers, unique per `seed`.
pub fn build_image(store: &Store, seed: &str, layers: usize) -> Built {
    build_image_for(store, seed, layers, &host_platform().architecture)
}

/// A fake image for linux/`arch`.
pub fn build_image_for(store: &Store, seed: &str, layers: usize, arch: &str) -> Built {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let bytes = format!("layer {seed} {arch} {i}\n").repeat(64);
        let (digest, size) = store.put_blob(bytes.as_bytes()).expect("put layer");
        layer_descs.push(Descriptor::new(media_type::OCI_LAYER_GZIP, digest, size));
        diff_ids.push(Digest::of(format!("diff {seed} {arch} {i}").as_bytes()));
    }
    let mut config = ImageConfig {
        architecture: arch.to_string(),
        os: "linux".to_string(),
        ..ImageConfig::default()
    };
    config.rootfs.diff_ids = diff_ids.clone();
    config.config.labels.insert("seed".into(), seed.into());
    let (digest, size) = store.put_json(&config).expect("put config");
    let config_desc = Descriptor::new(media_type::OCI_CONFIG, digest, size);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config_desc.clone(),
        layers: layer_descs.clone(),
        annotations: BTreeMap::new(),
    };
    let (digest, size) = store.put_json(&manifest).expect("put manifest");
    Built {
        manifest: Descriptor::new(media_type::OCI_MANIFEST, digest, size),
        config: config_desc,
        layers: layer_descs,
        diff_ids,
    }
}

/// Names in a directory (sorted); a missing directory has none.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match fs::read_dir(dir) {
        Ok(iter) => iter
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Remove a blob file behind the store's back (simulating loss).
pub fn delete_blob(store: &Store, digest: &Digest) {
    fs::remove_file(store.blob_path(digest)).expect("remove blob");
}
