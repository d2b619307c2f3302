//! `ADD <url>` and the build cache, against a fake [`Downloader`] that plays an HTTP
//! server with validators: a cached step must not fetch a body it already has
//! (BuildKit's HTTP source: `--checksum` decides the key without a request, an
//! unchanged `ETag` or `Last-Modified` gets `304 Not Modified`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use pybuild_context::{Context, PatternMatcher};
use pybuild_graph::{BuildGraph, Options};
use pybuild_oci::Digest;
use pybuild_solver::{
    Backends, DownloadInfo, Downloader, Fetched, NoProgress, SolveOptions, Solved, Validators,
    solve,
};
use pybuild_store::{BoxError, Store};

/// One URL's current state on the fake server.
#[derive(Clone)]
struct Resource {
    body: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<i64>,
}

/// The fake server: answers conditional GETs as RFC 9110 says (`If-None-Match`
/// first, then `If-Modified-Since`) and logs what it sent.
#[derive(Default)]
struct FakeServer {
    resources: Mutex<BTreeMap<String, Resource>>,
    /// (url, "200" | "304") per request.
    log: Mutex<Vec<(String, &'static str)>>,
}

impl FakeServer {
    fn put(&self, url: &str, body: &str, etag: Option<&str>, last_modified: Option<i64>) {
        self.resources.lock().unwrap().insert(
            url.to_string(),
            Resource {
                body: body.as_bytes().to_vec(),
                etag: etag.map(str::to_string),
                last_modified,
            },
        );
    }

    fn take_log(&self) -> Vec<(String, &'static str)> {
        std::mem::take(&mut self.log.lock().unwrap())
    }
}

impl Downloader for FakeServer {
    fn download(
        &self,
        url: &str,
        known: Option<&Validators>,
        out: &mut dyn Write,
    ) -> Result<Fetched, BoxError> {
        let resource = self
            .resources
            .lock()
            .unwrap()
            .get(url)
            .cloned()
            .ok_or_else(|| Box::new(io::Error::other(format!("404 {url}"))) as BoxError)?;
        let not_modified = known.is_some_and(|k| match (&k.etag, &resource.etag) {
            (Some(theirs), Some(ours)) => theirs == ours,
            (Some(_), None) => false,
            (None, _) => {
                k.last_modified.is_some()
                    && resource
                        .last_modified
                        .is_some_and(|lm| lm <= k.last_modified.unwrap_or(i64::MIN))
            }
        });
        if not_modified {
            self.log.lock().unwrap().push((url.to_string(), "304"));
            return Ok(Fetched::NotModified);
        }
        self.log.lock().unwrap().push((url.to_string(), "200"));
        out.write_all(&resource.body)?;
        Ok(Fetched::Body(DownloadInfo {
            digest: Digest::of(&resource.body),
            last_modified: resource.last_modified,
            etag: resource.etag,
        }))
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    context: Context,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let no_patterns: [&str; 0] = [];
        let context = Context::new(&ctx, PatternMatcher::new(&no_patterns).unwrap()).unwrap();
        World {
            _dir: dir,
            store,
            context,
        }
    }

    fn build(
        &self,
        dockerfile: &str,
        server: &FakeServer,
    ) -> Result<Solved, pybuild_solver::Error> {
        let parsed = pybuild_dockerfile::parse(dockerfile).unwrap();
        let graph = BuildGraph::new(&parsed, &Options::default()).unwrap();
        let backends = Backends {
            progress: &NoProgress,
            images: None,
            downloader: Some(server),
            sandbox: None,
            cancel: None,
        };
        solve(
            &self.store,
            &self.context,
            &graph,
            &SolveOptions::default(),
            &backends,
        )
    }
}

const A: &str = "http://files.test/a.txt";
const B: &str = "http://files.test/b.txt";
const C: &str = "http://files.test/c.txt";

fn sha(body: &str) -> String {
    Digest::of(body.as_bytes()).to_string()
}

fn layer_bytes(store: &Store, solved: &Solved) -> Vec<u8> {
    let image = store.image(&solved.manifest, None).unwrap();
    let layer = image.manifest.layers.last().unwrap();
    std::fs::read(store_blob(store.root(), &layer.digest)).unwrap()
}

fn store_blob(root: &Path, digest: &Digest) -> std::path::PathBuf {
    root.join("blobs/sha256").join(digest.hex())
}

#[test]
fn cached_add_url_steps_fetch_no_body() {
    let world = World::new();
    let server = FakeServer::default();
    server.put(A, "by etag\n", Some("\"v1\""), None);
    server.put(B, "by date\n", None, Some(1_600_000_000));
    server.put(C, "by checksum\n", None, Some(1_600_000_000));
    let dockerfile = format!(
        "FROM scratch\nADD {A} /a\nADD {B} /b\nADD --checksum={} {C} /c\n",
        sha("by checksum\n")
    );

    let first = world.build(&dockerfile, &server).unwrap();
    assert_eq!(first.cached_steps, 0);
    assert_eq!(
        server.take_log(),
        [(A.into(), "200"), (B.into(), "200"), (C.into(), "200")]
    );

    // Unchanged: two conditional requests answered 304, none for the checksummed
    // source, every step cached, the same image.
    let second = world.build(&dockerfile, &server).unwrap();
    assert_eq!(second.cached_steps, 3);
    assert_eq!(second.manifest.digest, first.manifest.digest);
    assert_eq!(server.take_log(), [(A.into(), "304"), (B.into(), "304")]);

    // A changed ETag: that body is fetched and the step re-runs; the later steps
    // re-run on top of it (their keys follow the parent), and fetch their bodies
    // then (the checksummed one only now, the 304 one again, unconditionally).
    server.put(A, "by etag, edited\n", Some("\"v2\""), None);
    let third = world.build(&dockerfile, &server).unwrap();
    assert_eq!(third.cached_steps, 0);
    assert_ne!(third.manifest.digest, first.manifest.digest);
    assert_eq!(
        server.take_log(),
        [
            (A.into(), "200"),
            (B.into(), "304"),
            (B.into(), "200"),
            (C.into(), "200")
        ]
    );
    // And the layer written after a 304 holds the file's real bytes and date.
    let layer = layer_bytes(&world.store, &third);
    assert!(!layer.is_empty());
    let fourth = world.build(&dockerfile, &server).unwrap();
    assert_eq!(fourth.manifest.digest, third.manifest.digest);
    assert_eq!(fourth.cached_steps, 3);
}

#[test]
fn a_later_last_modified_is_a_new_layer_even_with_the_same_bytes() {
    // The date becomes the file's mtime, so it is part of the step's key.
    let world = World::new();
    let server = FakeServer::default();
    server.put(B, "same\n", None, Some(1_600_000_000));
    let dockerfile = format!("FROM scratch\nADD {B} /b\n");
    let first = world.build(&dockerfile, &server).unwrap();
    server.put(B, "same\n", None, Some(1_700_000_000));
    let second = world.build(&dockerfile, &server).unwrap();
    assert_eq!(second.cached_steps, 0);
    assert_ne!(second.manifest.digest, first.manifest.digest);
}

#[test]
fn a_body_that_changes_between_the_304_and_the_fetch_is_refused() {
    // The key was decided on the recorded digest; a different body must not be
    // written under it.
    let world = World::new();
    let server = FakeServer::default();
    server.put(A, "first\n", Some("\"v1\""), None);
    let dockerfile = format!("FROM scratch\nADD {A} /a\n");
    world.build(&dockerfile, &server).unwrap();
    // Same ETag (the server lies, or changed between the two requests), other body;
    // with --no-cache the step misses and fetches the body.
    server.put(A, "second\n", Some("\"v1\""), None);
    let options = SolveOptions {
        no_cache: true,
        ..SolveOptions::default()
    };
    let parsed = pybuild_dockerfile::parse(&dockerfile).unwrap();
    let graph = BuildGraph::new(&parsed, &Options::default()).unwrap();
    let backends = Backends {
        progress: &NoProgress,
        images: None,
        downloader: Some(&server),
        sandbox: None,
        cancel: None,
    };
    let error = solve(&world.store, &world.context, &graph, &options, &backends)
        .expect_err("a changed body under the same validators fails");
    let text = error.to_string();
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains(&sha("first\n")), "{text}");
}

#[test]
fn a_wrong_checksum_fails_when_the_body_is_fetched() {
    let world = World::new();
    let server = FakeServer::default();
    server.put(C, "content\n", None, None);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let dockerfile = format!("FROM scratch\nADD --checksum={wrong} {C} /c\n");
    let error = world.build(&dockerfile, &server).expect_err("mismatch");
    let text = error.to_string();
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains(&sha("content\n")), "{text}");
}
