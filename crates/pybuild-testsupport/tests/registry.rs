//! The registry launcher, token server and fault proxy, checked with real HTTP requests
//! and with `skopeo`. These tests need `docker-registry` and `skopeo` installed and fail
//! (never skip) without them.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use pybuild_testsupport::http;
use pybuild_testsupport::registry::{Registry, RegistryAuth};
use sha2::{Digest, Sha256};

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
    let diff_id = layer_digest.clone();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let (config_digest, config_size) = put(config.as_bytes());
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
    // The access log is written asynchronously to the response.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while registry.requests("GET", "/v2/nothing/") < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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
