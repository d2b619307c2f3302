//! Snapshots: atomic creation, failed fills, racing fills.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::{names, new_store};
use pybuild_oci::Digest;
use pybuild_store::{Error, Store};

#[test]
fn ensure_snapshot_creates_once() {
    let (_dir, store) = new_store();
    let diff_id = Digest::of(b"layer one");
    assert!(!store.has_snapshot(&diff_id));
    let calls = AtomicUsize::new(0);
    let path = store
        .ensure_snapshot(&diff_id, |dir| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert!(dir.starts_with(store.root().join("tmp")), "filled in tmp");
            assert!(names(dir).is_empty(), "starts empty");
            fs::create_dir(dir.join("etc"))?;
            fs::write(dir.join("etc/hostname"), b"box")?;
            Ok(())
        })
        .expect("snapshot");
    assert_eq!(path, store.snapshot_path(&diff_id));
    assert_eq!(path, store.root().join("snapshots").join(diff_id.hex()));
    assert!(store.has_snapshot(&diff_id));
    assert_eq!(
        fs::read(path.join("etc/hostname")).expect("content"),
        b"box"
    );
    let again = store
        .ensure_snapshot(&diff_id, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("exists");
    assert_eq!(again, path);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "fill not called for an existing snapshot"
    );
    assert!(names(&store.root().join("tmp")).is_empty());
}

#[test]
fn failed_fill_leaves_nothing() {
    let (_dir, store) = new_store();
    let diff_id = Digest::of(b"doomed");
    let err = store
        .ensure_snapshot(&diff_id, |dir| {
            fs::create_dir_all(dir.join("ro/inner"))?;
            fs::write(dir.join("ro/inner/f"), b"partial")?;
            fs::set_permissions(dir.join("ro"), fs::Permissions::from_mode(0o555))?;
            Err("tar stream truncated".into())
        })
        .expect_err("fill fails");
    match err {
        Error::Fill { diff_id: d, source } => {
            assert_eq!(d, diff_id);
            assert_eq!(source.to_string(), "tar stream truncated");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(!store.has_snapshot(&diff_id));
    assert!(names(&store.root().join("snapshots")).is_empty());
    assert!(names(&store.root().join("tmp")).is_empty());
}

#[test]
fn racing_fills_leave_exactly_one() {
    let (_dir, store) = new_store();
    let diff_id = Digest::of(b"contended");
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let root = store.root().to_path_buf();
            let barrier = Arc::clone(&barrier);
            let diff_id = diff_id.clone();
            std::thread::spawn(move || {
                let store = Store::open(&root).expect("open");
                store.ensure_snapshot(&diff_id, |dir| {
                    fs::write(dir.join("who"), t.to_string())?;
                    fs::create_dir(dir.join("sub"))?;
                    fs::write(dir.join("sub/data"), vec![7u8; 100_000])?;
                    // Everyone fills before anyone renames: a real race.
                    barrier.wait();
                    Ok(())
                })
            })
        })
        .collect();
    let paths: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").expect("ensure"))
        .collect();
    assert!(paths.iter().all(|p| *p == store.snapshot_path(&diff_id)));
    assert_eq!(names(&store.root().join("snapshots")), [diff_id.hex()]);
    let snap = store.snapshot_path(&diff_id);
    assert_eq!(names(&snap), ["sub", "who"], "one complete copy, not a mix");
    let who: usize = fs::read_to_string(snap.join("who"))
        .expect("who")
        .parse()
        .expect("a thread id");
    assert!(who < threads);
    assert_eq!(
        fs::read(snap.join("sub/data")).expect("data").len(),
        100_000
    );
    assert!(
        names(&store.root().join("tmp")).is_empty(),
        "losers cleaned up"
    );
}

#[test]
fn temp_dirs_are_scratch() {
    let (_dir, store) = new_store();
    let t = store.temp_dir().expect("temp dir");
    let path = t.path().to_path_buf();
    assert!(path.starts_with(store.root().join("tmp")));
    fs::create_dir(path.join("d")).expect("mkdir");
    fs::set_permissions(path.join("d"), fs::Permissions::from_mode(0o500)).expect("chmod");
    drop(t);
    assert!(!path.exists());
}
