//! End to end: the store commands (`images`, `inspect`, `tag`, `rmi`, `save`,
//! `load`, `prune`, `store verify`) driving the real binary against stores the tests
//! fill programmatically.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use pybuild_layer::{WriteOptions, write_layer};
use pybuild_oci::{Config, Descriptor, Digest, ImageConfig, ImageManifest, RootFs, media_type};
use pybuild_store::Store;
use pybuild_testsupport::cmd::{self, assert_fails, assert_ok, stderr};

/// Fill `root` with one image tagged `name` (one layer holding `hello.txt` with
/// `content`); returns (manifest digest, config digest, layer digest).
fn add_image(root: &Path, name: &str, content: &str) -> (Digest, Digest, Digest) {
    let store = Store::open(root).unwrap();
    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("hello.txt"), content).unwrap();
    let mut writer = store.blob_writer().unwrap();
    let info = write_layer(tree.path(), &WriteOptions::default(), &mut writer).unwrap();
    writer.commit(Some(&info.digest)).unwrap();
    let config = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        architecture: pybuild_store::host_platform().architecture,
        os: "linux".into(),
        config: Config {
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![info.diff_id.clone()],
        },
        ..Default::default()
    };
    let (cd, cs) = store.put_json(&config).unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: Descriptor::new(media_type::OCI_CONFIG, cd.clone(), cs),
        layers: vec![Descriptor::new(
            info.media_type,
            info.digest.clone(),
            info.size,
        )],
        annotations: Default::default(),
    };
    let (md, ms) = store.put_json(&manifest).unwrap();
    store
        .set_tag(
            name,
            &Descriptor::new(media_type::OCI_MANIFEST, md.clone(), ms),
        )
        .unwrap();
    (md, cd, info.digest)
}

fn pybuild(root: &Path, args: &[&str]) -> Output {
    cmd::pybuild(env!("CARGO_BIN_EXE_pybuild"))
        .env("PYBUILD_ROOT", root)
        .args(args)
        .output()
        .expect("run pybuild")
}

#[test]
fn images_lists_tagged_images() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (_, config, _) = add_image(&root, "app:1.0", "hi\n");
    add_image(&root, "localhost:5000/team/tool:latest", "tool\n");
    let table = assert_ok(&pybuild(&root, &["images"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[1].starts_with("app "), "{table}");
    assert!(lines[1].contains(" 1.0 "), "{table}");
    assert!(lines[1].contains(&config.hex()[..12]), "{table}");
    assert!(lines[1].contains(" ago "), "{table}");
    assert!(lines[2].starts_with("localhost:5000/team/tool "), "{table}");

    let quiet = assert_ok(&pybuild(&root, &["images", "-q"]));
    assert_eq!(quiet.lines().next(), Some(&config.hex()[..12]));
    let json = assert_ok(&pybuild(
        &root,
        &["images", "--format", "json", "--no-trunc"],
    ));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["Repository"], "app");
    assert_eq!(first["ID"], config.to_string());
}

#[test]
fn images_honours_the_root_option() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    add_image(&root, "app:1.0", "hi\n");
    let other = tmp.path().join("other");
    let out = Command::new(env!("CARGO_BIN_EXE_pybuild"))
        .env("PYBUILD_ROOT", &other)
        .args(["--root", root.to_str().unwrap(), "images", "-q"])
        .output()
        .unwrap();
    assert_eq!(assert_ok(&out).lines().count(), 1);
}

#[test]
fn inspect_prints_manifest_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (manifest, config, layer) = add_image(&root, "app:1.0", "hi\n");
    let text = assert_ok(&pybuild(&root, &["inspect", "app:1.0"]));
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let first = &v[0];
    assert_eq!(first["Name"], "app:1.0");
    assert_eq!(first["Digest"], manifest.to_string());
    assert_eq!(first["Id"], config.to_string());
    assert_eq!(
        first["Config"]["config"]["Cmd"],
        serde_json::json!(["/bin/sh"])
    );
    assert_eq!(first["Manifest"]["layers"][0]["digest"], layer.to_string());

    let err = assert_fails(&pybuild(&root, &["inspect", "nope"]));
    assert!(err.contains("no such image: nope"), "{err}");
}

#[test]
fn tag_and_rmi() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (manifest, _, _) = add_image(&root, "app:1.0", "hi\n");
    assert_ok(&pybuild(&root, &["tag", "app:1.0", "copy"]));
    let store = Store::open(&root).unwrap();
    assert_eq!(
        store.resolve("copy:latest").unwrap().unwrap().digest,
        manifest
    );

    let out = assert_ok(&pybuild(&root, &["rmi", "copy"]));
    assert_eq!(out, "Untagged: copy:latest\n");
    assert!(store.resolve("copy").unwrap().is_none());
    assert!(store.resolve("app:1.0").unwrap().is_some());

    // Unknown names: a clear error, exit 1, nothing removed.
    let err = assert_fails(&pybuild(&root, &["rmi", "app:1.0", "ghost"]));
    assert!(err.contains("no such image: ghost"), "{err}");
    assert!(store.resolve("app:1.0").unwrap().is_some());
    let err = assert_fails(&pybuild(&root, &["tag", "ghost", "x"]));
    assert!(err.contains("no such image: ghost"), "{err}");
    // A bad target name is a usage error.
    let out = pybuild(&root, &["tag", "app:1.0", "Bad Name"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn save_then_load_into_another_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (manifest, config, _) = add_image(&root, "app:1.0", "hi\n");
    for format in ["docker-archive", "oci-archive"] {
        let file = tmp.path().join(format!("{format}.tar"));
        let file_str = file.to_str().unwrap();
        assert_ok(&pybuild(
            &root,
            &["save", "app:1.0", "-o", file_str, "--format", format],
        ));
        // Nothing but the archive is left next to it (the temp file was renamed).
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("pybuild-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let root2 = tmp.path().join(format!("root-{format}"));
        let out = assert_ok(&pybuild(&root2, &["load", "-i", file_str]));
        assert_eq!(out, "Loaded image: app:1.0\n");
        let store2 = Store::open(&root2).unwrap();
        let desc = store2.resolve("app:1.0").unwrap().expect("loaded");
        let image = store2.image(&desc, None).unwrap();
        assert_eq!(image.config_descriptor.digest, config);
        if format == "oci-archive" {
            assert_eq!(desc.digest, manifest);
        }
        assert_ok(&pybuild(&root2, &["store", "verify"]));
    }
    let err = assert_fails(&pybuild(
        &root,
        &[
            "save",
            "ghost",
            "-o",
            tmp.path().join("g.tar").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("no such image: ghost"), "{err}");
    assert!(!tmp.path().join("g.tar").exists());
    let err = assert_fails(&pybuild(&root, &["load", "-i", "/nonexistent/archive.tar"]));
    assert!(err.contains("/nonexistent/archive.tar"), "{err}");
}

#[test]
fn prune_frees_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    add_image(&root, "keep:1", "keep\n");
    let (_, _, layer) = add_image(&root, "drop:1", "drop me\n");
    assert_ok(&pybuild(&root, &["rmi", "drop:1"]));
    let out = assert_ok(&pybuild(&root, &["prune"]));
    assert!(out.contains("Deleted 3 blobs"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let store = Store::open(&root).unwrap();
    assert!(!store.has_blob(&layer));
    assert!(store.resolve("keep:1").unwrap().is_some());
    let out = assert_ok(&pybuild(&root, &["prune", "--all"]));
    assert!(out.contains("Deleted 0 blobs"), "{out}");
}

#[test]
fn verify_reports_a_corrupted_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (_, _, layer) = add_image(&root, "app:1", "hi\n");
    let out = assert_ok(&pybuild(&root, &["store", "verify"]));
    assert!(out.starts_with("store OK"), "{out}");

    let blob = root.join("blobs/sha256").join(layer.hex());
    let mut perms = fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let err = assert_fails(&pybuild(&root, &["store", "verify"]));
    assert!(err.contains("problem"), "{err}");
    assert!(err.contains(&layer.to_string()), "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn load_refuses_a_cut_off_archive_and_tags_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    add_image(&root, "app:1.0", "hi\n");
    let file = tmp.path().join("app.tar");
    assert_ok(&pybuild(
        &root,
        &["save", "app:1.0", "-o", file.to_str().unwrap()],
    ));
    let bytes = fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let root2 = tmp.path().join("root2");
    let err = assert_fails(&pybuild(&root2, &["load", "-i", cut.to_str().unwrap()]));
    assert!(err.contains("cut.tar"), "{err}");
    assert!(
        err.contains("truncated") || err.contains("cut off") || err.contains("not in the archive"),
        "{err}"
    );
    assert_eq!(assert_ok(&pybuild(&root2, &["images", "-q"])), "");
}
