//! Tags in index.json, image closures, reading images, opening layouts.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{build_image, build_image_for, delete_blob, new_store};
use pybuild_oci::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndex, Platform, from_json, media_type,
};
use pybuild_store::{Error, Store, host_platform};

fn read_index(store: &Store) -> ImageIndex {
    let bytes = fs::read(store.root().join("index.json")).expect("index.json");
    from_json("index", &bytes).expect("index.json is an OCI index")
}

#[test]
fn layout_files_are_valid() {
    let (_dir, store) = new_store();
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("oci-layout")).expect("oci-layout"))
            .expect("json");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index = read_index(&store);
    assert_eq!(index.schema_version, 2);
    assert_eq!(index.media_type.as_deref(), Some(media_type::OCI_INDEX));
    assert!(index.manifests.is_empty());
    for dir in ["blobs/sha256", "snapshots", "cache", "tmp", "locks"] {
        assert!(store.root().join(dir).is_dir(), "{dir}");
    }
}

#[test]
fn set_resolve_list_remove() {
    let (_dir, store) = new_store();
    let a = build_image(&store, "a", 2);
    let b = build_image(&store, "b", 1);
    store.set_tag("app:latest", &a.manifest).expect("tag a");
    store
        .set_tag("localhost:5000/other:1", &b.manifest)
        .expect("tag b");

    let resolved = store
        .resolve("app:latest")
        .expect("resolve")
        .expect("found");
    assert_eq!(resolved.digest, a.manifest.digest);
    assert_eq!(
        resolved
            .annotations
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str),
        Some("app:latest")
    );
    // The short name resolves through normalization.
    assert_eq!(
        store.resolve("app").expect("resolve").map(|d| d.digest),
        Some(a.manifest.digest.clone())
    );
    assert_eq!(store.resolve("nope").expect("resolve"), None);

    let tags: Vec<(String, Digest)> = store
        .list_tags()
        .expect("list")
        .into_iter()
        .map(|(n, d)| (n, d.digest))
        .collect();
    assert_eq!(
        tags,
        [
            ("app:latest".to_string(), a.manifest.digest.clone()),
            (
                "localhost:5000/other:1".to_string(),
                b.manifest.digest.clone()
            ),
        ]
    );

    // Re-tagging replaces, never duplicates.
    store.set_tag("app:latest", &b.manifest).expect("retag");
    let index = read_index(&store);
    assert_eq!(index.manifests.len(), 2);
    assert_eq!(
        store
            .resolve("app:latest")
            .expect("resolve")
            .map(|d| d.digest),
        Some(b.manifest.digest.clone())
    );

    assert!(store.remove_tag("app").expect("remove via short name"));
    assert!(!store.remove_tag("app:latest").expect("already gone"));
    assert_eq!(store.list_tags().expect("list").len(), 1);
    // Removing a tag keeps the blobs (until prune).
    assert!(store.has_blob(&a.manifest.digest));
    assert_eq!(read_index(&store).manifests.len(), 1);
}

#[test]
fn set_tag_refuses_incomplete_images() {
    let (_dir, store) = new_store();
    let img = build_image(&store, "x", 3);
    let missing_layer = img.layers[1].digest.clone();
    delete_blob(&store, &missing_layer);
    match store.set_tag("x:1", &img.manifest) {
        Err(Error::IncompleteImage { tag, missing }) => {
            assert_eq!(tag, "x:1");
            assert_eq!(missing, missing_layer);
        }
        other => panic!("expected IncompleteImage, got {other:?}"),
    }
    assert!(read_index(&store).manifests.is_empty(), "index untouched");

    let img = build_image(&store, "y", 1);
    delete_blob(&store, &img.config.digest);
    assert!(matches!(
        store.set_tag("y:1", &img.manifest),
        Err(Error::IncompleteImage { missing, .. }) if missing == img.config.digest
    ));

    let img = build_image(&store, "z", 1);
    delete_blob(&store, &img.manifest.digest);
    assert!(matches!(
        store.set_tag("z:1", &img.manifest),
        Err(Error::IncompleteImage { missing, .. }) if missing == img.manifest.digest
    ));
    assert!(store.list_tags().expect("list").is_empty());
}

#[test]
fn set_tag_refuses_bad_descriptors_and_names() {
    let (_dir, store) = new_store();
    let img = build_image(&store, "w", 1);
    // A config is not an image.
    assert!(matches!(
        store.set_tag("w:1", &img.config),
        Err(Error::InvalidDescriptor { .. })
    ));
    // A size that disagrees with the blob.
    let mut wrong = img.manifest.clone();
    wrong.size += 1;
    assert!(matches!(
        store.set_tag("w:1", &wrong),
        Err(Error::InvalidDescriptor { .. })
    ));
    for bad in ["", "a b", "tab\there"] {
        assert!(matches!(
            store.set_tag(bad, &img.manifest),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(store.list_tags().expect("list").is_empty());
}

#[test]
fn tags_persist_across_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("s");
    let digest = {
        let store = Store::open(&root).expect("open");
        let img = build_image(&store, "p", 2);
        store.set_tag("persist:latest", &img.manifest).expect("tag");
        img.manifest.digest
    };
    let store = Store::open(&root).expect("reopen");
    let desc = store
        .resolve("persist:latest")
        .expect("resolve")
        .expect("found");
    assert_eq!(desc.digest, digest);
    let image = store.image(&desc, None).expect("image");
    assert_eq!(
        image.config.config.labels.get("seed").map(String::as_str),
        Some("p")
    );
    assert_eq!(image.manifest.layers.len(), 2);
    assert_eq!(image.config_descriptor, image.manifest.config);
}

fn platform(arch: &str) -> Platform {
    Platform {
        architecture: arch.into(),
        os: "linux".into(),
        os_version: None,
        os_features: Vec::new(),
        variant: None,
    }
}

#[test]
fn index_images_follow_the_platform() {
    let (_dir, store) = new_store();
    let host = host_platform().architecture;
    let other = if host == "s390x" { "amd64" } else { "s390x" };
    let here = build_image_for(&store, "multi", 1, &host);
    let there = build_image_for(&store, "multi", 2, other);
    let mut index = ImageIndex::new();
    for (built, arch) in [(&here, host.as_str()), (&there, other)] {
        index.manifests.push(Descriptor {
            platform: Some(platform(arch)),
            ..built.manifest.clone()
        });
    }
    let (d, n) = store.put_json(&index).expect("put index");
    let index_desc = Descriptor::new(media_type::OCI_INDEX, d, n);
    store
        .set_tag("multi:latest", &index_desc)
        .expect("tag index");

    let img = store.image(&index_desc, None).expect("host image");
    assert_eq!(img.descriptor.digest, here.manifest.digest);
    assert_eq!(img.config.architecture, host);
    let img = store
        .image(&index_desc, Some(&platform(other)))
        .expect("other image");
    assert_eq!(img.descriptor.digest, there.manifest.digest);
    assert_eq!(img.manifest.layers.len(), 2);
    assert!(matches!(
        store.image(&index_desc, Some(&platform("mips64le"))),
        Err(Error::NoMatchingPlatform { .. })
    ));

    // The closure of an index includes every child: a missing layer of the other
    // platform blocks tagging.
    let mut index2 = index.clone();
    index2.annotations = BTreeMap::from([("v".to_string(), "2".to_string())]);
    let (d2, n2) = store.put_json(&index2).expect("put index");
    delete_blob(&store, &there.layers[1].digest);
    assert!(matches!(
        store.set_tag("multi:2", &Descriptor::new(media_type::OCI_INDEX, d2, n2)),
        Err(Error::IncompleteImage { missing, .. }) if missing == there.layers[1].digest
    ));
}

#[test]
fn open_refuses_foreign_directories_and_adopts_plain_layouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = dir.path().join("home");
    fs::create_dir(&foreign).expect("mkdir");
    fs::write(foreign.join("notes.txt"), b"mine").expect("write");
    assert!(matches!(Store::open(&foreign), Err(Error::Corrupt { .. })));
    assert!(!foreign.join("blobs").exists(), "nothing scattered");

    // A layout written by another tool (no pybuild dirs yet) is adopted.
    let plain = dir.path().join("plain");
    fs::create_dir_all(plain.join("blobs/sha256")).expect("mkdir");
    fs::write(
        plain.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .expect("w");
    fs::write(
        plain.join("index.json"),
        br#"{"schemaVersion": 2, "manifests": []}"#,
    )
    .expect("w");
    let store = Store::open(&plain).expect("adopt");
    assert!(store.root().join("snapshots").is_dir());
    assert!(store.list_tags().expect("list").is_empty());

    // A newer major layout version is refused.
    let future = dir.path().join("future");
    fs::create_dir(&future).expect("mkdir");
    fs::write(
        future.join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .expect("w");
    assert!(matches!(Store::open(&future), Err(Error::Corrupt { .. })));
}

#[test]
fn threads_with_separate_stores_tag_concurrently() {
    let (_dir, store) = new_store();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let root = store.root().to_path_buf();
            std::thread::spawn(move || {
                let store = Store::open(&root).expect("open");
                for i in 0..10 {
                    let img = build_image(&store, &format!("t{t}-{i}"), 1);
                    store
                        .set_tag(&format!("thread{t}/img{i}:latest"), &img.manifest)
                        .expect("tag");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(store.list_tags().expect("list").len(), 40);
    assert_eq!(read_index(&store).manifests.len(), 40);
}
