//! Blobs: round trips, digest checks, concurrent writers, corruption detection.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};

use common::{names, new_store};
use pybuild_oci::{Digest, ImageIndex, canonical_json};
use pybuild_store::{Error, READ_BLOB_LIMIT, Store};

#[test]
fn blob_round_trip() {
    let (_dir, store) = new_store();
    let (d, n) = store.put_blob(b"hello").expect("put");
    assert_eq!(d, Digest::of(b"hello"));
    assert_eq!(n, 5);
    assert!(store.has_blob(&d));
    assert_eq!(store.read_blob(&d).expect("read"), b"hello");
    let path = store.blob_path(&d);
    assert_eq!(path, store.root().join("blobs/sha256").join(d.hex()));
    let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "blobs are read-only");
    // Idempotent.
    assert_eq!(store.put_blob(b"hello").expect("again"), (d.clone(), 5));
    let mut text = String::new();
    store
        .open_blob(&d)
        .expect("open")
        .read_to_string(&mut text)
        .expect("read");
    assert_eq!(text, "hello");

    // Streaming writer, in pieces.
    let mut w = store.blob_writer().expect("writer");
    for _ in 0..1000 {
        w.write_all(b"0123456789").expect("write");
    }
    assert_eq!(w.written(), 10_000);
    let expected = Digest::of("0123456789".repeat(1000).as_bytes());
    let (d2, n2) = w.commit(Some(&expected)).expect("commit");
    assert_eq!((d2.clone(), n2), (expected, 10_000));
    assert_eq!(store.read_blob(&d2).expect("read").len(), 10_000);

    // From a reader, with the right expectation.
    let (d3, _) = store
        .put_blob_from(&b"from a reader"[..], Some(&Digest::of(b"from a reader")))
        .expect("put_blob_from");
    assert!(store.has_blob(&d3));

    // JSON goes through canonical_json.
    let index = ImageIndex::new();
    let (d4, n4) = store.put_json(&index).expect("put_json");
    assert_eq!(d4, Digest::of(&canonical_json(&index)));
    assert_eq!(n4, canonical_json(&index).len() as u64);

    assert!(names(&store.root().join("tmp")).is_empty(), "no temp left");
}

#[test]
fn digest_mismatch_leaves_nothing() {
    let (_dir, store) = new_store();
    let wrong = Digest::of(b"something else");
    let err = store
        .put_blob_from(&b"actual content"[..], Some(&wrong))
        .expect_err("mismatch must fail");
    match err {
        Error::DigestMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Digest::of(b"actual content"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(names(&store.root().join("blobs/sha256")).is_empty());
    assert!(names(&store.root().join("tmp")).is_empty());

    // Same through the writer API.
    let mut w = store.blob_writer().expect("writer");
    w.write_all(b"abc").expect("write");
    assert!(matches!(
        w.commit(Some(&wrong)),
        Err(Error::DigestMismatch { .. })
    ));
    assert!(names(&store.root().join("blobs/sha256")).is_empty());
    assert!(names(&store.root().join("tmp")).is_empty());

    // Dropping an uncommitted writer leaves nothing either.
    let mut w = store.blob_writer().expect("writer");
    w.write_all(b"abandoned").expect("write");
    assert_eq!(names(&store.root().join("tmp")).len(), 1);
    drop(w);
    assert!(names(&store.root().join("tmp")).is_empty());
    assert!(names(&store.root().join("blobs/sha256")).is_empty());
}

#[test]
fn failing_reader_is_a_read_error_and_leaves_nothing() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("network down"));
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }
    let (_dir, store) = new_store();
    let err = store.put_blob_from(Failing(3), None).expect_err("fails");
    assert!(matches!(err, Error::Read { .. }), "{err}");
    assert!(names(&store.root().join("blobs/sha256")).is_empty());
    assert!(names(&store.root().join("tmp")).is_empty());
}

#[test]
fn concurrent_writers_of_one_blob() {
    let (dir, store) = new_store();
    let content: Arc<Vec<u8>> = Arc::new((0..1_000_000u32).map(|i| (i % 251) as u8).collect());
    let expected = Digest::of(&content);
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let root = store.root().to_path_buf();
            let content = Arc::clone(&content);
            let barrier = Arc::clone(&barrier);
            let expected = expected.clone();
            std::thread::spawn(move || {
                // Separate Store values, as separate processes would have.
                let store = Store::open(&root).expect("open");
                barrier.wait();
                if i % 2 == 0 {
                    store.put_blob_from(&content[..], Some(&expected))
                } else {
                    store.put_blob(&content)
                }
            })
        })
        .collect();
    for h in handles {
        let (d, n) = h.join().expect("thread").expect("put");
        assert_eq!(d, expected);
        assert_eq!(n, 1_000_000);
    }
    assert_eq!(names(&store.root().join("blobs/sha256")), [expected.hex()]);
    assert_eq!(store.read_blob(&expected).expect("valid"), *content);
    assert!(names(&store.root().join("tmp")).is_empty());
    drop(dir);
}

#[test]
fn read_blob_detects_corruption_on_disk() {
    let (_dir, store) = new_store();
    let (d, _) = store.put_blob(b"precious bytes").expect("put");
    let path = store.blob_path(&d);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod +w");
    let mut bytes = fs::read(&path).expect("read");
    bytes[3] ^= 0x20;
    fs::write(&path, &bytes).expect("corrupt it");
    match store.read_blob(&d) {
        Err(Error::Corrupt { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains(&Digest::of(&bytes).to_string()), "{reason}");
        }
        other => panic!("corruption not detected: {other:?}"),
    }
    let report = store.verify().expect("verify");
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(
            |p| matches!(p, pybuild_store::Problem::CorruptBlob { digest, .. } if *digest == d)
        ),
        "{:?}",
        report.problems
    );
    // Re-putting the right content heals the file (a streamed commit replaces it).
    store
        .put_blob_from(&b"precious bytes"[..], Some(&d))
        .expect("re-put");
    assert_eq!(store.read_blob(&d).expect("healed"), b"precious bytes");
}

#[test]
fn read_blob_refuses_huge_and_missing_blobs() {
    let (_dir, store) = new_store();
    // A sparse file under some digest name: the size check comes before any read.
    let d = Digest::of(b"pretend");
    let file = fs::File::create(store.blob_path(&d)).expect("create");
    file.set_len(READ_BLOB_LIMIT + 1).expect("set_len");
    drop(file);
    assert!(matches!(
        store.read_blob(&d),
        Err(Error::TooLarge { size, .. }) if size == READ_BLOB_LIMIT + 1
    ));
    let missing = Digest::of(b"never stored");
    assert!(!store.has_blob(&missing));
    assert!(matches!(
        store.read_blob(&missing),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.open_blob(&missing),
        Err(Error::NotFound { .. })
    ));
}
