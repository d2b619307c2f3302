//! The registry launcher, token server and fault proxy, checked with real HTTP requests
//! and with `skopeo`. These tests need `docker-registry` and `skopeo` installed and fail
//! (never skip) without them.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use pybuild_testsupport::http;
use pybuild_testsupport::registry::{Fault, FaultProxy, Registry, RegistryAuth};
use sha2::{Digest, Sha256};

/// The tiny image's config blob (its one layer is an empty tar archive of 1024 bytes).
/// Pushing may compress the layer, but the config blob stays byte for byte.
fn tiny_config() -> Vec<u8> {
    let diff_id = format!("sha256:{:x}", Sha256::digest([0u8; 1024]));
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes()
}

/// Writes a one-layer OCI image layout at `dir` whose index names it `tag`; returns the
/// manifest's digest.
fn write_tiny_layout(dir: &Path, tag: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = format!("{:x}", Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    // An empty tar archive: two zero blocks.
    let layer = vec![0u8; 1024];
    let (layer_digest, layer_size) = put(&layer);
    let (config_digest, config_size) = put(&tiny_config());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{layer_size}}}]}}"#
    );
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#
    );
    fs::write(dir.join("index.json"), index).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_digest
}

/// Runs skopeo with the given arguments (no signature policy, no stored credentials).
fn skopeo(args: &[&str]) -> Output {
    let auth = tempfile::tempdir().unwrap();
    let auth_file = auth.path().join("auth.json");
    fs::write(&auth_file, "{}").unwrap();
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run skopeo ({e}); install it with `apt-get install skopeo`")
        })
}

/// Pushes a tiny layout to `host/repo:tag` with optional `--dest-creds`.
fn push(host: &str, repo: &str, creds: Option<&str>) -> Output {
    let layout = tempfile::tempdir().unwrap();
    write_tiny_layout(layout.path(), "v1");
    let src = format!("oci:{}:v1", layout.path().display());
    let dest = format!("docker://{host}/{repo}:v1");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args)
}

fn inspect(host: &str, repo: &str, creds: Option<&str>) -> Output {
    let target = format!("docker://{host}/{repo}:v1");
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--creds", creds]);
    }
    args.push(target.as_str());
    skopeo(&args)
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn anonymous_registry_answers_and_counts_requests() {
    let registry = Registry::start(RegistryAuth::None);
    assert!(registry.host().starts_with("127.0.0.1:"));
    let response = http::get(&registry.host(), "/v2/", &[]).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let missing = http::get(&registry.host(), "/v2/nothing/manifests/latest", &[]).unwrap();
    assert_eq!(missing.status, 404);
    let waited = registry.wait_requests("GET", "/v2/nothing/", 1, Duration::from_secs(5));
    assert_eq!(waited, 1, "{}", registry.log());
    assert_eq!(
        registry.requests("GET", "/v2/nothing/"),
        1,
        "{}",
        registry.log()
    );
    assert!(registry.requests("GET", "/v2/") >= 2);
    assert!(registry.storage_dir().is_dir());
}

#[test]
fn anonymous_registry_takes_a_skopeo_push() {
    let registry = Registry::start(RegistryAuth::None);
    let output = push(&registry.host(), "tiny/image", None);
    assert_ok(&output, "skopeo copy");
    let output = inspect(&registry.host(), "tiny/image", None);
    assert_ok(&output, "skopeo inspect");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("\"Digest\": \"sha256:"), "{text}");
    assert!(
        registry.requests("PUT", "/v2/tiny/image/manifests/v1") >= 1,
        "{}",
        registry.log()
    );
    assert!(
        registry
            .storage_dir()
            .join("docker/registry/v2/repositories/tiny/image")
            .is_dir()
    );
}

#[test]
fn dropping_the_registry_stops_it_and_removes_its_files() {
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let dir = registry.work_dir().to_path_buf();
    drop(registry);
    assert!(!dir.exists());
    assert!(http::get(&host, "/v2/", &[]).is_err());
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn credentials() -> (String, String) {
    ("tester".to_owned(), "s3cret-pass".to_owned())
}

#[test]
fn basic_auth_registry_checks_credentials() {
    let (user, password) = credentials();
    let registry = Registry::start(RegistryAuth::Basic {
        user: user.clone(),
        password: password.clone(),
    });
    let host = registry.host();
    let anonymous = http::get(&host, "/v2/", &[]).unwrap();
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let good = basic(&user, &password);
    let ok = http::get(&host, "/v2/", &[("Authorization", &good)]).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let bad = basic(&user, "wrong");
    let denied = http::get(&host, "/v2/", &[("Authorization", &bad)]).unwrap();
    assert_eq!(denied.status, 401);

    let creds = format!("{user}:{password}");
    assert_ok(
        &push(&host, "basic/image", Some(&creds)),
        "skopeo copy with credentials",
    );
    assert_ok(
        &inspect(&host, "basic/image", Some(&creds)),
        "skopeo inspect with credentials",
    );
    let refused = push(&host, "basic/other", Some(&format!("{user}:wrong")));
    assert!(
        !refused.status.success(),
        "a push with wrong credentials succeeded"
    );
    let refused = push(&host, "basic/other", None);
    assert!(!refused.status.success(), "an anonymous push succeeded");
}

#[test]
fn token_auth_registry_accepts_tokens_from_its_token_server() {
    let (user, password) = credentials();
    let registry = Registry::start(RegistryAuth::Token {
        user: user.clone(),
        password: password.clone(),
    });
    let host = registry.host();
    let tokens = registry.token_server().expect("a token server");
    let anonymous = http::get(&host, "/v2/", &[]).unwrap();
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("realm=\"{}\"", tokens.realm())),
        "{challenge}"
    );
    assert!(challenge.contains(&format!(
        "service=\"{}\"",
        pybuild_testsupport::registry::SERVICE
    )));

    let query = format!(
        "/token?service={}&scope=repository%3Atoken%2Fimage%3Apull%2Cpush",
        pybuild_testsupport::registry::SERVICE
    );
    let refused = http::get(&tokens.host(), &query, &[]).unwrap();
    assert_eq!(refused.status, 401, "anonymous token request");
    let wrong = basic(&user, "wrong");
    let refused = http::get(&tokens.host(), &query, &[("Authorization", &wrong)]).unwrap();
    assert_eq!(refused.status, 401, "token request with a wrong password");
    let good = basic(&user, &password);
    let granted = http::get(&tokens.host(), &query, &[("Authorization", &good)]).unwrap();
    assert_eq!(granted.status, 200, "{}", granted.text());
    let answer: serde_json::Value = serde_json::from_slice(&granted.body).unwrap();
    let token = answer["token"].as_str().expect("a token").to_owned();
    assert_eq!(answer["access_token"].as_str(), Some(token.as_str()));

    let bearer = format!("Bearer {token}");
    let ok = http::get(&host, "/v2/", &[("Authorization", &bearer)]).unwrap();
    assert_eq!(ok.status, 200, "{}\n{}", ok.text(), registry.log());
    // The token's scope lets it start an upload in its repository, not in another one.
    let upload = http::request(
        &host,
        "POST",
        "/v2/token/image/blobs/uploads/",
        &[("Authorization", &bearer)],
        &[],
    )
    .unwrap();
    assert_eq!(upload.status, 202, "{}\n{}", upload.text(), registry.log());
    let elsewhere = http::request(
        &host,
        "POST",
        "/v2/token/other/blobs/uploads/",
        &[("Authorization", &bearer)],
        &[],
    )
    .unwrap();
    assert_eq!(elsewhere.status, 401);

    let creds = format!("{user}:{password}");
    assert_ok(
        &push(&host, "token/image", Some(&creds)),
        "skopeo copy with credentials",
    );
    assert_ok(
        &inspect(&host, "token/image", Some(&creds)),
        "skopeo inspect with credentials",
    );
    let refused = push(&host, "token/other", Some(&format!("{user}:wrong")));
    assert!(
        !refused.status.success(),
        "a push with wrong credentials succeeded"
    );
    assert!(tokens.requests().iter().any(|r| r.ends_with(" 200")));
}

/// A registry holding the tiny image as `tiny/image:v1`, with a proxy in front of it;
/// returns them with the digest of the image's config blob.
fn proxied_registry() -> (Registry, FaultProxy, String) {
    let registry = Registry::start(RegistryAuth::None);
    assert_ok(&push(&registry.host(), "tiny/image", None), "skopeo copy");
    let proxy = FaultProxy::start(&registry.host());
    let config = format!("sha256:{:x}", Sha256::digest(tiny_config()));
    (registry, proxy, config)
}

#[test]
fn proxy_forwards_pushes_pulls_and_ranges() {
    let registry = Registry::start(RegistryAuth::None);
    let proxy = FaultProxy::start(&registry.host());
    assert_eq!(proxy.upstream(), registry.host());
    // A whole push through the proxy: uploads follow the rewritten Location headers.
    assert_ok(
        &push(&proxy.host(), "via/proxy", None),
        "skopeo copy through the proxy",
    );
    assert_ok(
        &inspect(&proxy.host(), "via/proxy", None),
        "skopeo inspect through the proxy",
    );
    let seen = proxy.requests();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("PUT /v2/via/proxy/manifests/v1")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.starts_with("PUT /v2/via/proxy/blobs/uploads/")),
        "{seen:?}"
    );
    assert!(registry.requests("PUT", "/v2/via/proxy/manifests/v1") >= 1);

    let upload = http::request(
        &proxy.host(),
        "POST",
        "/v2/via/proxy/blobs/uploads/",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(upload.status, 202);
    let location = upload.header("location").unwrap_or_default();
    assert!(!location.contains(&registry.host()), "{location}");

    let config = tiny_config();
    let digest = format!("sha256:{:x}", Sha256::digest(&config));
    let path = format!("/v2/via/proxy/blobs/{digest}");
    let range = http::get(&proxy.host(), &path, &[("Range", "bytes=0-9")]).unwrap();
    assert_eq!(range.status, 206);
    assert_eq!(range.body.len(), 10);
    let head = http::request(&proxy.host(), "HEAD", &path, &[], &[]).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(config.len().to_string().as_str())
    );
    let whole = http::get(&proxy.host(), &path, &[]).unwrap();
    assert_eq!(whole.body, config);
}

#[test]
fn proxy_injects_server_errors_then_forwards() {
    let (_registry, proxy, _) = proxied_registry();
    proxy.set(Fault::ServerError {
        path: "/manifests/".to_owned(),
        times: 2,
    });
    let path = "/v2/tiny/image/manifests/v1";
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    assert_eq!(
        http::get(&proxy.host(), "/v2/", &[]).unwrap().status,
        200,
        "unmatched path"
    );
    assert_eq!(http::get(&proxy.host(), path, &accept).unwrap().status, 500);
    assert_eq!(http::get(&proxy.host(), path, &accept).unwrap().status, 500);
    assert_eq!(http::get(&proxy.host(), path, &accept).unwrap().status, 200);
    assert_eq!(proxy.requests().len(), 4);
}

#[test]
fn proxy_corrupts_one_byte_of_matching_bodies() {
    let (registry, proxy, config) = proxied_registry();
    let path = format!("/v2/tiny/image/blobs/{config}");
    let original = http::get(&registry.host(), &path, &[]).unwrap();
    assert_eq!(original.body, tiny_config());
    proxy.set(Fault::CorruptBody {
        path: "/blobs/".to_owned(),
    });
    let corrupted = http::get(&proxy.host(), &path, &[]).unwrap();
    assert_eq!(corrupted.status, 200);
    assert_eq!(corrupted.body.len(), original.body.len());
    let differing = original
        .body
        .iter()
        .zip(&corrupted.body)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 1);
    proxy.set(Fault::None);
    assert_eq!(
        http::get(&proxy.host(), &path, &[]).unwrap().body,
        original.body
    );
}

#[test]
fn proxy_cuts_a_matching_body_once() {
    let (_registry, proxy, config) = proxied_registry();
    let path = format!("/v2/tiny/image/blobs/{config}");
    proxy.set(Fault::CutAfter {
        path: config.clone(),
        after: 100,
    });
    let cut = http::get(&proxy.host(), &path, &[]).unwrap();
    assert_eq!(cut.status, 200);
    let length = tiny_config().len();
    assert_eq!(
        cut.header("content-length"),
        Some(length.to_string().as_str())
    );
    assert_eq!(cut.body.len(), 100);
    let whole = http::get(&proxy.host(), &path, &[]).unwrap();
    assert_eq!(whole.body.len(), length);
}

#[test]
fn proxy_rate_limits_with_retry_after() {
    let (_registry, proxy, _) = proxied_registry();
    proxy.set(Fault::TooManyRequests {
        path: "/tags/list".to_owned(),
        times: 1,
        secs: 7,
    });
    let limited = http::get(&proxy.host(), "/v2/tiny/image/tags/list", &[]).unwrap();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    let listed = http::get(&proxy.host(), "/v2/tiny/image/tags/list", &[]).unwrap();
    assert_eq!(listed.status, 200);
    assert!(listed.text().contains("\"v1\""), "{}", listed.text());
}

#[test]
fn proxy_delays_matching_responses() {
    let (_registry, proxy, _) = proxied_registry();
    proxy.set(Fault::Delay {
        path: "/tags/list".to_owned(),
        millis: 400,
    });
    let start = std::time::Instant::now();
    assert_eq!(http::get(&proxy.host(), "/v2/", &[]).unwrap().status, 200);
    assert!(start.elapsed() < Duration::from_millis(400));
    let start = std::time::Instant::now();
    let listed = http::get(&proxy.host(), "/v2/tiny/image/tags/list", &[]).unwrap();
    assert_eq!(listed.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(400));
}
