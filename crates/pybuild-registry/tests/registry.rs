//! Pull and push against a real registry: Debian's `docker-registry` started by
//! `pybuild_testsupport::registry` on 127.0.0.1 (anonymous, Basic or token auth),
//! with a fault-injecting proxy for the failure cases, and `skopeo` as the
//! independent reader. Missing tools fail the tests (they are required).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pybuild_oci::{
    Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, Platform, RootFs, media_type,
};
use pybuild_registry::{
    Anonymous, Client, ClientOptions, CredentialSource, Credentials, Error, Event, Progress,
    PushOptions, Reference, RegistryConfig, StaticCredentials, pull, push, resolve,
};
use pybuild_store::Store;
use pybuild_testsupport::registry::{Fault, FaultProxy, Registry, RegistryAuth};

/// Records every event.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Progress for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().expect("lock").push(event.clone());
    }
}

impl Recorder {
    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().expect("lock").iter().filter(|e| f(e)).count()
    }
}

fn client_with(config: RegistryConfig, creds: Arc<dyn CredentialSource>) -> Client {
    // Short backoff keeps the retry tests fast.
    let options = ClientOptions {
        backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::with_options(config, creds, options)
}

fn anon_client() -> Client {
    client_with(RegistryConfig::default(), Arc::new(Anonymous))
}

fn linux(arch: &str) -> Platform {
    Platform {
        architecture: arch.into(),
        os: "linux".into(),
        os_version: None,
        os_features: Vec::new(),
        variant: None,
    }
}

/// Build a one-layer image in `store` from `files`; returns its manifest descriptor.
fn make_image(
    store: &Store,
    arch: &str,
    files: &[(&str, Vec<u8>)],
    compression: pybuild_layer::Compression,
) -> Descriptor {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
    let mut writer = store.blob_writer().expect("writer");
    let options = pybuild_layer::WriteOptions {
        compression,
        mtime_clamp: Some(0),
    };
    let info = pybuild_layer::write_layer(dir.path(), &options, &mut writer).expect("layer");
    writer.commit(Some(&info.digest)).expect("commit");
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![info.diff_id.clone()],
        },
        ..ImageConfig::default()
    };
    let (config_digest, config_size) = store.put_json(&config).expect("config");
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: Descriptor::new(media_type::OCI_CONFIG, config_digest, config_size),
        layers: vec![Descriptor::new(info.media_type, info.digest, info.size)],
        annotations: BTreeMap::new(),
    };
    let (d, size) = store.put_json(&manifest).expect("manifest");
    Descriptor::new(media_type::OCI_MANIFEST, d, size)
}

fn small_image(store: &Store, seed: &str) -> Descriptor {
    make_image(
        store,
        "amd64",
        &[
            ("app/main.py", format!("print('{seed}')\n").into_bytes()),
            ("etc/seed", seed.as_bytes().to_vec()),
        ],
        pybuild_layer::Compression::default(),
    )
}

fn store_in(dir: &Path, name: &str) -> Store {
    Store::open(&dir.join(name)).expect("store")
}

fn reference(host: &str, rest: &str) -> Reference {
    Reference::parse(&format!("{host}/{rest}")).expect("reference")
}

fn skopeo_digest(image: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("skopeo is required for these tests (apt-get install skopeo): {e}")
        });
    assert!(
        out.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo JSON");
    v["Digest"].as_str().expect("Digest").to_string()
}

/// Every blob of the manifest is in the store and hashes to its digest.
fn assert_complete(store: &Store, manifest: &Digest) {
    let bytes = store.read_blob(manifest).expect("manifest in store");
    let m: ImageManifest = serde_json::from_slice(&bytes).expect("manifest");
    for d in std::iter::once(&m.config).chain(&m.layers) {
        let mut f = store.open_blob(&d.digest).expect("blob present");
        let mut h = pybuild_oci::Sha256Writer::new(std::io::sink());
        std::io::copy(&mut f, &mut h).expect("read");
        let (digest, size, _) = h.finish();
        assert_eq!((digest, size), (d.digest.clone(), d.size));
    }
}

#[test]
fn push_skopeo_pull_repush_and_mount() {
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let desc = small_image(&src, "one");
    let client = anon_client();
    let target = reference(&host, "team/app:v1");

    let rec = Recorder::default();
    let result = push(&client, &src, &desc, &target, &PushOptions::default(), &rec).expect("push");
    assert_eq!(result.digest, desc.digest);
    assert_eq!((result.uploaded, result.skipped, result.mounted), (2, 0, 0));
    assert_eq!(rec.count(|e| matches!(e, Event::BlobDone { .. })), 2);
    assert_eq!(rec.count(|e| matches!(e, Event::ManifestPushed { .. })), 1);

    // An independent client sees the same manifest digest.
    assert_eq!(
        skopeo_digest(&format!("{host}/team/app:v1")),
        desc.digest.to_string()
    );

    // Pull back into another store.
    let dst = store_in(tmp.path(), "dst");
    let rec = Recorder::default();
    let pulled = pull(&client, &dst, &target, &linux("amd64"), &rec).expect("pull");
    assert_eq!(pulled.descriptor.digest, desc.digest);
    assert_eq!(pulled.descriptor.size, desc.size);
    assert!(pulled.index.is_none());
    assert_complete(&dst, &desc.digest);
    assert_eq!(rec.count(|e| matches!(e, Event::Resolved { .. })), 1);
    dst.set_tag("127.0.0.1/team/app:v1", &pulled.descriptor)
        .expect("tag");
    drop(pulled);

    // Pulling again downloads nothing.
    let rec = Recorder::default();
    pull(&client, &dst, &target, &linux("amd64"), &rec).expect("pull again");
    assert_eq!(rec.count(|e| matches!(e, Event::BlobStarted { .. })), 0);
    assert_eq!(rec.count(|e| matches!(e, Event::BlobSkipped { .. })), 2);

    // Pushing again uploads nothing.
    let rec = Recorder::default();
    let again =
        push(&client, &src, &desc, &target, &PushOptions::default(), &rec).expect("push again");
    assert_eq!((again.uploaded, again.skipped), (0, 2));
    assert_eq!(rec.count(|e| matches!(e, Event::BlobStarted { .. })), 0);
    assert_eq!(rec.count(|e| matches!(e, Event::BlobSkipped { .. })), 2);

    // To another repository of the same registry: mounted, not uploaded.
    let other = reference(&host, "other/app:v1");
    let rec = Recorder::default();
    let options = PushOptions {
        mount_from: Some("team/app".into()),
        ..PushOptions::default()
    };
    let mounted = push(&client, &src, &desc, &other, &options, &rec).expect("push with mount");
    assert_eq!((mounted.uploaded, mounted.mounted), (0, 2), "{mounted:?}");
    assert_eq!(rec.count(|e| matches!(e, Event::BlobMounted { .. })), 2);
    assert_eq!(registry.requests("PATCH", "/v2/other/app/"), 0);
    assert_eq!(
        skopeo_digest(&format!("{host}/other/app:v1")),
        desc.digest.to_string()
    );

    // A pinned pull by digest.
    let pinned = reference(&host, &format!("other/app@{}", desc.digest));
    let r = resolve(
        &client,
        &pinned,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect("resolve");
    assert_eq!(r.manifest_digest, desc.digest);
    assert_eq!(r.config.architecture, "amd64");
}

#[test]
fn chunked_upload_of_a_larger_layer() {
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    // ~600 KiB of incompressible-ish data, stored uncompressed, 128 KiB chunks.
    let data = pybuild_testsupport::data::noise(600 << 10, 1);
    let desc = make_image(
        &src,
        "amd64",
        &[("big.bin", data)],
        pybuild_layer::Compression::None,
    );
    let client = anon_client();
    let target = reference(&host, "big:1");
    let options = PushOptions {
        chunk_size: 128 << 10,
        ..PushOptions::default()
    };
    let result = push(
        &client,
        &src,
        &desc,
        &target,
        &options,
        &pybuild_registry::NoProgress,
    )
    .expect("push");
    assert_eq!(result.uploaded, 2);
    let patches =
        registry.wait_requests("PATCH", "/v2/big/blobs/uploads/", 4, Duration::from_secs(5));
    assert!(patches >= 4, "expected chunked PATCHes, saw {patches}");
    let dst = store_in(tmp.path(), "dst");
    let pulled = pull(
        &client,
        &dst,
        &target,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect("pull");
    assert_eq!(pulled.descriptor.digest, desc.digest);
    assert_complete(&dst, &desc.digest);
}

fn check_auth(auth: RegistryAuth) {
    let registry = Registry::start(auth);
    let host = registry.host();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let desc = small_image(&src, "auth");
    let target = reference(&host, "private/app:1");

    let good = client_with(
        RegistryConfig::default(),
        Arc::new(StaticCredentials::single(
            &host,
            Credentials::basic("alice", "right-pass"),
        )),
    );
    push(
        &good,
        &src,
        &desc,
        &target,
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("push with credentials");
    let dst = store_in(tmp.path(), "dst");
    let pulled = pull(
        &good,
        &dst,
        &target,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect("pull with credentials");
    assert_eq!(pulled.descriptor.digest, desc.digest);

    let bad = client_with(
        RegistryConfig::default(),
        Arc::new(StaticCredentials::single(
            &host,
            Credentials::basic("alice", "wrong-pass-XYZ"),
        )),
    );
    let err = resolve(
        &bad,
        &target,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("wrong password");
    let text = err.to_string();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(
        text.contains(&host) && text.contains("private/app"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-pass-XYZ") && !format!("{err:?}").contains("wrong-pass-XYZ"),
        "{text}"
    );
    let err = push(
        &bad,
        &src,
        &desc,
        &reference(&host, "private/other:1"),
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect_err("wrong password push");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");

    let none = anon_client();
    let err = resolve(
        &none,
        &target,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("no credentials");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains(&host), "{err}");
}

#[test]
fn basic_auth_right_and_wrong_credentials() {
    check_auth(RegistryAuth::Basic {
        user: "alice".into(),
        password: "right-pass".into(),
    });
}

#[test]
fn token_auth_right_and_wrong_credentials() {
    check_auth(RegistryAuth::Token {
        user: "alice".into(),
        password: "right-pass".into(),
    });
}

#[test]
fn index_with_two_platforms() {
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let amd = small_image(&src, "amd64");
    let arm = make_image(
        &src,
        "arm64",
        &[("etc/seed", b"arm64".to_vec())],
        pybuild_layer::Compression::default(),
    );
    let mut index = ImageIndex::new();
    for (d, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let mut d = d.clone();
        d.platform = Some(linux(arch));
        index.manifests.push(d);
    }
    let (index_digest, index_size) = src.put_json(&index).expect("index");
    let index_desc = Descriptor::new(media_type::OCI_INDEX, index_digest.clone(), index_size);
    let client = anon_client();
    let target = reference(&host, "multi:1");
    let result = push(
        &client,
        &src,
        &index_desc,
        &target,
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("push index");
    assert_eq!(result.digest, index_digest);
    assert_eq!(result.uploaded, 4);

    let r = resolve(
        &client,
        &target,
        &linux("arm64"),
        &pybuild_registry::NoProgress,
    )
    .expect("arm64");
    assert_eq!(r.manifest_digest, arm.digest);
    assert_eq!(r.index_digest.as_ref(), Some(&index_digest));
    assert_eq!(r.config.architecture, "arm64");

    let dst = store_in(tmp.path(), "dst");
    let pulled = pull(
        &client,
        &dst,
        &target,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect("amd64");
    assert_eq!(pulled.descriptor.digest, amd.digest);
    assert_eq!(pulled.descriptor.platform, Some(linux("amd64")));
    assert_eq!(
        pulled.index.as_ref().map(|d| &d.digest),
        Some(&index_digest)
    );
    assert_complete(&dst, &amd.digest);
    assert!(!dst.has_blob(&arm.digest));
    dst.set_tag("multi:1", &pulled.descriptor)
        .expect("tag the platform manifest");

    let err = resolve(
        &client,
        &target,
        &linux("s390x"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("no s390x");
    let text = err.to_string();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err:?}");
    assert!(
        text.contains("linux/s390x")
            && text.contains("linux/amd64")
            && text.contains("linux/arm64"),
        "{text}"
    );
}

#[test]
fn docker_hub_mirror_serves_unqualified_names() {
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let desc = small_image(&src, "busybox");
    let client = anon_client();
    push(
        &client,
        &src,
        &desc,
        &reference(&host, "library/busybox:latest"),
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("seed mirror");

    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).expect("mkdir");
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n"),
    )
    .expect("write");
    let config = RegistryConfig::load(Some(&file)).expect("config");
    let mirrored = client_with(config, Arc::new(Anonymous));
    let busybox = Reference::parse("busybox").expect("reference");
    assert_eq!(busybox.to_string(), "docker.io/library/busybox");
    let rec = Recorder::default();
    let r =
        resolve(&mirrored, &busybox, &linux("amd64"), &rec).expect("resolve through the mirror");
    assert_eq!(r.manifest_digest, desc.digest);
    assert_eq!(r.endpoint.host, host);
    assert!(r.endpoint.mirror);
    let dst = store_in(tmp.path(), "dst");
    let pulled =
        pull(&mirrored, &dst, &busybox, &linux("amd64"), &rec).expect("pull through the mirror");
    assert_eq!(pulled.descriptor.digest, desc.digest);

    // The command-line form of the same setting.
    let mut config = RegistryConfig::default();
    config.add_mirror("docker.io", &host);
    let flagged = client_with(config, Arc::new(Anonymous));
    let r = resolve(
        &flagged,
        &busybox,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect("resolve");
    assert_eq!(r.manifest_digest, desc.digest);
}

#[test]
fn faults_corruption_retries_and_resume() {
    let registry = Registry::start(RegistryAuth::None);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let desc = small_image(&src, "faults");
    let client = anon_client();
    push(
        &client,
        &src,
        &desc,
        &reference(&registry.host(), "f/app:1"),
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("push");
    let proxy = FaultProxy::start(&registry.host());
    let via = reference(&proxy.host(), "f/app:1");
    let manifest: ImageManifest =
        serde_json::from_slice(&src.read_blob(&desc.digest).expect("read")).expect("manifest");
    let layer = manifest.layers[0].clone();

    // A manifest whose body does not match Docker-Content-Digest is refused.
    proxy.set(Fault::CorruptBody {
        path: "/manifests/".into(),
    });
    let err = resolve(
        &client,
        &via,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("corrupt manifest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&proxy.host()), "{err}");
    // ... and by digest too.
    let pinned = reference(&proxy.host(), &format!("f/app@{}", desc.digest));
    let err = resolve(
        &client,
        &pinned,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("corrupt pinned manifest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");

    // A corrupted layer never reaches the store.
    proxy.set(Fault::CorruptBody {
        path: format!("/blobs/{}", layer.digest),
    });
    let dst = store_in(tmp.path(), "dst");
    let err = pull(
        &client,
        &dst,
        &via,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("corrupt layer");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(!dst.has_blob(&layer.digest));

    // Server errors and rate limiting are retried.
    proxy.set(Fault::ServerError {
        path: "/manifests/".into(),
        times: 2,
    });
    let rec = Recorder::default();
    resolve(&client, &via, &linux("amd64"), &rec).expect("after 500s");
    assert_eq!(rec.count(|e| matches!(e, Event::Retry { .. })), 2);
    proxy.set(Fault::TooManyRequests {
        path: "/manifests/".into(),
        times: 1,
        secs: 1,
    });
    resolve(
        &client,
        &via,
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect("after 429");

    // A dropped connection mid-layer resumes with Range.
    proxy.set(Fault::CutAfter {
        path: format!("/blobs/{}", layer.digest),
        after: 100,
    });
    let rec = Recorder::default();
    let pulled = pull(&client, &dst, &via, &linux("amd64"), &rec).expect("pull after a cut");
    assert_eq!(pulled.descriptor.digest, desc.digest);
    assert_complete(&dst, &desc.digest);
    assert!(rec.count(|e| matches!(e, Event::Retry { .. })) >= 1);
    // Resumed, not restarted: exactly the layer's bytes crossed the network.
    let transferred: Vec<u64> = rec
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            Event::BlobDone {
                digest,
                transferred,
            } if *digest == layer.digest => Some(*transferred),
            _ => None,
        })
        .collect();
    assert_eq!(transferred, [layer.size]);

    // A failed upload PUT (not repeatable as such) restarts the blob's upload.
    let fresh = small_image(&src, "fresh");
    proxy.set(Fault::ServerError {
        path: "digest=sha256".into(),
        times: 1,
    });
    let rec = Recorder::default();
    let pushed = push(
        &client,
        &src,
        &fresh,
        &reference(&proxy.host(), "f/fresh:1"),
        &PushOptions::default(),
        &rec,
    )
    .expect("push after a 500");
    assert_eq!(pushed.uploaded, 2);
    assert!(rec.count(|e| matches!(e, Event::Retry { .. })) >= 1);
    assert_eq!(
        skopeo_digest(&format!("{}/f/fresh:1", registry.host())),
        fresh.digest.to_string()
    );
    let ranged = proxy
        .requests()
        .iter()
        .filter(|r| r.contains(&layer.digest.to_string()))
        .count();
    assert!(ranged >= 2, "{:?}", proxy.requests());
}

#[test]
fn blob_longer_than_its_descriptor_is_rejected() {
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let desc = small_image(&src, "liar");
    let client = anon_client();
    push(
        &client,
        &src,
        &desc,
        &reference(&host, "liar:real"),
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("push");
    // The same blobs under a manifest that understates the layer's size.
    let mut manifest: ImageManifest =
        serde_json::from_slice(&src.read_blob(&desc.digest).expect("read")).expect("manifest");
    manifest.layers[0].size -= 10;
    let (d, size) = src.put_json(&manifest).expect("put");
    let lying = Descriptor::new(media_type::OCI_MANIFEST, d, size);
    push(
        &client,
        &src,
        &lying,
        &reference(&host, "liar:short"),
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("push the lying manifest");
    let dst = store_in(tmp.path(), "dst");
    let err = pull(
        &client,
        &dst,
        &reference(&host, "liar:short"),
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("oversized blob");
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err:?}");
    assert!(!dst.has_blob(&manifest.layers[0].digest));
}

/// A server that trickles a blob a byte at a time never trips the per-read timeout;
/// the minimum-rate guard cuts the transfer (and its retries) with a clear error, and
/// nothing of the blob reaches the store.
#[test]
fn trickling_blob_is_cut_by_the_minimum_rate() {
    let registry = Registry::start(RegistryAuth::None);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = store_in(tmp.path(), "src");
    let desc = small_image(&src, "trickle");
    push(
        &anon_client(),
        &src,
        &desc,
        &reference(&registry.host(), "t/app:1"),
        &PushOptions::default(),
        &pybuild_registry::NoProgress,
    )
    .expect("push");
    let manifest: ImageManifest =
        serde_json::from_slice(&src.read_blob(&desc.digest).expect("read")).expect("manifest");
    let layer = manifest.layers[0].clone();
    let proxy = FaultProxy::start(&registry.host());
    proxy.set(Fault::Trickle {
        path: format!("/blobs/{}", layer.digest),
        millis: 200,
    });
    // A 2 s window: 5 bytes/s is far below the floor, yet each read gets a byte
    // within 200 ms, so the read timeout alone would wait for hours.
    let client = Client::with_options(
        RegistryConfig::default(),
        Arc::new(Anonymous),
        ClientOptions {
            read_timeout: Duration::from_secs(2),
            retries: 1,
            backoff: Duration::from_millis(20),
            ..ClientOptions::default()
        },
    );
    let dst = store_in(tmp.path(), "dst");
    let started = std::time::Instant::now();
    let err = pull(
        &client,
        &dst,
        &reference(&proxy.host(), "t/app:1"),
        &linux("amd64"),
        &pybuild_registry::NoProgress,
    )
    .expect_err("a trickling blob must fail");
    let text = err.to_string();
    assert!(text.contains("stalled"), "{text}");
    assert!(text.contains("t/app"), "{text}");
    assert!(!dst.has_blob(&layer.digest));
    // Cut after the windows (2 attempts of 2 s), long before the blob's
    // {layer.size} bytes would have trickled through at 5 bytes/s.
    let trickle_secs = layer.size / 5;
    assert!(
        started.elapsed() < Duration::from_secs(trickle_secs / 2),
        "took {:?} for a {}-byte blob",
        started.elapsed(),
        layer.size
    );
}

/// `ADD <url>` downloads: a conditional GET answered 304 is "not modified", with
/// nothing written; a 304 to an unconditional GET is refused (a lying server must
/// not make the caller reuse content it never validated); a 200 reports the body's
/// digest, its ETag and its Last-Modified.
#[test]
fn conditional_downloads() {
    use pybuild_testsupport::registry::{Canned, ScriptedRegistry};
    let server = ScriptedRegistry::start();
    let url = format!("http://{}/file.txt", server.host());
    let client = anon_client();

    server.route(
        "/file.txt",
        Canned::Answer {
            status: 304,
            headers: Vec::new(),
            body: Vec::new(),
            content_length: None,
        },
    );
    let mut out = Vec::new();
    let fetched =
        pybuild_registry::download_if_changed(&client, &url, Some("\"v1\""), None, &mut out)
            .expect("a 304 to a conditional GET");
    assert_eq!(fetched, None);
    assert!(out.is_empty());
    let fetched =
        pybuild_registry::download_if_changed(&client, &url, None, Some(1_600_000_000), &mut out)
            .expect("a 304 to If-Modified-Since");
    assert_eq!(fetched, None);
    let error = pybuild_registry::download_if_changed(&client, &url, None, None, &mut out)
        .expect_err("a 304 to an unconditional GET");
    let text = error.to_string();
    assert!(text.contains("304") && text.contains(&url), "{text}");

    server.clear();
    server.route(
        "/file.txt",
        Canned::Answer {
            status: 200,
            headers: vec![
                ("ETag".into(), "\"v2\"".into()),
                (
                    "Last-Modified".into(),
                    "Sun, 13 Sep 2020 12:26:40 GMT".into(),
                ),
            ],
            body: b"hello\n".to_vec(),
            content_length: None,
        },
    );
    let fetched =
        pybuild_registry::download_if_changed(&client, &url, Some("\"v1\""), None, &mut out)
            .expect("a changed file")
            .expect("a body");
    assert_eq!(out, b"hello\n");
    assert_eq!(fetched.digest, Digest::of(b"hello\n"));
    assert_eq!(fetched.size, 6);
    assert_eq!(fetched.etag.as_deref(), Some("\"v2\""));
    assert_eq!(fetched.last_modified, Some(1_600_000_000));
}
