//! Malformed registry answers, end to end through `pybuild pull`: a scripted server
//! answers what no real registry would (oversized or mislabelled manifests, absurd
//! layer counts, lying lengths, redirect loops, slow-loris headers, endless 429s); a
//! fault proxy in front of a real registry rate-limits with `Retry-After`. Each case:
//! a clear error naming the registry and repository, no tag, `store verify` ok.

use std::process::Output;
use std::time::{Duration, Instant};

use pybuild_oci::Digest;
use pybuild_testsupport::registry::{
    Canned, Fault, FaultProxy, Registry, RegistryAuth, ScriptedRegistry,
};

use crate::layers::{Tar, gzip, push_image};
use crate::{Tally, World, all_output, oci_arch};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len()})
}

fn manifest_json(config: &serde_json::Value, layers: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .unwrap()
}

/// A small valid layer: (blob, diff ID).
fn small_layer(seed: &str) -> (Vec<u8>, String) {
    let mut t = Tar::default();
    t.file(b"hello", seed.as_bytes());
    let tar = t.end();
    (gzip(&tar), Digest::of(&tar).to_string())
}

struct Server {
    s: ScriptedRegistry,
}

impl Server {
    fn blob(&self, repo: &str, bytes: &[u8]) {
        self.s.route(
            &format!("/v2/{repo}/blobs/{}", Digest::of(bytes)),
            Canned::ok("application/octet-stream", bytes.to_vec()),
        );
    }

    fn manifest(&self, repo: &str, media_type: &str, bytes: Vec<u8>) {
        self.s.route(
            &format!("/v2/{repo}/manifests/1"),
            Canned::Answer {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), media_type.into()),
                    (
                        "Docker-Content-Digest".into(),
                        Digest::of(&bytes).to_string(),
                    ),
                ],
                body: bytes,
                content_length: None,
            },
        );
    }

    /// A complete valid image in `repo` whose config and manifest `edit` may change.
    fn image(&self, repo: &str, layer_count: usize, config_diff_ids: usize) {
        let (blob, diff_id) = small_layer(repo);
        self.blob(repo, &blob);
        let config = config_json(&vec![diff_id; config_diff_ids]);
        self.blob(repo, &config);
        let layers = vec![descriptor(GZIP, &blob); layer_count];
        self.manifest(
            repo,
            OCI_MANIFEST,
            manifest_json(&descriptor(OCI_CONFIG, &config), &layers),
        );
    }
}

fn pull(world: &World, reference: &str) -> (Output, Duration) {
    let started = Instant::now();
    let out = world
        .pybuild()
        .env("PYBUILD_REGISTRY_TIMEOUT", "3")
        .env("PYBUILD_REGISTRY_RETRIES", "1")
        .args(["pull", reference])
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// The pull failed clearly, quickly, and left nothing tagged or inconsistent.
fn refused(
    world: &World,
    host: &str,
    repo: &str,
    out: &Output,
    took: Duration,
) -> Result<(), String> {
    let text = all_output(out);
    if out.status.success() {
        return Err(format!("pull succeeded: {text}"));
    }
    if text.contains("panicked") {
        return Err(format!("panicked: {text}"));
    }
    if !text.contains(host) || !text.contains(repo) {
        return Err(format!("the error does not name {host} and {repo}: {text}"));
    }
    if took > Duration::from_secs(30) {
        return Err(format!("took {took:?}"));
    }
    if std::env::var_os("ROBUST_SHOW").is_some() {
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("  {repo} ({took:.1?}): {last}\n").as_bytes(),
        );
    }
    let inspect = world
        .pybuild()
        .args(["inspect", &format!("{host}/{repo}:1")])
        .output()
        .unwrap();
    if inspect.status.success() {
        return Err(format!("tagged: {}", all_output(&inspect)));
    }
    world.verify()
}

#[test]
fn malformed_registry_answers() {
    let world = World::new("registry");
    let server = Server {
        s: ScriptedRegistry::start(),
    };
    let host = server.s.host();
    let mut tally = Tally::new("malformed registry answers");
    type Setup = Box<dyn Fn(&Server, &str)>;
    let mut cases: Vec<(&str, Setup)> = Vec::new();

    cases.push(("manifest-over-4mib", Box::new(|s, repo| {
        let mut body = b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"annotations\":{\"x\":\"".to_vec();
        body.extend(std::iter::repeat_n(b'a', 5 << 20));
        body.extend_from_slice(b"\"}}");
        s.manifest(repo, OCI_MANIFEST, body);
    })));
    cases.push((
        "manifest-digest-mismatch",
        Box::new(|s, repo| {
            s.image(repo, 1, 1);
            let (blob, diff_id) = small_layer(repo);
            let config = config_json(&[diff_id]);
            let body = manifest_json(&descriptor(OCI_CONFIG, &config), &[descriptor(GZIP, &blob)]);
            s.s.route(
                &format!("/v2/{repo}/manifests/1"),
                Canned::Answer {
                    status: 200,
                    headers: vec![
                        ("Content-Type".into(), OCI_MANIFEST.into()),
                        (
                            "Docker-Content-Digest".into(),
                            Digest::of(b"other").to_string(),
                        ),
                    ],
                    body,
                    content_length: None,
                },
            );
        }),
    ));
    cases.push((
        "manifest-as-html",
        Box::new(|s, repo| {
            s.manifest(
                repo,
                "text/html",
                b"<html><body>login required</body></html>".to_vec(),
            );
        }),
    ));
    cases.push((
        "schema1-manifest",
        Box::new(|s, repo| {
            s.manifest(
                repo,
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
                br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[],"history":[]}"#.to_vec(),
            );
        }),
    ));
    cases.push((
        "manifest-not-json",
        Box::new(|s, repo| {
            s.manifest(repo, OCI_MANIFEST, b"\x00\xff not json".to_vec());
        }),
    ));
    cases.push(("helm-chart-config", Box::new(helm_chart)));
    cases.push((
        "config-100000-diff-ids",
        Box::new(|s, repo| s.image(repo, 1, 100_000)),
    ));
    cases.push((
        "manifest-20000-layers",
        Box::new(|s, repo| s.image(repo, 20_000, 20_000)),
    ));
    cases.push((
        "config-over-16mib",
        Box::new(|s, repo| {
            let (blob, diff_id) = small_layer(repo);
            s.blob(repo, &blob);
            let mut config = config_json(&[diff_id]);
            config.pop();
            config.extend_from_slice(b",\"x\":\"");
            config.extend(std::iter::repeat_n(b'a', 17 << 20));
            config.extend_from_slice(b"\"}");
            s.blob(repo, &config);
            s.manifest(
                repo,
                OCI_MANIFEST,
                manifest_json(&descriptor(OCI_CONFIG, &config), &[descriptor(GZIP, &blob)]),
            );
        }),
    ));
    cases.push(("digest-path-traversal", Box::new(|s, repo| {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:../../../../etc/passwd","size":10},"layers":[]}"#;
        s.manifest(repo, OCI_MANIFEST, body.to_vec());
    })));
    cases.push((
        "layer-size-exabytes",
        Box::new(|s, repo| {
            let (blob, diff_id) = small_layer(repo);
            s.blob(repo, &blob);
            let config = config_json(&[diff_id]);
            s.blob(repo, &config);
            let mut layer = descriptor(GZIP, &blob);
            layer["size"] = serde_json::json!(1u64 << 62);
            s.manifest(
                repo,
                OCI_MANIFEST,
                manifest_json(&descriptor(OCI_CONFIG, &config), &[layer]),
            );
        }),
    ));
    cases.push((
        "blob-length-lies",
        Box::new(|s, repo| {
            s.image(repo, 1, 1);
            let (blob, _) = small_layer(repo);
            s.s.route(
                &format!("/v2/{repo}/blobs/{}", Digest::of(&blob)),
                Canned::Answer {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                    content_length: Some(blob.len() as u64 * 4),
                    body: blob,
                },
            );
        }),
    ));
    cases.push((
        "blob-short-body",
        Box::new(|s, repo| {
            s.image(repo, 1, 1);
            let (blob, _) = small_layer(repo);
            let mut short = blob.clone();
            short.truncate(blob.len() / 2);
            s.s.route(
                &format!("/v2/{repo}/blobs/{}", Digest::of(&blob)),
                Canned::ok("application/octet-stream", short),
            );
        }),
    ));
    cases.push(("index-20000-foreign-platforms", Box::new(|s, repo| {
        let entry = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(b"m").to_string(), "size": 1,
            "platform": {"os": "plan9", "architecture": "mips"}});
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": vec![entry; 20_000]})).unwrap();
        s.manifest(repo, OCI_INDEX, index);
    })));
    cases.push((
        "endless-redirects",
        Box::new(|s, repo| {
            let path = format!("/v2/{repo}/manifests/1");
            s.s.route(
                &path,
                Canned::Redirect {
                    location: path.clone(),
                },
            );
        }),
    ));
    cases.push((
        "redirect-ping-pong",
        Box::new(|s, repo| {
            let a = format!("/v2/{repo}/manifests/1");
            let b = format!("/v2/{repo}/elsewhere");
            s.s.route(
                &a,
                Canned::Redirect {
                    location: b.clone(),
                },
            );
            s.s.route(
                &b,
                Canned::Redirect {
                    location: a.clone(),
                },
            );
        }),
    ));
    cases.push((
        "slow-loris-headers",
        Box::new(|s, repo| {
            s.s.route(
                &format!("/v2/{repo}/manifests/1"),
                Canned::SlowHeaders {
                    every_millis: 200,
                    total_millis: 60_000,
                },
            );
        }),
    ));
    cases.push((
        "slow-loris-blob-headers",
        Box::new(|s, repo| {
            s.image(repo, 1, 1);
            let (blob, _) = small_layer(repo);
            s.s.route(
                &format!("/v2/{repo}/blobs/{}", Digest::of(&blob)),
                Canned::SlowHeaders {
                    every_millis: 200,
                    total_millis: 60_000,
                },
            );
        }),
    ));
    cases.push((
        "endless-429",
        Box::new(|s, repo| {
            s.s.route(
                &format!("/v2/{repo}/manifests/1"),
                Canned::Answer {
                    status: 429,
                    headers: vec![
                        ("Retry-After".into(), "1".into()),
                        ("Content-Type".into(), "application/json".into()),
                    ],
                    body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#
                        .to_vec(),
                    content_length: None,
                },
            );
        }),
    ));
    cases.push((
        "endless-500",
        Box::new(|s, repo| {
            s.s.route(
                &format!("/v2/{repo}/manifests/1"),
                Canned::Answer {
                    status: 500,
                    headers: vec![],
                    body: b"oops".to_vec(),
                    content_length: None,
                },
            );
        }),
    ));

    for (name, setup) in &cases {
        let repo = format!("r/{name}");
        setup(&server, &repo);
        let (out, took) = pull(&world, &format!("{host}/{repo}:1"));
        tally.case(name, refused(&world, &host, &repo, &out, took));
    }

    // 429 with Retry-After from a proxy in front of a real registry: waited out, then
    // the pull succeeds.
    let registry = Registry::start(RegistryAuth::None);
    let (blob, diff_id) = small_layer("real");
    push_image(
        &registry.host(),
        "real/app",
        "1",
        &[(blob, diff_id.parse().unwrap(), GZIP)],
    );
    let proxy = FaultProxy::start(&registry.host());
    proxy.set(Fault::TooManyRequests {
        path: "/manifests/".into(),
        times: 2,
        secs: 1,
    });
    let started = Instant::now();
    let out = world
        .pybuild()
        .args(["pull", &format!("{}/real/app:1", proxy.host())])
        .output()
        .unwrap();
    let took = started.elapsed();
    let result = if !out.status.success() {
        Err(format!("pull after 429s failed: {}", all_output(&out)))
    } else if took < Duration::from_secs(2) {
        Err(format!("Retry-After not honoured: took {took:?}"))
    } else {
        world.verify()
    };
    tally.case("429-retry-after-then-ok", result);
    tally.finish();
}

/// Pulls `HOST/repo:1` from a scripted server and returns the combined output.
fn refused_pull(setup: impl Fn(&Server, &str)) -> String {
    let world = World::new("registry-regression");
    let server = Server {
        s: ScriptedRegistry::start(),
    };
    let repo = "r/regression";
    setup(&server, repo);
    let (out, took) = pull(&world, &format!("{}/{repo}:1", server.s.host()));
    refused(&world, &server.s.host(), repo, &out, took).unwrap();
    all_output(&out)
}

#[test]
fn pull_refuses_config_whose_diff_ids_do_not_match_the_layers() {
    let text = refused_pull(|s, repo| s.image(repo, 1, 100_000));
    assert!(text.contains("100000 diff IDs"), "{text}");
}

#[test]
fn pull_refuses_absurd_layer_counts() {
    let text = refused_pull(|s, repo| s.image(repo, 20_000, 20_000));
    assert!(text.contains("20000 layers"), "{text}");
}

#[test]
fn pull_refuses_artifacts_that_are_not_images() {
    let text = refused_pull(helm_chart);
    assert!(text.contains("not an image config"), "{text}");
}

/// A Helm chart pushed as an OCI artifact: a valid manifest whose config is not an
/// image config.
fn helm_chart(s: &Server, repo: &str) {
    let config = br#"{"name":"chart","version":"1.0.0"}"#;
    s.blob(repo, config);
    let (blob, _) = small_layer(repo);
    s.blob(repo, &blob);
    s.manifest(
        repo,
        OCI_MANIFEST,
        manifest_json(
            &descriptor("application/vnd.cncf.helm.config.v1+json", config),
            &[descriptor(
                "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                &blob,
            )],
        ),
    );
}

#[test]
fn no_matching_platform_error_names_each_platform_once() {
    let text = refused_pull(|s, repo| {
        let entry = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::of(b"m").to_string(),
            "size": 1, "platform": {"os": "plan9", "architecture": "mips"}});
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": OCI_INDEX, "manifests": vec![entry; 20_000]}))
        .unwrap();
        s.manifest(repo, OCI_INDEX, index);
    });
    assert_eq!(text.matches("plan9/mips").count(), 1, "{text}");
}
