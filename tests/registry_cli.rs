//! End to end: the registry commands (`login`, `logout`, `push`, `pull`, `build --push`)
//! against Debian's docker-registry on 127.0.0.1 with Basic and token authentication.
//! Credentials live in a `DOCKER_CONFIG` inside the test's temp dir and must never
//! appear in any output, error or stored file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pybuild_testsupport::cmd::{self, all_output, run_ok, run_with_stdin};
use pybuild_testsupport::registry::{Registry, RegistryAuth};
use pybuild_testsupport::world::write_busybox_context;

const USER: &str = "ci-user";
const PASSWORD: &str = "s3cret-Pa55word-xyzzy";

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("pybuild-registry-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// pybuild with a store `root` under the temp dir and docker's config there too.
    fn pybuild(&self, root: &str) -> Command {
        cmd::pybuild_at(
            env!("CARGO_BIN_EXE_pybuild"),
            &self.path(root),
            &self.path("docker-config"),
        )
    }

    /// The busybox base built into store `root` as `busybox`, then an app image.
    fn build_app(&self, root: &str) {
        let ctx = self.path("busybox-ctx");
        if !ctx.exists() {
            write_busybox_context(&ctx);
            let app = self.path("app-ctx");
            fs::create_dir_all(&app).unwrap();
            fs::write(app.join("Dockerfile"), "FROM busybox\nCOPY hello /hello\n").unwrap();
            fs::write(app.join("hello"), "hello\n").unwrap();
        }
        run_ok(
            self.pybuild(root)
                .args(["build", "-q", "-t", "busybox"])
                .arg(&ctx),
        );
        run_ok(
            self.pybuild(root)
                .args(["build", "-q", "-t", "app"])
                .arg(self.path("app-ctx")),
        );
    }
}

fn login(world: &World, host: &str, password: &str) -> Output {
    run_with_stdin(
        world
            .pybuild("store")
            .args(["login", "-u", USER, "--password-stdin", host]),
        format!("{password}\n").as_bytes(),
    )
}

/// Every file under `dir`, read as bytes, must not contain `needle`.
fn assert_absent_in_tree(dir: &Path, needle: &str) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            assert_absent_in_tree(&path, needle);
        } else if meta.is_file() {
            let bytes = fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains the secret",
                path.display()
            );
        }
    }
}

fn login_push_pull_logout(auth: RegistryAuth) {
    let world = World::new();
    let registry = Registry::start(auth);
    let host = registry.host();
    world.build_app("store");

    // Without credentials the push is refused, naming the registry and repository.
    let out = world
        .pybuild("store")
        .args(["push", "app", &format!("{host}/team/app:v1")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(text.contains(&host), "{text}");
    assert!(text.contains("team/app"), "{text}");

    // A wrong password: refused, and the password is not echoed.
    let out = login(&world, &host, "wrong-password-123");
    assert!(
        out.status.success(),
        "login only stores: {}",
        all_output(&out)
    );
    let out = world
        .pybuild("store")
        .args(["push", "app", &format!("{host}/team/app:v1")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!all_output(&out).contains("wrong-password-123"));

    // The right one: stored in docker's config.json, mode 0600.
    let out = login(&world, &host, PASSWORD);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(!all_output(&out).contains(PASSWORD));
    let config = world.path("docker-config/config.json");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(json["auths"][&host]["auth"].is_string(), "{json}");
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = run_ok(
        world
            .pybuild("store")
            .args(["push", "app", &format!("{host}/team/app:v1")]),
    );
    let pushed_digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(pushed_digest.starts_with("sha256:"), "{pushed_digest}");
    assert!(!all_output(&out).contains(PASSWORD));
    let first = all_output(&out);
    assert!(first.contains("0 already there"), "{first}");

    // Again: every blob is already there.
    let out = run_ok(
        world
            .pybuild("store")
            .args(["push", "app", &format!("{host}/team/app:v1")]),
    );
    assert!(
        all_output(&out).contains(" 0 blob(s) uploaded"),
        "{}",
        all_output(&out)
    );

    // Another repository of the same registry: the blobs are mounted, not uploaded.
    let patches_before = registry.requests("PATCH", "/blobs/uploads/");
    let puts_before = registry.requests("PUT", "/blobs/uploads/");
    let out = run_ok(
        world
            .pybuild("store")
            .args(["push", "app", &format!("{host}/other/app:v1")]),
    );
    let text = all_output(&out);
    assert!(text.contains(" 0 blob(s) uploaded"), "{text}");
    assert!(!text.contains(" 0 mounted"), "{text}");
    assert_eq!(
        registry.requests("PATCH", "/blobs/uploads/"),
        patches_before
    );
    assert_eq!(registry.requests("PUT", "/blobs/uploads/"), puts_before);

    // `build --push` names the pushed image in the metadata file.
    let meta = world.path("meta.json");
    run_ok(
        world
            .pybuild("store")
            .args([
                "build",
                "-q",
                "--push",
                "-t",
                &format!("{host}/team/built:v2"),
            ])
            .arg("--metadata-file")
            .arg(&meta)
            .arg(world.path("app-ctx")),
    );
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert!(
        meta["image.name"]
            .as_str()
            .unwrap()
            .contains("team/built:v2"),
        "{meta}"
    );

    // Pull into a fresh store: the same manifest digest.
    let out = run_ok(
        world
            .pybuild("store2")
            .args(["pull", "-q", &format!("{host}/team/app:v1")]),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pushed_digest);

    // Logout forgets the credentials; nothing anywhere kept the password but the
    // credentials file (removed now).
    run_ok(world.pybuild("store").args(["logout", &host]));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(json["auths"].get(&host).is_none(), "{json}");
    assert_absent_in_tree(world.dir.path(), PASSWORD);
}

#[test]
fn basic_auth_login_push_pull_logout() {
    login_push_pull_logout(RegistryAuth::Basic {
        user: USER.into(),
        password: PASSWORD.into(),
    });
}

#[test]
fn token_auth_login_push_pull_logout() {
    login_push_pull_logout(RegistryAuth::Token {
        user: USER.into(),
        password: PASSWORD.into(),
    });
}
