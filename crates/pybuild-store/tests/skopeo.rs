//! The store is a real OCI layout: skopeo and umoci read it directly. Each test is
//! skipped (with a note) where its tool is not installed; CI installs both.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use pybuild_oci::{
    Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, canonical_json, media_type,
};
use pybuild_store::{Store, host_platform};

fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A one-layer image with a real gzip tar layer; returns the manifest bytes and
/// descriptor, and the layer's digest and diff ID.
fn build_real_image(store: &Store) -> (Vec<u8>, Descriptor, Digest, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let content = b"print('hello from pybuild')\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, "app/main.py", &content[..])
        .expect("tar entry");
    let tar_bytes = tar.into_inner().expect("tar");
    let diff_id = Digest::of(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar_bytes).expect("gzip");
    let gz_bytes = gz.finish().expect("gzip");
    let (layer_digest, layer_size) = store
        .put_blob_from(&gz_bytes[..], Some(&Digest::of(&gz_bytes)))
        .expect("layer");

    let mut config = ImageConfig {
        architecture: host_platform().architecture,
        os: "linux".into(),
        created: Some("1970-01-01T00:00:00Z".into()),
        ..ImageConfig::default()
    };
    config.config.cmd = Some(vec!["python3".into(), "/app/main.py".into()]);
    config.config.env = vec!["PATH=/usr/bin:/bin".into()];
    config.rootfs.diff_ids = vec![diff_id.clone()];
    let (config_digest, config_size) = store.put_json(&config).expect("config");
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: Descriptor::new(media_type::OCI_CONFIG, config_digest, config_size),
        layers: vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            layer_digest.clone(),
            layer_size,
        )],
        annotations: BTreeMap::new(),
    };
    let manifest_bytes = canonical_json(&manifest);
    let (md, ms) = store.put_blob(&manifest_bytes).expect("manifest");
    let desc = Descriptor::new(media_type::OCI_MANIFEST, md, ms);
    (manifest_bytes, desc, layer_digest, diff_id)
}

fn oci_ref(root: &Path, name: &str) -> String {
    format!("oci:{}:{name}", root.display())
}

#[test]
// The skip note is the one thing this test prints: a silent pass would hide that
// nothing was checked.
#[allow(clippy::print_stderr)]
fn skopeo_reads_the_store() {
    if !available("skopeo") {
        eprintln!("skipped: skopeo not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("open");
    let (manifest_bytes, desc, layer_digest, diff_id) = build_real_image(&store);
    store.set_tag("test:latest", &desc).expect("tag");
    let r = oci_ref(&root, "test:latest");

    let raw = run("skopeo", &["inspect", "--raw", &r]);
    assert_eq!(raw, manifest_bytes, "skopeo returns exactly our manifest");

    let config: ImageConfig = serde_json::from_slice(&run("skopeo", &["inspect", "--config", &r]))
        .expect("config parses");
    assert_eq!(config.rootfs.diff_ids, [diff_id]);
    assert_eq!(
        config.config.cmd.as_deref(),
        Some(&["python3".to_string(), "/app/main.py".to_string()][..])
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&run("skopeo", &["inspect", &r])).expect("inspect parses");
    assert_eq!(summary["Digest"], desc.digest.to_string());
    assert_eq!(summary["Layers"][0], layer_digest.to_string());

    // A full copy reads and verifies every blob.
    let out = dir.path().join("copy");
    run(
        "skopeo",
        &[
            "copy",
            "--insecure-policy",
            &r,
            &format!("dir:{}", out.display()),
        ],
    );
    assert!(out.join("manifest.json").is_file());

    // An index tag, followed by skopeo to the host platform's manifest.
    let mut index = ImageIndex::new();
    index.manifests.push(Descriptor {
        platform: Some(host_platform()),
        ..desc.clone()
    });
    let (id, is) = store.put_json(&index).expect("index");
    store
        .set_tag(
            "localhost:5000/multi:v1",
            &Descriptor::new(media_type::OCI_INDEX, id, is),
        )
        .expect("tag index");
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &oci_ref(&root, "localhost:5000/multi:v1"),
        ],
    );
    assert_eq!(raw, canonical_json(&index));
    let summary: serde_json::Value = serde_json::from_slice(&run(
        "skopeo",
        &["inspect", &oci_ref(&root, "localhost:5000/multi:v1")],
    ))
    .expect("inspect index");
    assert_eq!(summary["Layers"][0], layer_digest.to_string());
}

#[test]
#[allow(clippy::print_stderr)] // the skip note, as above
fn umoci_reads_and_unpacks_the_store() {
    if !available("umoci") {
        eprintln!("skipped: umoci not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("open");
    let (_, desc, _, _) = build_real_image(&store);
    store.set_tag("test:latest", &desc).expect("tag");
    store.set_tag("second:1", &desc).expect("tag");
    let root_str = root.to_str().expect("utf-8 path");
    let listed = String::from_utf8(run("umoci", &["ls", "--layout", root_str])).expect("utf-8");
    let mut tags: Vec<&str> = listed.lines().collect();
    tags.sort_unstable();
    assert_eq!(tags, ["second:1", "test:latest"]);

    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{root_str}:test:latest"),
            bundle.to_str().expect("utf-8 path"),
        ],
    );
    let main = std::fs::read_to_string(bundle.join("rootfs/app/main.py")).expect("unpacked file");
    assert_eq!(main, "print('hello from pybuild')\n");
}
