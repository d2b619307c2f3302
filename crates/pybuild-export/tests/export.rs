//! Exports checked with the tools that consume them (skopeo, umoci) and round trips
//! through `load_archive`. skopeo and umoci must be installed: tests that need them
//! fail, naming the tool, when they are missing (CI installs both).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pybuild_export::{
    Error, export_rootfs_dir, export_rootfs_tar, load_archive, load_archive_file,
    write_docker_archive, write_oci_archive, write_oci_layout_dir,
};
use pybuild_layer::{WriteOptions, write_layer};
use pybuild_oci::{Config, Descriptor, Digest, ImageConfig, ImageManifest, RootFs, media_type};
use pybuild_store::Store;

const NAME: &str = "docker.io/library/export-test:1.0";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: Store,
    desc: Descriptor,
    config_digest: Digest,
    diff_ids: Vec<Digest>,
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Store a layer made from `tree` (a diff directory); returns (descriptor, diff ID).
fn add_layer(store: &Store, tree: &Path) -> (Descriptor, Digest) {
    let mut writer = store.blob_writer().unwrap();
    let info = write_layer(tree, &WriteOptions::default(), &mut writer).unwrap();
    writer.commit(Some(&info.digest)).unwrap();
    (
        Descriptor::new(info.media_type, info.digest, info.size),
        info.diff_id,
    )
}

/// A two-layer image: layer 1 has `hello.txt` (0640, owner 1000:1000 when root),
/// `etc/conf` and a symlink; layer 2 replaces `etc/conf` and adds `bin/tool` (0755).
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let store = Store::open(&dir.join("store")).unwrap();

    let l1 = dir.join("l1");
    fs::create_dir_all(l1.join("etc")).unwrap();
    fs::write(l1.join("hello.txt"), "hello from layer one\n").unwrap();
    fs::set_permissions(l1.join("hello.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(l1.join("hello.txt"), Some(1000), Some(1000)).unwrap();
    }
    fs::write(l1.join("etc/conf"), "v1\n").unwrap();
    std::os::unix::fs::symlink("hello.txt", l1.join("link")).unwrap();
    let l2 = dir.join("l2");
    fs::create_dir_all(l2.join("etc")).unwrap();
    fs::create_dir_all(l2.join("bin")).unwrap();
    fs::write(l2.join("etc/conf"), "v2\n").unwrap();
    fs::write(l2.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(l2.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();

    let (d1, id1) = add_layer(&store, &l1);
    let (d2, id2) = add_layer(&store, &l2);
    let config = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        architecture: pybuild_store::host_platform().architecture,
        os: "linux".into(),
        config: Config {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["/bin/tool".into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![id1.clone(), id2.clone()],
        },
        ..Default::default()
    };
    let (config_digest, config_size) = store.put_json(&config).unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: Descriptor::new(media_type::OCI_CONFIG, config_digest.clone(), config_size),
        layers: vec![d1, d2],
        annotations: Default::default(),
    };
    let (md, ms) = store.put_json(&manifest).unwrap();
    let desc = Descriptor::new(media_type::OCI_MANIFEST, md, ms);
    store.set_tag(NAME, &desc).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        store,
        desc,
        config_digest,
        diff_ids: vec![id1, id2],
    }
}

/// Run an external tool; a missing tool fails the test with a clear message.
fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} is required for this test but could not be run ({e}); install it (apt-get install -y skopeo umoci)")
    });
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Check the image's files after umoci unpacked it into `bundle`.
fn check_unpacked(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "hello from layer one\n"
    );
    assert_eq!(fs::read_to_string(rootfs.join("etc/conf")).unwrap(), "v2\n");
    let meta = fs::symlink_metadata(rootfs.join("hello.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    if is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    }
    let tool_meta = fs::metadata(rootfs.join("bin/tool")).unwrap();
    assert_eq!(tool_meta.mode() & 0o777, 0o755);
    assert_eq!(
        fs::read_link(rootfs.join("link")).unwrap(),
        Path::new("hello.txt")
    );
}

fn tags(store: &Store) -> Vec<String> {
    store
        .list_tags()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn oci_layout_dir_reads_with_skopeo_and_umoci() {
    let f = fixture();
    let out = f.dir.join("layout");
    write_oci_layout_dir(&f.store, &[(f.desc.clone(), vec![NAME.into()])], &out).unwrap();
    let inspected = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:{NAME}", path_str(&out))],
    ));
    assert_eq!(inspected["Digest"], f.desc.digest.to_string());
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);

    let bundle = f.dir.join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{NAME}", path_str(&out)),
            path_str(&bundle),
        ],
    );
    check_unpacked(&bundle);

    // A second export into the same layout adds a name and keeps the first.
    write_oci_layout_dir(&f.store, &[(f.desc.clone(), vec!["other:2".into()])], &out).unwrap();
    let index = json(&fs::read_to_string(out.join("index.json")).unwrap());
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, [NAME, "other:2"]);
    // Exporting the same name again replaces, not duplicates.
    write_oci_layout_dir(&f.store, &[(f.desc.clone(), vec![NAME.into()])], &out).unwrap();
    let index = json(&fs::read_to_string(out.join("index.json")).unwrap());
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn oci_archive_reads_with_skopeo_and_is_deterministic() {
    let f = fixture();
    let images = [(f.desc.clone(), vec![NAME.to_string()])];
    let bytes = write_oci_archive(&f.store, &images, Vec::new()).unwrap();
    let again = write_oci_archive(&f.store, &images, Vec::new()).unwrap();
    assert!(bytes == again, "two exports of one image differ");
    let file = f.dir.join("image.tar");
    fs::write(&file, &bytes).unwrap();
    let inspected = json(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:{NAME}", path_str(&file)),
        ],
    ));
    assert_eq!(inspected["Digest"], f.desc.digest.to_string());

    let copy = f.dir.join("copy");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}:{NAME}", path_str(&file)),
            &format!("oci:{}:copied", path_str(&copy)),
        ],
    );
    let bundle = f.dir.join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:copied", path_str(&copy)),
            path_str(&bundle),
        ],
    );
    check_unpacked(&bundle);
}

#[test]
fn docker_archive_reads_with_skopeo() {
    let f = fixture();
    let file = f.dir.join("docker.tar");
    let out = File::create(&file).unwrap();
    write_docker_archive(&f.store, &f.desc, &[NAME.into()], out).unwrap();

    // The layout: manifest.json first, short RepoTags, uncompressed layers.
    let mut archive = tar::Archive::new(File::open(&file).unwrap());
    let mut names = Vec::new();
    let mut manifest = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            entry.read_to_string(&mut manifest).unwrap();
        }
        names.push(name);
    }
    assert_eq!(names[0], "manifest.json");
    let manifest = json(&manifest);
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["export-test:1.0"])
    );
    assert_eq!(
        manifest[0]["Config"],
        format!("{}.json", f.config_digest.hex())
    );
    let layers: Vec<String> = f
        .diff_ids
        .iter()
        .map(|d| format!("{}.tar", d.hex()))
        .collect();
    assert_eq!(manifest[0]["Layers"], serde_json::json!(layers));

    let inspected = json(&tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", path_str(&file))],
    ));
    let diff_ids: Vec<String> = f.diff_ids.iter().map(ToString::to_string).collect();
    assert_eq!(inspected["Layers"], serde_json::json!(diff_ids));

    let copy = f.dir.join("copy");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", path_str(&file)),
            &format!("oci:{}:copied", path_str(&copy)),
        ],
    );
    let bundle = f.dir.join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:copied", path_str(&copy)),
            path_str(&bundle),
        ],
    );
    check_unpacked(&bundle);
}

#[test]
fn rootfs_dir_and_tar_hold_the_merged_tree() {
    let f = fixture();
    let out = f.dir.join("rootfs");
    export_rootfs_dir(&f.store, &f.desc, &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("etc/conf")).unwrap(), "v2\n");
    assert_eq!(
        fs::read_to_string(out.join("hello.txt")).unwrap(),
        "hello from layer one\n"
    );
    assert_eq!(
        fs::metadata(out.join("bin/tool")).unwrap().mode() & 0o777,
        0o755
    );

    let bytes = export_rootfs_tar(&f.store, &f.desc, Vec::new()).unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut found = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = String::new();
        if entry.header().entry_type().is_file() {
            entry.read_to_string(&mut content).unwrap();
        }
        found.insert(name.trim_end_matches('/').to_string(), content);
    }
    assert_eq!(found["etc/conf"], "v2\n");
    assert_eq!(found["hello.txt"], "hello from layer one\n");
    assert!(found.contains_key("link"));
    // No whiteouts or store internals in a merged tree.
    assert!(found.keys().all(|k| !k.contains(".wh.")), "{found:?}");
}

fn second_store(f: &Fixture) -> Store {
    Store::open(&f.dir.join("store2")).unwrap()
}

#[test]
fn oci_archive_round_trip_keeps_the_manifest() {
    let f = fixture();
    let images = [(f.desc.clone(), vec![NAME.to_string()])];
    let bytes = write_oci_archive(&f.store, &images, Vec::new()).unwrap();
    let store2 = second_store(&f);
    let loaded = load_archive(&store2, bytes.as_slice()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name.as_deref(), Some(NAME));
    assert_eq!(loaded[0].descriptor.digest, f.desc.digest);
    let got = store2.resolve(NAME).unwrap().expect("tagged");
    assert_eq!(got.digest, f.desc.digest);
    assert!(store2.verify().unwrap().is_ok());
}

#[test]
fn docker_archive_round_trip_keeps_config_and_diff_ids() {
    let f = fixture();
    let bytes = write_docker_archive(&f.store, &f.desc, &[NAME.into()], Vec::new()).unwrap();
    // Gzipped, as `docker save | gzip` would give it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let gzipped = gz.finish().unwrap();
    for input in [bytes, gzipped] {
        let store2 = Store::open(&tempfile::tempdir_in(&f.dir).unwrap().keep()).unwrap();
        let loaded = load_archive(&store2, input.as_slice()).unwrap();
        assert_eq!(loaded.len(), 1);
        // docker's short name comes back normalized the store's way.
        assert_eq!(loaded[0].name.as_deref(), Some("export-test:1.0"));
        let desc = store2.resolve("export-test:1.0").unwrap().expect("tagged");
        let image = store2.image(&desc, None).unwrap();
        assert_eq!(image.config_descriptor.digest, f.config_digest);
        assert_eq!(image.config.rootfs.diff_ids, f.diff_ids);
        // Re-gzipped deterministically with the same settings: same layer blobs.
        let original = f.store.image(&f.desc, None).unwrap();
        assert_eq!(image.manifest.layers, original.manifest.layers);
        assert!(store2.verify().unwrap().is_ok());
    }
}

#[test]
fn archives_written_by_skopeo_load() {
    let f = fixture();
    let layout = f.dir.join("layout");
    write_oci_layout_dir(&f.store, &[(f.desc.clone(), vec![NAME.into()])], &layout).unwrap();
    let src = format!("oci:{}:{NAME}", path_str(&layout));
    let docker = f.dir.join("skopeo-docker.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &src,
            &format!("docker-archive:{}:skopeo/made:v1", path_str(&docker)),
        ],
    );
    let oci = f.dir.join("skopeo-oci.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &src,
            &format!("oci-archive:{}:made", path_str(&oci)),
        ],
    );
    let store2 = second_store(&f);
    let loaded = load_archive_file(&store2, &docker).unwrap();
    assert_eq!(loaded[0].name.as_deref(), Some("skopeo/made:v1"));
    let image = store2.image(&loaded[0].descriptor, None).unwrap();
    assert_eq!(image.config.rootfs.diff_ids, f.diff_ids);
    let loaded = load_archive_file(&store2, &oci).unwrap();
    assert_eq!(loaded[0].name.as_deref(), Some("made"));
    assert!(store2.verify().unwrap().is_ok());
}

/// Rewrite one member of an archive (by name) through `change`.
fn rewrite(bytes: &[u8], member: &str, change: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        if name == member {
            change(&mut content);
        }
        let mut header = entry.header().clone();
        header.set_size(content.len() as u64);
        header.set_cksum();
        out.append(&header, content.as_slice()).unwrap();
    }
    out.into_inner().unwrap()
}

#[test]
fn corrupt_oci_blob_is_refused_and_nothing_is_tagged() {
    let f = fixture();
    let images = [(f.desc.clone(), vec![NAME.to_string()])];
    let bytes = write_oci_archive(&f.store, &images, Vec::new()).unwrap();
    let layer = f.store.image(&f.desc, None).unwrap().manifest.layers[1].clone();
    let member = format!("blobs/sha256/{}", layer.digest.hex());
    let bad = rewrite(&bytes, &member, |c| {
        let last = c.len() - 1;
        c[last] ^= 0xff;
    });
    let store2 = second_store(&f);
    let err = load_archive(&store2, bad.as_slice()).unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { .. }),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains(&member), "{err}");
    assert!(tags(&store2).is_empty());
    assert!(!store2.has_blob(&layer.digest));
}

#[test]
fn truncated_archives_are_refused_and_nothing_is_tagged() {
    let f = fixture();
    let images = [(f.desc.clone(), vec![NAME.to_string()])];
    let oci = write_oci_archive(&f.store, &images, Vec::new()).unwrap();
    let docker = write_docker_archive(&f.store, &f.desc, &[NAME.into()], Vec::new()).unwrap();
    for bytes in [oci, docker] {
        for cut in [bytes.len() / 2, bytes.len() - 1024 - 700, 700] {
            let store2 = Store::open(&tempfile::tempdir_in(&f.dir).unwrap().keep()).unwrap();
            let err = load_archive(&store2, &bytes[..cut]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("truncated")
                    || text.contains("missing")
                    || text.contains("not in the archive")
                    || text.contains("neither")
                    || text.contains("reading the archive"),
                "cut at {cut}: unclear error: {text}"
            );
            assert!(tags(&store2).is_empty(), "cut at {cut}: a tag was set");
        }
    }
}

#[test]
fn docker_archive_with_wrong_diff_id_is_refused() {
    let f = fixture();
    let bytes = write_docker_archive(&f.store, &f.desc, &[NAME.into()], Vec::new()).unwrap();
    let config_member = format!("{}.json", f.config_digest.hex());
    let wrong = Digest::of(b"something else");
    let bad = rewrite(&bytes, &config_member, |c| {
        let text = String::from_utf8(c.clone()).unwrap();
        *c = text
            .replace(&f.diff_ids[1].to_string(), &wrong.to_string())
            .into_bytes();
    });
    let store2 = second_store(&f);
    let err = load_archive(&store2, bad.as_slice()).unwrap_err();
    assert!(
        matches!(err, Error::DiffIdMismatch { .. }),
        "unexpected error: {err}"
    );
    assert!(tags(&store2).is_empty());
}

#[test]
fn not_an_archive_is_refused() {
    let f = fixture();
    let store2 = second_store(&f);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, "README", &b"hi"[..]).unwrap();
    let err = load_archive(&store2, b.into_inner().unwrap().as_slice()).unwrap_err();
    assert!(err.to_string().contains("neither"), "{err}");
}

#[test]
fn oci_layout_dir_copies_across_file_systems() {
    let f = fixture();
    // /dev/shm is a tmpfs on Linux: usually another file system than the store's,
    // which takes the copy path instead of the hard link.
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let out = base.path().join("layout");
    write_oci_layout_dir(&f.store, &[(f.desc.clone(), vec![NAME.into()])], &out).unwrap();
    let blob = out.join("blobs/sha256").join(f.desc.digest.hex());
    let stored = f.store.blob_path(&f.desc.digest);
    assert_eq!(fs::read(&blob).unwrap(), fs::read(&stored).unwrap());
    let (a, b) = (fs::metadata(&blob).unwrap(), fs::metadata(&stored).unwrap());
    if a.dev() == b.dev() {
        assert_eq!(a.ino(), b.ino(), "same file system: hard-linked");
    } else {
        assert_ne!(a.ino(), b.ino());
    }
    let inspected = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:{NAME}", path_str(&out))],
    ));
    assert_eq!(inspected["Digest"], f.desc.digest.to_string());
    // No temp files left in the layout.
    let stray: Vec<_> = fs::read_dir(out.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
