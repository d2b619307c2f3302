//! Malicious layers from a registry: crafted tar layers pushed as real images to a
//! loopback `docker-registry` and used as `FROM` by `pybuild build`. Each is refused
//! with a clear error or handled safely; a canary directory next to the store never
//! changes, the store verifies, and a refused image is never tagged.

use std::io::Write;
use std::process::Command;

use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use pybuild_oci::{Digest, Sha256Writer};
use pybuild_testsupport::http::request;
use pybuild_testsupport::registry::{Registry, RegistryAuth};

use crate::{Canary, Tally, World, all_output, oci_arch, peak_rss_kb};

/// A plain tar being assembled by hand (the point is to write what `tar` crates refuse).
#[derive(Default)]
pub struct Tar(pub Vec<u8>);

impl Tar {
    /// One ustar header block; `size` is written as given (it may lie).
    pub fn header(&mut self, name: &[u8], kind: u8, size: u64, link: &[u8], mode: u32) {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(kind, b'3' | b'4') {
            octal(&mut h, 329, 8, 1);
            octal(&mut h, 337, 8, 3);
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.0.extend_from_slice(&h);
    }

    /// Content padded to the block size.
    pub fn data(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.header(name, b'0', data.len() as u64, b"", 0o644);
        self.data(data);
        self
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        self.header(name, b'5', 0, b"", 0o755);
        self
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.header(name, b'2', 0, target, 0o777);
        self
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.header(name, b'1', 0, target, 0o644);
        self
    }

    /// A PAX extended header with these records, for the next entry.
    pub fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while format!("{len}{rest}").len() != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len}{rest}").as_bytes());
        }
        self.header(b"PaxHeaders/x", b'x', body.len() as u64, b"", 0o644);
        self.data(&body);
        self
    }

    pub fn end(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), GzLevel::new(6));
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One blob, uploaded monolithically; returns its digest.
pub fn push_blob(host: &str, repo: &str, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let start = request(
        host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(start.status, 202, "upload start: {}", start.text());
    let location = start.header("Location").expect("Location").to_string();
    let location = location
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or(&location)
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = request(
        host,
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    )
    .unwrap();
    assert_eq!(put.status, 201, "blob PUT: {}", put.text());
    digest
}

/// An image of the given layers (blob bytes, diff ID, media type) as `repo:tag`.
pub fn push_image(host: &str, repo: &str, tag: &str, layers: &[(Vec<u8>, Digest, &str)]) {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d, _)| d.to_string()).collect();
    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = push_blob(host, repo, &config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(blob, _, media_type)| {
            let digest = push_blob(host, repo, blob);
            serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": blob.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": layer_descs,
    });
    let put = request(
        host,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    assert_eq!(put.status, 201, "manifest PUT: {}", put.text());
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What a case must do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// The build fails, naming the problem.
    Refused,
    /// The build succeeds (the layer is handled safely inside the snapshot).
    Handled,
}

struct Case {
    name: &'static str,
    blob: Vec<u8>,
    diff_id: Digest,
    expect: Expect,
}

fn case(name: &'static str, tar: Tar, expect: Expect) -> Case {
    let tar = tar.end();
    Case {
        name,
        blob: gzip(&tar),
        diff_id: Digest::of(&tar),
        expect,
    }
}

fn corpus(canary: &str) -> Vec<Case> {
    let up = "../".repeat(24);
    let into_canary = format!("{up}{}/pwned", canary.trim_start_matches('/'));
    let mut out = Vec::new();
    let mut t = Tar::default();
    t.file(into_canary.as_bytes(), b"x");
    out.push(case("dotdot-path", t, Expect::Refused));
    let mut t = Tar::default();
    t.dir(b"a")
        .file(format!("a/../{into_canary}").as_bytes(), b"x");
    out.push(case("dotdot-inside-path", t, Expect::Refused));
    let mut t = Tar::default();
    t.file(format!("{canary}/pwned").as_bytes(), b"x");
    out.push(case("absolute-path", t, Expect::Handled));
    let mut t = Tar::default();
    t.symlink(b"esc", canary.as_bytes())
        .file(b"esc/pwned", b"x");
    out.push(case("symlink-then-write-through", t, Expect::Refused));
    let mut t = Tar::default();
    t.symlink(b"up", up.as_bytes()).file(
        format!("up/{}/pwned", canary.trim_start_matches('/')).as_bytes(),
        b"x",
    );
    out.push(case(
        "relative-symlink-then-write-through",
        t,
        Expect::Refused,
    ));
    let mut t = Tar::default();
    t.symlink(b"esc", format!("{canary}/keep").as_bytes())
        .file(b"esc", b"overwritten");
    out.push(case("symlink-then-replace-file", t, Expect::Handled));
    let mut t = Tar::default();
    t.hardlink(b"h", format!("{canary}/keep").as_bytes());
    out.push(case("hardlink-absolute-outside", t, Expect::Refused));
    let mut t = Tar::default();
    t.hardlink(
        b"h",
        format!("{up}{}/keep", canary.trim_start_matches('/')).as_bytes(),
    );
    out.push(case("hardlink-dotdot-outside", t, Expect::Refused));
    let mut t = Tar::default();
    t.symlink(b"esc", canary.as_bytes())
        .hardlink(b"h", b"esc/keep");
    out.push(case("hardlink-through-symlink", t, Expect::Refused));
    let mut t = Tar::default();
    t.file(b".wh...", b"");
    out.push(case("whiteout-of-dotdot", t, Expect::Refused));
    let mut t = Tar::default();
    t.dir(b"a").file(b"a/.wh...", b"");
    out.push(case("nested-whiteout-of-dotdot", t, Expect::Refused));
    let mut t = Tar::default();
    t.header(b"null", b'3', 0, b"", 0o666);
    t.header(b"blk", b'4', 0, b"", 0o660);
    out.push(case("device-nodes", t, Expect::Handled));
    let mut t = Tar::default();
    t.pax(&[("size", "4294967296000")]).file(b"big", b"tiny");
    out.push(case("pax-size-claims-4tb", t, Expect::Refused));
    let mut t = Tar::default();
    // A PAX header whose own size says 8 GiB - 1: reading it must not allocate that.
    t.header(b"PaxHeaders/x", b'x', 0o77777777777, b"", 0o644);
    t.data(b"30 path=aaaaaaaaaaaaaaaaaaaaa\n");
    out.push(case("pax-header-claims-8gb", t, Expect::Refused));
    let mut t = Tar::default();
    t.header(b"././@LongLink", b'L', 0o77777777777, b"", 0o644);
    t.data(b"name");
    out.push(case("gnu-longname-claims-8gb", t, Expect::Refused));
    let mut t = Tar::default();
    t.file(b"a", b"first").file(b"a", b"second");
    t.dir(b"d").file(b"d", b"file replaces dir");
    out.push(case("duplicate-entries", t, Expect::Handled));
    let mut t = Tar::default();
    t.file(b"caf\xe9-\xff\xfe", b"latin-1 name");
    t.dir(b"\xc3\x28dir").file(b"\xc3\x28dir/x", b"x");
    out.push(case("non-utf8-names", t, Expect::Handled));
    let mut t = Tar::default();
    t.file(b"with\nnewline", b"x").file(b"back\\slash", b"y");
    out.push(case("control-characters-in-names", t, Expect::Handled));
    // Truncated gzip: the stream stops in the middle.
    let mut t = Tar::default();
    t.file(b"f", &vec![7u8; 64 << 10]);
    let mut c = case("truncated-gzip", t, Expect::Refused);
    c.blob.truncate(c.blob.len() / 2);
    out.push(c);
    // Not gzip at all, announced as gzip.
    out.push(Case {
        name: "garbage-blob",
        blob: b"\x1f\x8bthis is not gzip at all".to_vec(),
        diff_id: Digest::of(b"x"),
        expect: Expect::Refused,
    });
    // A valid layer whose diff ID in the config is another one.
    let mut c = case(
        "diff-id-mismatch",
        {
            let mut t = Tar::default();
            t.file(b"f", b"x");
            t
        },
        Expect::Refused,
    );
    c.diff_id = Digest::of(b"something else");
    out.push(c);
    out
}

/// A gzip bomb within limits: 1 GiB of zeros in one file (about 1 MiB compressed).
fn bomb() -> (Vec<u8>, Digest) {
    const SIZE: u64 = 1 << 30;
    let gz = GzEncoder::new(Vec::new(), GzLevel::new(6));
    let mut w = Sha256Writer::new(gz);
    let mut t = Tar::default();
    t.header(b"zeros", b'0', SIZE, b"", 0o644);
    w.write_all(&t.0).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        w.write_all(&chunk).unwrap();
    }
    w.write_all(&[0u8; 1024]).unwrap();
    let (diff_id, _, gz) = w.finish();
    (gz.finish().unwrap(), diff_id)
}

/// Peak RSS allowed for a build that unpacks the 1 GiB bomb.
const BOMB_RSS_LIMIT_KB: u64 = 200 << 10;

#[test]
fn malicious_layers_from_a_registry() {
    let world = World::new("layers");
    let canary = Canary::new("layers");
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let canary_path = canary.dir.to_str().unwrap().to_string();
    let mut tally = Tally::new("malicious layers");

    let build = |case: &str| -> std::process::Output {
        let ctx = world.context(
            &format!("ctx-{case}"),
            &format!("FROM {host}/evil/{case}:1\nCOPY f /f\n"),
            &[("f", "f\n")],
        );
        world
            .pybuild()
            .args(["build", "--progress=plain", "-t", &format!("out-{case}")])
            .arg(ctx)
            .output()
            .unwrap()
    };
    let tagged = |case: &str| {
        world
            .pybuild()
            .args(["inspect", &format!("out-{case}")])
            .output()
            .unwrap()
            .status
            .success()
    };

    for c in corpus(&canary_path) {
        push_image(
            &host,
            &format!("evil/{}", c.name),
            "1",
            &[(c.blob.clone(), c.diff_id.clone(), GZIP)],
        );
        let out = build(c.name);
        let text = all_output(&out);
        if std::env::var_os("ROBUST_SHOW").is_some() {
            let last = text
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or_default();
            let _ = std::io::stderr().write_all(format!("  {}: {last}\n", c.name).as_bytes());
        }
        let result = (|| {
            match (c.expect, out.status.success()) {
                (Expect::Refused, true) => return Err(format!("accepted: {text}")),
                (Expect::Handled, false) => return Err(format!("failed: {text}")),
                (Expect::Refused, false) => {
                    let clear = ["unsafe", "corrupt", "layer", "diff"]
                        .iter()
                        .any(|w| text.to_lowercase().contains(w));
                    if !clear || text.contains("panicked") {
                        return Err(format!("unclear error: {text}"));
                    }
                    if tagged(c.name) {
                        return Err("refused, yet tagged".into());
                    }
                }
                (Expect::Handled, true) => {}
            }
            canary.check()?;
            world.verify()
        })();
        tally.case(c.name, result);
    }

    // The same device layer applied as a rootless build would (no devices): skipped
    // and counted, nothing created.
    {
        let mut t = Tar::default();
        t.header(b"null", b'3', 0, b"", 0o666);
        let tar = t.end();
        let target = world.path("rootless-devices");
        std::fs::create_dir_all(&target).unwrap();
        let options = pybuild_layer::ApplyOptions {
            mode: pybuild_layer::ApplyMode::Snapshot,
            same_owner: false,
            allow_devices: false,
        };
        let result = match pybuild_layer::apply_layer(&gzip(&tar)[..], &target, &options) {
            Ok(stats) if stats.skipped_devices == 1 && !target.join("null").exists() => Ok(()),
            Ok(stats) => Err(format!("devices not skipped: {stats:?}")),
            Err(e) => Err(format!("refused: {e}")),
        };
        tally.case(
            "device-nodes-rootless-apply",
            result.and_then(|()| canary.check()),
        );
    }

    // The bomb: unpacked by a build whose peak RSS stays bounded.
    let (blob, diff_id) = bomb();
    let compressed = blob.len();
    push_image(&host, "evil/bomb", "1", &[(blob, diff_id, GZIP)]);
    let ctx = world.context(
        "ctx-bomb",
        &format!("FROM {host}/evil/bomb:1\nCOPY f /f\n"),
        &[("f", "f\n")],
    );
    let mut cmd: Command = world.pybuild();
    cmd.args(["build", "-q", "-t", "out-bomb"]).arg(&ctx);
    let (out, rss) = peak_rss_kb(cmd);
    let result = if !out.status.success() {
        Err(format!("bomb build failed: {}", all_output(&out)))
    } else if rss > BOMB_RSS_LIMIT_KB {
        Err(format!("peak RSS {rss} kB > {BOMB_RSS_LIMIT_KB} kB"))
    } else {
        let _ = std::io::stderr().write_all(
            format!("ROBUST gzip bomb: {compressed} bytes → 1 GiB, peak RSS {rss} kB\n").as_bytes(),
        );
        canary.check().and_then(|()| world.verify())
    };
    tally.case("gzip-bomb-1gib", result);
    // Free the gigabyte before the next test needs the disk.
    let _ = world.pybuild().args(["rmi", "out-bomb"]).output();
    let _ = world.pybuild().args(["prune", "--all"]).output();
    tally.finish();
}
