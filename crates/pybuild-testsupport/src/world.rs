//! The busybox test world of the end-to-end suites: a temp dir, a store root inside
//! it and the busybox base image (fixtures/busybox) built there and tagged `busybox`.
//!
//! Results are read back by independent tools where it matters: umoci unpacks images
//! from the store (an OCI image layout), skopeo reads configs and manifests, tar lists
//! layer blobs. The fixture chowns files, so these worlds need root (as CI has).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::cmd::{assert_success, check, pybuild, require_tool, text, tool};
use crate::workspace_root;

/// The busybox fixture folder (`make-rootfs.sh` and its `Dockerfile`).
pub fn busybox_fixture() -> PathBuf {
    workspace_root().join("fixtures/busybox")
}

/// Makes `ctx` the busybox base's build context: the fixture's root filesystem in
/// `ctx/rootfs` (made by `make-rootfs.sh`) and its Dockerfile.
#[track_caller]
pub fn write_busybox_context(ctx: &Path) {
    require_tool("busybox");
    let fixture = busybox_fixture();
    fs::create_dir_all(ctx).unwrap_or_else(|e| panic!("{}: {e}", ctx.display()));
    check(
        Command::new("bash")
            .arg(fixture.join("make-rootfs.sh"))
            .arg(ctx.join("rootfs")),
    );
    fs::copy(fixture.join("Dockerfile"), ctx.join("Dockerfile"))
        .unwrap_or_else(|e| panic!("copy the busybox Dockerfile: {e}"));
}

/// Makes `ctx` a build context holding `dockerfile` and `files` (`path -> content`).
/// Files get mode 0644 whatever the umask, as the tests' expectations assume.
#[track_caller]
pub fn write_context(ctx: &Path, dockerfile: &str, files: &[(&str, &str)]) {
    fs::create_dir_all(ctx).unwrap_or_else(|e| panic!("{}: {e}", ctx.display()));
    fs::write(ctx.join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    for (rel, content) in files {
        let p = ctx.join(rel);
        fs::create_dir_all(p.parent().expect("a file in the context"))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        fs::write(&p, content).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// How to make a [`BusyboxEnv`]; from [`BusyboxEnv::builder`].
#[derive(Debug, Clone)]
pub struct BusyboxEnvBuilder {
    bin: PathBuf,
    prefix: String,
    epoch: Option<String>,
}

impl BusyboxEnvBuilder {
    /// The temp dir's name prefix (default `pybuild-e2e-`), to tell leftovers apart.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Builds the base with `SOURCE_DATE_EPOCH=epoch`.
    pub fn epoch(mut self, epoch: &str) -> Self {
        self.epoch = Some(epoch.to_owned());
        self
    }

    /// Makes the world and builds the busybox base into its store.
    #[track_caller]
    pub fn build(self) -> BusyboxEnv {
        let dir = tempfile::Builder::new()
            .prefix(&self.prefix)
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("store");
        let env = BusyboxEnv {
            dir,
            root,
            bin: self.bin,
        };
        let ctx = env.path("busybox-ctx");
        write_busybox_context(&ctx);
        let mut cmd = env.pybuild();
        if let Some(epoch) = &self.epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch);
        }
        let out = cmd
            .args(["build", "-t", "busybox"])
            .arg(&ctx)
            .output()
            .expect("run pybuild");
        assert_success(&out, "building the busybox base");
        env
    }
}

/// One test's world: a temp dir, a store root inside it, and the busybox base image
/// built there and tagged `busybox`. The base is `FROM scratch` plus COPY of the
/// fixture rootfs, which has no /etc/hosts, /etc/resolv.conf or /etc/hostname.
#[derive(Debug)]
pub struct BusyboxEnv {
    dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
}

impl BusyboxEnv {
    /// A fresh world for the `pybuild` binary at `bin` (a test passes
    /// `env!("CARGO_BIN_EXE_pybuild")`), with the base built.
    #[track_caller]
    pub fn new(bin: impl AsRef<Path>) -> Self {
        Self::builder(bin).build()
    }

    /// A world to adjust before it is made.
    pub fn builder(bin: impl AsRef<Path>) -> BusyboxEnvBuilder {
        BusyboxEnvBuilder {
            bin: bin.as_ref().to_path_buf(),
            prefix: "pybuild-e2e-".to_owned(),
            epoch: None,
        }
    }

    /// `rel` inside the world's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The world's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `pybuild --root ROOT` with a clean environment ([`crate::cmd::pybuild`]).
    pub fn pybuild(&self) -> Command {
        let mut cmd = pybuild(&self.bin);
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// A context dir `name` in the world with a Dockerfile and files
    /// (see [`write_context`]).
    #[track_caller]
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.path(name);
        write_context(&ctx, dockerfile, files);
        ctx
    }

    /// `pybuild build --progress=plain -t TAG EXTRA... CTX`.
    #[track_caller]
    pub fn build(&self, ctx: &Path, tag: &str, extra: &[&str]) -> Output {
        self.pybuild()
            .args(["build", "--progress=plain", "-t", tag])
            .args(extra)
            .arg(ctx)
            .output()
            .expect("run pybuild")
    }

    /// [`BusyboxEnv::build`], requiring success.
    #[track_caller]
    pub fn build_ok(&self, ctx: &Path, tag: &str, extra: &[&str]) -> Output {
        let out = self.build(ctx, tag, extra);
        assert_success(&out, &format!("building {tag}"));
        out
    }

    /// The image `tag` unpacked by umoci into `bundle-TAG`; returns its rootfs.
    #[track_caller]
    pub fn unpack(&self, tag: &str) -> PathBuf {
        let bundle = self.path(&format!("bundle-{tag}"));
        let _ = fs::remove_dir_all(&bundle);
        check(
            tool("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:{tag}:latest", self.root.display()))
                .arg(&bundle),
        );
        bundle.join("rootfs")
    }

    /// The skopeo reference of `tag` in the store, `oci:ROOT:TAG:latest`.
    pub fn oci_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}:latest", self.root.display())
    }

    /// The image config blob, as skopeo reads it (`--raw`: the parsed form drops
    /// Docker's fields that OCI lacks, such as Healthcheck, OnBuild and Shell).
    #[track_caller]
    pub fn config(&self, tag: &str) -> Value {
        let out = check(
            tool("skopeo")
                .args(["inspect", "--raw", "--config"])
                .arg(self.oci_ref(tag)),
        );
        serde_json::from_slice(&out).expect("config JSON")
    }

    /// The raw manifest bytes, as skopeo reads them.
    #[track_caller]
    pub fn manifest_raw(&self, tag: &str) -> Vec<u8> {
        check(
            tool("skopeo")
                .args(["inspect", "--raw"])
                .arg(self.oci_ref(tag)),
        )
    }

    /// The path of the blob `digest` (`sha256:HEX`) in the store.
    #[track_caller]
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.root.join("blobs/sha256").join(hex)
    }

    /// The manifest of `tag`, read from the store's index.json and blobs directly;
    /// `None` when the tag is not there.
    #[track_caller]
    pub fn store_manifest(&self, tag: &str) -> Option<Value> {
        let index: Value =
            serde_json::from_slice(&fs::read(self.root.join("index.json")).unwrap()).unwrap();
        let name = format!("{tag}:latest");
        let desc = index["manifests"].as_array()?.iter().find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(&name)
        })?;
        let digest = desc["digest"].as_str().unwrap();
        Some(serde_json::from_slice(&fs::read(self.blob(digest)).unwrap()).unwrap())
    }

    /// The config of `tag`, read from the store's blobs directly.
    #[track_caller]
    pub fn store_config(&self, tag: &str) -> Value {
        let manifest = self
            .store_manifest(tag)
            .unwrap_or_else(|| panic!("no tag {tag}"));
        let digest = manifest["config"]["digest"].as_str().unwrap();
        serde_json::from_slice(&fs::read(self.blob(digest)).unwrap()).unwrap()
    }

    /// The layer digests of `tag`, in order (from the store directly).
    #[track_caller]
    pub fn layers(&self, tag: &str) -> Vec<String> {
        let manifest = self
            .store_manifest(tag)
            .unwrap_or_else(|| panic!("no tag {tag}"));
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `tar -tzf` of a layer blob in the store: entry names without a leading `./`.
    #[track_caller]
    pub fn layer_listing(&self, digest: &str) -> Vec<String> {
        let out = check(tool("tar").arg("-tzf").arg(self.blob(digest)));
        text(&out)
            .lines()
            .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
            .filter(|l| !l.is_empty() && l != ".")
            .collect()
    }

    /// `pybuild store verify` must succeed.
    #[track_caller]
    pub fn verify_store(&self) {
        let out = self
            .pybuild()
            .args(["store", "verify"])
            .output()
            .expect("run pybuild");
        assert_success(&out, "pybuild store verify");
    }
}
