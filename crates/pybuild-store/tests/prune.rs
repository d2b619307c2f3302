//! Garbage collection and verification.

mod common;

use std::fs;

use common::{build_image, delete_blob, names, new_store};
use pybuild_oci::Digest;
use pybuild_store::{Error, Problem, PruneOptions, Store};

fn snapshot(store: &Store, diff_id: &Digest, bytes: usize) {
    store
        .ensure_snapshot(diff_id, |dir| {
            fs::write(dir.join("f"), vec![1u8; bytes])?;
            Ok(())
        })
        .expect("snapshot");
}

#[test]
fn prune_removes_only_unreachable_blobs() {
    let (_dir, store) = new_store();
    let kept = build_image(&store, "kept", 2);
    store.set_tag("kept:latest", &kept.manifest).expect("tag");
    let (orphan, orphan_size) = store.put_blob(&[9u8; 1000]).expect("orphan");
    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(report.blob_bytes, orphan_size);
    assert!(!store.has_blob(&orphan));
    for d in [
        &kept.manifest,
        &kept.config,
        &kept.layers[0],
        &kept.layers[1],
    ] {
        assert!(store.has_blob(&d.digest), "{:?} kept", d.digest);
    }
    // Nothing left to do.
    let again = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(again.blobs_removed, 0);
    assert_eq!(again.bytes_freed(), 0);

    // Untagging makes the whole image garbage.
    assert!(store.remove_tag("kept:latest").expect("rmi"));
    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(report.blobs_removed, 4);
    assert!(names(&store.root().join("blobs/sha256")).is_empty());
}

#[test]
fn cache_records_keep_blobs_and_snapshots_until_all() {
    let (_dir, store) = new_store();
    let (blob, _) = store.put_blob(b"cached layer").expect("blob");
    let (other, _) = store.put_blob(b"unreferenced").expect("blob");
    let snap_kept = Digest::of(b"cached snapshot");
    let snap_gone = Digest::of(b"stray snapshot");
    snapshot(&store, &snap_kept, 10);
    snapshot(&store, &snap_gone, 300);
    let key = Digest::of(b"cache key");
    let record = format!(r#"{{"blobs":["{blob}"],"snapshots":["{snap_kept}"],"step":"RUN x"}}"#);
    store
        .put_cache_record(&key, record.as_bytes())
        .expect("record");
    assert_eq!(
        store.get_cache_record(&key).expect("get").as_deref(),
        Some(record.as_bytes())
    );
    assert_eq!(
        store.get_cache_record(&Digest::of(b"miss")).expect("get"),
        None
    );

    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert!(store.has_blob(&blob), "kept by the record");
    assert!(!store.has_blob(&other));
    assert!(store.has_snapshot(&snap_kept));
    assert!(!store.has_snapshot(&snap_gone));
    assert_eq!(report.snapshots_removed, 1);
    assert_eq!(report.snapshot_bytes, 300);
    assert_eq!(report.cache_records_removed, 0);

    let report = store.prune(&PruneOptions { all: true }).expect("prune all");
    assert_eq!(report.cache_records_removed, 1);
    assert_eq!(store.get_cache_record(&key).expect("get"), None);
    assert!(!store.has_blob(&blob));
    assert!(!store.has_snapshot(&snap_kept));
}

#[test]
fn snapshots_of_tagged_images_are_kept() {
    let (_dir, store) = new_store();
    let img = build_image(&store, "snap", 2);
    store.set_tag("snap:latest", &img.manifest).expect("tag");
    for d in &img.diff_ids {
        snapshot(&store, d, 5);
    }
    let stray = Digest::of(b"not in any config");
    snapshot(&store, &stray, 5);
    // Not a digest name: foreign, left alone by prune, reported by verify.
    fs::create_dir(store.root().join("snapshots/not-a-digest")).expect("mkdir");
    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(report.snapshots_removed, 1);
    assert!(img.diff_ids.iter().all(|d| store.has_snapshot(d)));
    assert!(!store.has_snapshot(&stray));
    assert!(store.root().join("snapshots/not-a-digest").exists());

    assert!(store.remove_tag("snap:latest").expect("rmi"));
    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(report.snapshots_removed, 2);
}

#[test]
fn prune_waits_for_nobody_and_respects_leases() {
    let (_dir, store) = new_store();
    let (orphan, _) = store.put_blob(b"in-flight build output").expect("blob");
    let lease = store.lease().expect("lease");
    assert!(matches!(
        store.prune(&PruneOptions::default()),
        Err(Error::Locked { .. })
    ));
    // A live writer is a lease too.
    drop(lease);
    let writer = store.blob_writer().expect("writer");
    assert!(matches!(
        Store::open(store.root())
            .expect("open")
            .prune(&PruneOptions::default()),
        Err(Error::Locked { .. })
    ));
    assert!(store.has_blob(&orphan));
    drop(writer);
    store
        .prune(&PruneOptions::default())
        .expect("prune once idle");
    assert!(!store.has_blob(&orphan));
}

#[test]
fn prune_cleans_tmp_and_broken_records() {
    let (_dir, store) = new_store();
    fs::write(store.root().join("tmp/blob-1-2-3"), vec![0u8; 50]).expect("w");
    fs::create_dir(store.root().join("tmp/snap-1-2-4")).expect("mkdir");
    // Written behind the store's back (put_cache_record would refuse it).
    fs::write(
        store
            .root()
            .join("cache")
            .join(format!("{}.json", Digest::of(b"k").hex())),
        b"not json",
    )
    .expect("w");
    assert!(matches!(
        store.put_cache_record(&Digest::of(b"k2"), b"[1,2]"),
        Err(Error::InvalidCacheRecord { .. })
    ));
    let report = store.prune(&PruneOptions::default()).expect("prune");
    assert_eq!(report.temp_entries_removed, 2);
    assert_eq!(report.temp_bytes, 50);
    assert_eq!(report.cache_records_removed, 1);
    assert!(names(&store.root().join("tmp")).is_empty());
    assert!(names(&store.root().join("cache")).is_empty());
}

#[test]
fn prune_refuses_to_guess_past_a_corrupt_manifest() {
    let (_dir, store) = new_store();
    let img = build_image(&store, "c", 1);
    store.set_tag("c:latest", &img.manifest).expect("tag");
    let (orphan, _) = store.put_blob(b"garbage").expect("orphan");
    let path = store.blob_path(&img.manifest.digest);
    fs::remove_file(&path).expect("rm");
    fs::write(&path, vec![b'x'; img.manifest.size as usize]).expect("same size, wrong bytes");
    assert!(matches!(
        store.prune(&PruneOptions::default()),
        Err(Error::Corrupt { .. })
    ));
    assert!(store.has_blob(&orphan), "nothing removed");
    assert!(store.has_blob(&img.layers[0].digest));
}

#[test]
fn verify_reports_problems() {
    let (_dir, store) = new_store();
    let img = build_image(&store, "v", 2);
    store.set_tag("v:latest", &img.manifest).expect("tag");
    snapshot(&store, &img.diff_ids[0], 1);
    store
        .put_cache_record(&Digest::of(b"k"), b"{}")
        .expect("record");
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.blobs_checked, 4);
    assert_eq!(report.tags_checked, 1);
    assert_eq!(report.snapshots_checked, 1);
    assert_eq!(report.cache_records_checked, 1);

    delete_blob(&store, &img.layers[1].digest);
    fs::create_dir(store.root().join("snapshots/bogus")).expect("mkdir");
    fs::write(store.root().join("blobs/sha256/stray"), b"?").expect("w");
    fs::write(store.root().join("cache/weird.json"), b"{}").expect("w");
    let report = store.verify().expect("verify");
    let problems = report.problems;
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems.contains(&Problem::MissingBlob {
        tag: "v:latest".into(),
        digest: img.layers[1].digest.clone(),
    }));
    assert!(problems.contains(&Problem::BadSnapshot {
        path: store.root().join("snapshots/bogus"),
    }));
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::BadBlobFile { .. }))
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::BadCacheRecord { .. }))
    );
    // Problems render for humans.
    assert!(problems.iter().all(|p| !p.to_string().is_empty()));
}
