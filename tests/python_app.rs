//! The headline job end to end (issue 6): `pybuild -t my-python-app` on the classic
//! Python web app (fixtures/python-app, Dockerfile verbatim), driving the real binary.
//!
//! Setup, as a user behind a pull-through mirror would have it, all on loopback: the
//! app's wheelhouse served by `python3 -m http.server`; a python-slim-like base image
//! (fixtures/python-base, mmdebstrap) built by pybuild itself with an `/etc/pip.conf`
//! pointing pip at the wheelhouse; a throwaway `docker-registry` holding that base as
//! `library/python:3.8-slim` and `:3.11-slim`; and `--registry-mirror docker.io=HOST`.
//!
//! Then, with a fresh store: the build (pull from the mirror, pip in the sandbox), the
//! push (checked with skopeo), the image running under podman+runc and answering
//! `Hello, World!` over HTTP, a second look with `umoci unpack`, and the build cache
//! (nothing changed, app.py changed, requirements.txt changed).
//!
//! podman, runc, skopeo, umoci, docker-registry, mmdebstrap (or its cached rootfs) and
//! python3 must be installed: a missing tool fails the test with a message saying so,
//! it never skips. It runs as root (as CI does).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pybuild_testsupport::cmd::{self, assert_success, check_text, podman, text, tool_hinted};
use pybuild_testsupport::fsx::sha256_hex;
use pybuild_testsupport::http;
use pybuild_testsupport::net::{FileServer, free_port};
use pybuild_testsupport::progress::plain_steps;
use pybuild_testsupport::registry::{Registry, RegistryAuth};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

const INSTALL_HINT: &str = "apt-get install podman runc skopeo umoci docker-registry mmdebstrap";

/// A command for an external tool; the message for a missing one names every package
/// this test needs, so that one install fixes it.
fn tool(name: &str) -> Command {
    tool_hinted(name, INSTALL_HINT)
}

/// The status each step ended with in a `--progress=plain` log, by instruction text
/// (`"RUN pip install ..."` -> `"CACHED"` or `"DONE"`).
fn step_statuses(stderr: &str) -> BTreeMap<String, String> {
    plain_steps(stderr)
        .into_iter()
        .filter_map(|step| Some((step.instruction().to_owned(), step.status?)))
        .collect()
}

/// The test's world: temp dir, wheelhouse server, registry holding the base image.
struct World {
    dir: tempfile::TempDir,
    registry: Registry,
    _wheelhouse: FileServer,
}

impl World {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `pybuild --root ROOT` with a clean environment.
    fn pybuild(&self, root: &str) -> Command {
        // No credentials or registry settings from the machine.
        cmd::pybuild_at(
            env!("CARGO_BIN_EXE_pybuild"),
            &self.path(root),
            &self.path("docker-config"),
        )
    }

    /// The user's command: `pybuild --registry-mirror docker.io=HOST -t my-python-app CTX`
    /// into the `user` store; returns stderr.
    fn build_app(&self, ctx: &Path) -> String {
        let out = self
            .pybuild("user")
            .arg("--registry-mirror")
            .arg(format!("docker.io={}", self.registry.host()))
            .args(["-t", "my-python-app"])
            .arg(ctx)
            .output()
            .unwrap();
        assert_success(&out, "building fixtures/python-app");
        text(&out.stderr)
    }

    /// podman with its configuration and storage in the temp dir.
    fn podman(&self) -> Command {
        podman(self.dir.path())
    }
}

/// The setup: wheelhouse served, base image built with pybuild into a setup store and
/// pushed to a fresh registry as `library/python:3.8-slim` and `:3.11-slim`.
fn setup() -> World {
    tool("podman");
    tool("runc");
    tool("skopeo");
    tool("umoci");
    let dir = tempfile::Builder::new()
        .prefix("pybuild-python-app-")
        .tempdir()
        .expect("temp dir");
    let fixtures = Path::new(FIXTURES);

    let wheels = dir.path().join("wheelhouse");
    check_text(
        tool("bash")
            .arg(fixtures.join("wheelhouse/make-wheelhouse.sh"))
            .arg(fixtures.join("python-app/requirements.txt"))
            .arg(&wheels),
    );
    let wheelhouse = FileServer::start_logged(&wheels, &dir.path().join("http.log"));
    let port = wheelhouse.port();

    let base = dir.path().join("python-base");
    fs::create_dir_all(&base).unwrap();
    let rootfs = base.join("rootfs.tar");
    let made = tool("bash")
        .arg(fixtures.join("python-base/make-rootfs.sh"))
        .arg(&rootfs)
        .output()
        .unwrap();
    assert_success(
        &made,
        &format!("making the python base rootfs (needs mmdebstrap: {INSTALL_HINT})"),
    );
    fs::write(
        base.join("pip.conf"),
        format!("[global]\nno-index = true\nfind-links = http://127.0.0.1:{port}/\n"),
    )
    .unwrap();
    fs::write(
        base.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nCOPY pip.conf /etc/pip.conf\nENV LANG=C.UTF-8\n\
         CMD [\"python3\"]\n",
    )
    .unwrap();

    let registry = Registry::start(RegistryAuth::None);
    let world = World {
        dir,
        registry,
        _wheelhouse: wheelhouse,
    };
    let out = world
        .pybuild("setup")
        .args(["build", "-q", "-t", "python-base"])
        .arg(&base)
        .output()
        .unwrap();
    assert_success(&out, "building the python base image");
    for tag in ["3.8-slim", "3.11-slim"] {
        let dest = format!("{}/library/python:{tag}", world.registry.host());
        let out = world
            .pybuild("setup")
            .args(["push", "python-base", &dest])
            .output()
            .unwrap();
        assert_success(&out, &format!("pushing the base as {dest}"));
    }
    world
}

#[test]
fn python_app_builds_pushes_runs_and_caches() {
    let world = setup();
    let host = world.registry.host();

    // --- The user's build, with a fresh store, through the docker.io mirror. ---
    let ctx = world.path("python-app");
    fs::create_dir_all(&ctx).unwrap();
    for name in ["Dockerfile", "requirements.txt", "app.py", "README.md"] {
        fs::copy(
            Path::new(FIXTURES).join("python-app").join(name),
            ctx.join(name),
        )
        .unwrap();
    }
    let first = world.build_app(&ctx);
    assert!(
        first.contains("Collecting Flask==2.0.1") && first.contains("Successfully installed"),
        "pip's output (installing Flask) is not in the build log:\n{first}"
    );
    let installed = first
        .lines()
        .find(|l| l.contains("Successfully installed"))
        .unwrap();
    assert!(
        installed.contains("Flask-2.0.1") && installed.contains("Werkzeug-2.0.3"),
        "{installed}"
    );
    let pulls = world.registry.wait_requests(
        "GET",
        "/v2/library/python/manifests/3.8-slim",
        1,
        Duration::from_secs(5),
    );
    assert!(
        pulls >= 1,
        "the base was not pulled from the mirror; registry log:\n{}",
        world.registry.log()
    );
    let statuses = step_statuses(&first);
    assert_eq!(
        statuses.values().filter(|s| *s == "CACHED").count(),
        0,
        "a fresh store has nothing cached: {statuses:?}"
    );
    let user_root = world.path("user");
    let local_ref = format!("oci:{}:my-python-app:latest", user_root.display());
    let local_manifest = check_text(tool("skopeo").args(["inspect", "--raw", &local_ref]));
    let local_digest = format!("sha256:{}", sha256_hex(local_manifest.as_bytes()));

    // --- Push, and read it back with skopeo. ---
    let remote = format!("{host}/my-python-app:v1");
    let out = world
        .pybuild("user")
        .args(["push", "-q", "my-python-app", &remote])
        .output()
        .unwrap();
    assert_success(&out, "pybuild push");
    assert_eq!(text(&out.stdout).trim(), local_digest, "pushed digest");
    let inspected: serde_json::Value = serde_json::from_str(&check_text(tool("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{remote}"),
    ])))
    .unwrap();
    assert_eq!(inspected["Digest"], local_digest.as_str());
    let copied = world.path("copied");
    check_text(tool("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{remote}"),
        &format!("oci:{}:x", copied.display()),
    ]));
    let copied_manifest = check_text(tool("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:x", copied.display()),
    ]));
    assert_eq!(copied_manifest, local_manifest, "the manifest round-trips");

    // --- Run it under podman + runc; it answers over HTTP on loopback. ---
    let archive = world.path("app.tar");
    check_text(
        world
            .pybuild("user")
            .args(["save", "my-python-app", "-o"])
            .arg(&archive),
    );
    let loaded = check_text(world.podman().arg("load").arg("-i").arg(&archive));
    assert!(loaded.contains("my-python-app"), "{loaded}");
    let port = free_port();
    let container = format!("pybuild-python-app-{port}");
    check_text(world.podman().args([
        "run",
        "-d",
        "--name",
        &container,
        "-e",
        &format!("PORT={port}"),
        "my-python-app:latest",
    ]));
    let answer = {
        let _stop = RemoveContainer(&world, &container);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match http::get(&format!("127.0.0.1:{port}"), "/", &[]) {
                Ok(r) if r.status == 200 => break r.text(),
                _ if Instant::now() >= deadline => {
                    let logs = world.podman().args(["logs", &container]).output();
                    panic!(
                        "the app did not answer on 127.0.0.1:{port} within 30 s; logs: {}",
                        logs.map(|o| text(&o.stdout) + &text(&o.stderr))
                            .unwrap_or_default()
                    );
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    };
    assert_eq!(answer, "Hello, World!");
    let left = check_text(world.podman().args(["ps", "-a", "-q"]));
    assert_eq!(left.trim(), "", "the container was removed");

    // --- A second runtime path: umoci unpacks the image straight from the store. ---
    let bundle = world.path("bundle");
    check_text(
        tool("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:my-python-app:latest", user_root.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read(rootfs.join("app/app.py")).unwrap(),
        fs::read(Path::new(FIXTURES).join("python-app/app.py")).unwrap()
    );
    let flask = [
        "usr/local/lib/python3.11/dist-packages",
        "usr/lib/python3/dist-packages",
    ]
    .iter()
    .map(|d| rootfs.join(d).join("flask"))
    .find(|p| p.join("__init__.py").is_file());
    assert!(
        flask.is_some(),
        "pip's Flask is not in the unpacked image: {:?}",
        fs::read_dir(rootfs.join("usr/local/lib")).map(|d| d.count())
    );

    // --- The build cache. ---
    let again = step_statuses(&world.build_app(&ctx));
    assert_eq!(
        again.values().filter(|s| *s == "CACHED").count(),
        4,
        "nothing changed: WORKDIR, COPY, RUN and COPY are all CACHED: {again:?}"
    );
    const RUN_PIP: &str = "RUN pip install --no-cache-dir -r requirements.txt";
    let mut app = fs::read_to_string(ctx.join("app.py")).unwrap();
    app.push_str("# edited\n");
    fs::write(ctx.join("app.py"), app).unwrap();
    let edited = step_statuses(&world.build_app(&ctx));
    assert_eq!(edited["WORKDIR /app"], "CACHED", "{edited:?}");
    assert_eq!(edited["COPY requirements.txt ."], "CACHED", "{edited:?}");
    assert_eq!(edited[RUN_PIP], "CACHED", "{edited:?}");
    assert_eq!(edited["COPY . ."], "DONE", "{edited:?}");

    let mut reqs = fs::read_to_string(ctx.join("requirements.txt")).unwrap();
    reqs.push_str("# a comment\n");
    fs::write(ctx.join("requirements.txt"), reqs).unwrap();
    let log = world.build_app(&ctx);
    let changed = step_statuses(&log);
    assert_eq!(changed["WORKDIR /app"], "CACHED", "{changed:?}");
    assert_eq!(changed["COPY requirements.txt ."], "DONE", "{changed:?}");
    assert_eq!(changed[RUN_PIP], "DONE", "pip runs again: {changed:?}");
    assert!(log.contains("Successfully installed"), "{log}");

    // --- The multi-stage fixture: its independent stages overlap, and the app's own
    // layers are smaller than the single-stage image's. ---
    let out = world
        .pybuild("user")
        .arg("--registry-mirror")
        .arg(format!("docker.io={}", world.registry.host()))
        .args([
            "build",
            "--progress=rawjson",
            "-t",
            "my-python-app:multistage",
            "-f",
        ])
        .arg(Path::new(FIXTURES).join("python-multistage/Dockerfile"))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "building fixtures/python-multistage");
    let events: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let vertex_of = |needle: &str| -> serde_json::Value {
        events
            .iter()
            .find(|e| e["name"].as_str().is_some_and(|n| n.contains(needle)))
            .map(|e| e["vertex"].clone())
            .unwrap_or_else(|| panic!("no step {needle}"))
    };
    let at = |vertex: &serde_json::Value, kind: &str| -> usize {
        events
            .iter()
            .position(|e| e["vertex"] == *vertex && e["type"] == kind)
            .unwrap_or_else(|| panic!("{vertex} never {kind}"))
    };
    // Each stage's span runs from its FROM's start to its last step's end; the two
    // spans overlap (each starts before the other ends).
    let span = |stage: &str| {
        (
            at(&vertex_of(&format!("[{stage} 1/4]")), "step_started"),
            at(&vertex_of(&format!("[{stage} 4/4]")), "step_done"),
        )
    };
    let (deps_start, deps_end) = span("deps");
    let (check_start, check_end) = span("check");
    assert!(
        deps_start < check_end && check_start < deps_end,
        "stages did not overlap: {events:?}"
    );
    // Bytes of the layers above the base's, as stored (compressed).
    let layers_of = |tag: &str| -> Vec<u64> {
        let m: serde_json::Value = serde_json::from_str(&check_text(tool("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", user_root.display()),
        ])))
        .unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .collect()
    };
    let base = layers_of("python:3.8-slim").len();
    let app_layers = |tag: &str| -> u64 { layers_of(tag)[base..].iter().sum() };
    let single = app_layers("my-python-app:latest");
    let multi = app_layers("my-python-app:multistage");
    assert!(
        multi < single,
        "multi-stage {multi} B >= single-stage {single} B"
    );
}

/// Force-removes a podman container on drop (also when the test fails).
struct RemoveContainer<'a>(&'a World, &'a str);

impl Drop for RemoveContainer<'_> {
    fn drop(&mut self) {
        // Flask's server is PID 1 and ignores SIGTERM: kill at once.
        let _ = self
            .0
            .podman()
            .args(["rm", "-f", "-t", "0", self.1])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
