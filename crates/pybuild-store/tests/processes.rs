//! Several processes sharing one store. The test binary re-runs itself as the child:
//! `PYBUILD_STORE_TEST_CHILD=<mode>` plus `PYBUILD_STORE_TEST_ROOT` switch the
//! `child_*` tests below from no-ops into the child's work.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{build_image, names};
use pybuild_store::Store;

const MODE: &str = "PYBUILD_STORE_TEST_CHILD";
const ROOT: &str = "PYBUILD_STORE_TEST_ROOT";
const PREFIX: &str = "PYBUILD_STORE_TEST_PREFIX";

fn spawn_child(test: &str, mode: &str, root: &Path, prefix: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env(ROOT, root)
        .env(PREFIX, prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

fn child_env(mode: &str) -> Option<(Store, String)> {
    if std::env::var(MODE).ok()? != mode {
        return None;
    }
    let root = std::env::var_os(ROOT)?;
    let prefix = std::env::var(PREFIX).ok()?;
    Some((Store::open(Path::new(&root)).expect("child open"), prefix))
}

/// Child mode "tag50": tag 50 images.
#[test]
fn child_tag50() {
    let Some((store, prefix)) = child_env("tag50") else {
        return;
    };
    let _lease = store.lease().expect("lease");
    for i in 0..50 {
        let img = build_image(&store, &format!("{prefix}-{i}"), 1);
        store
            .set_tag(&format!("{prefix}/img{i}:latest"), &img.manifest)
            .expect("tag");
    }
}

/// Child mode "churn": write and tag images (with a streamed layer large enough to
/// be caught half-written) until killed.
#[test]
fn child_churn() {
    let Some((store, prefix)) = child_env("churn") else {
        return;
    };
    let _lease = store.lease().expect("lease");
    for i in 0.. {
        let mut img = build_image(&store, &format!("{prefix}-{i}"), 1);
        let big = vec![(i % 256) as u8; 4 << 20];
        let (d, n) = store.put_blob_from(&big[..], None).expect("big layer");
        img.layers.push(pybuild_oci::Descriptor::new(
            pybuild_oci::media_type::OCI_LAYER_GZIP,
            d,
            n,
        ));
        let mut manifest: pybuild_oci::ImageManifest =
            serde_json::from_slice(&store.read_blob(&img.manifest.digest).expect("m"))
                .expect("manifest");
        manifest.layers = img.layers.clone();
        let (md, mn) = store.put_json(&manifest).expect("manifest");
        let desc = pybuild_oci::Descriptor::new(pybuild_oci::media_type::OCI_MANIFEST, md, mn);
        store.set_tag(&format!("{prefix}:{i}"), &desc).expect("tag");
        let _ = store
            .ensure_snapshot(
                &pybuild_oci::Digest::of(format!("snap{i}").as_bytes()),
                |dir| {
                    std::fs::write(dir.join("f"), &big[..1 << 20])?;
                    Ok(())
                },
            )
            .expect("snapshot");
    }
}

#[test]
fn processes_tag_concurrently_without_losing_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = Store::open(&root).expect("open");
    let children: Vec<Child> = ["p1", "p2", "p3"]
        .iter()
        .map(|p| spawn_child("child_tag50", "tag50", &root, p))
        .collect();
    for mut child in children {
        assert!(child.wait().expect("wait").success(), "child failed");
    }
    let tags = store.list_tags().expect("list");
    assert_eq!(tags.len(), 150, "every process's tags survive");
    for p in ["p1", "p2", "p3"] {
        for i in [0, 25, 49] {
            let name = format!("{p}/img{i}:latest");
            let desc = store.resolve(&name).expect("resolve").expect(&name);
            store.image(&desc, None).expect("complete image");
        }
    }
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn kill_9_never_corrupts_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    Store::open(&root).expect("open");
    for (round, delay_ms) in [(0, 0u64), (1, 37), (2, 111)] {
        let prefix = format!("churn{round}");
        let mut child = spawn_child("child_churn", "churn", &root, &prefix);
        // Wait until the child is demonstrably mid-work (a tag exists), then a bit.
        let store = Store::open(&root).expect("open");
        let start = Instant::now();
        while !store
            .list_tags()
            .expect("list")
            .iter()
            .any(|(n, _)| n.starts_with(&prefix))
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "child made no progress"
            );
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("child exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        // Reopen: leftovers are cleaned (the dead child's lease died with it), and
        // everything visible is intact.
        let store = Store::open(&root).expect("reopen");
        assert!(names(&root.join("tmp")).is_empty(), "tmp cleaned");
        let report = store.verify().expect("verify");
        assert!(report.is_ok(), "round {round}: {:?}", report.problems);
        for (name, desc) in store.list_tags().expect("list") {
            let image = store.image(&desc, None).expect(&name);
            for layer in &image.manifest.layers {
                assert!(store.has_blob(&layer.digest), "{name}");
            }
        }
        for snapshot in names(&root.join("snapshots")) {
            let f = root.join("snapshots").join(&snapshot).join("f");
            assert_eq!(std::fs::metadata(&f).expect("complete").len(), 1 << 20);
        }
    }
}
