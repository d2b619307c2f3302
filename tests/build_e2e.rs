//! End to end: `pybuild build` driving the real binary, with the results checked by
//! independent tools (umoci unpacks the image from the store, which is an OCI image
//! layout; skopeo reads its config and manifest).
//!
//! Every test gets its own temp dir and store root (`--root`) and builds the busybox
//! base image (fixtures/busybox) into it, tagged `busybox`. skopeo, umoci, busybox
//! (busybox-static) and tar must be installed: a missing tool fails the test with a
//! message saying so, it never skips. The fixture chowns files, so the tests run as
//! root (as CI does).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pybuild_testsupport::cmd::{assert_fails, assert_success, check, podman, text, tool};
use pybuild_testsupport::fsx::{link, mode, names, owner, read, sha256_hex};
use pybuild_testsupport::net::FileServer;
use pybuild_testsupport::progress::plain_steps;
use pybuild_testsupport::world::BusyboxEnv;
use serde_json::Value;

/// The binary under test.
const PYBUILD: &str = env!("CARGO_BIN_EXE_pybuild");

/// BuildKit's default PATH for Linux images.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The COPY/ADD steps of a build with whether they were cached.
fn copy_steps(stderr: &str) -> Vec<(String, bool)> {
    plain_steps(stderr)
        .into_iter()
        .filter(|step| step.name.contains("] COPY") || step.name.contains("] ADD"))
        .map(|step| (step.instruction().to_owned(), step.cached))
        .collect()
}

// ---------------------------------------------------------------------------------

/// (1) The busybox base image is the fixture's rootfs.
#[test]
fn busybox_base_matches_fixture() {
    let env = BusyboxEnv::new(PYBUILD);
    let rootfs = env.unpack("busybox");
    let fixture = env.path("busybox-ctx/rootfs");

    assert_eq!(
        fs::read(rootfs.join("bin/busybox")).unwrap(),
        fs::read(fixture.join("bin/busybox")).unwrap(),
        "busybox binary differs"
    );
    assert_eq!(mode(&rootfs.join("bin/busybox")), 0o755);
    assert_eq!(link(&rootfs.join("bin/sh")), Path::new("busybox"));
    assert_eq!(link(&rootfs.join("bin/ls")), Path::new("busybox"));
    // The same entries everywhere (every applet link, /etc files, empty dirs).
    for dir in ["", "bin", "etc", "home", "var"] {
        assert_eq!(
            names(&rootfs.join(dir)),
            names(&fixture.join(dir)),
            "/{dir}"
        );
    }
    assert_eq!(mode(&rootfs.join("tmp")), 0o1777);
    assert_eq!(mode(&rootfs.join("root")), 0o700);
    assert_eq!(owner(&rootfs.join("home/app")), (1000, 1000));
    assert_eq!(owner(&rootfs.join("etc/passwd")), (0, 0));
    assert_eq!(
        read(&rootfs.join("etc/passwd")),
        read(&fixture.join("etc/passwd"))
    );
    assert_eq!(
        read(&rootfs.join("etc/group")),
        read(&fixture.join("etc/group"))
    );

    let config = env.config("busybox");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(config["config"]["Env"], serde_json::json!([DEFAULT_PATH]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
}

/// (2a) Where COPY puts things (BuildKit's rules), .dockerignore, symlinks, --exclude,
/// --from, heredocs and a destination under a symlinked directory.
#[test]
fn copy_destination_rules() {
    let env = BusyboxEnv::new(PYBUILD);
    let dockerfile = "\
FROM busybox AS first
COPY a.txt /first.txt

FROM busybox
COPY a.txt /dest1/
COPY a.txt /dest2
COPY a.txt /etc
COPY dir /dircopy
COPY top-link /top-link
COPY *.txt /txt/
COPY *.nomatch /nomatch/
WORKDIR /work
COPY a.txt rel/
COPY ignored/ /ign/
COPY --exclude=*.log logs/ /logs/
COPY --from=first /first.txt /from-first.txt
ENV NAME=world
COPY <<EOF /heredoc.txt
hello $NAME
EOF
COPY <<\"EOF\" /quoted.txt
hello $NAME
EOF
COPY sysroot/ /
COPY a.txt /lib/f
";
    let ctx = env.context(
        "ctx",
        dockerfile,
        &[
            ("a.txt", "A\n"),
            ("b.txt", "B\n"),
            ("dir/one", "1\n"),
            ("dir/sub/two", "2\n"),
            ("ignored/drop.txt", "drop\n"),
            ("ignored/keep.txt", "keep\n"),
            ("logs/app.log", "log\n"),
            ("logs/app.conf", "conf\n"),
            ("sysroot/usr/lib/.keep", ""),
            (".dockerignore", "ignored/*\n!ignored/keep.txt\n"),
        ],
    );
    symlink("one", ctx.join("dir/link-rel")).unwrap();
    symlink("/etc/passwd", ctx.join("dir/link-abs")).unwrap();
    symlink("usr/lib", ctx.join("sysroot/lib")).unwrap();
    symlink("b.txt", ctx.join("top-link")).unwrap();
    env.build_ok(&ctx, "app", &[]);
    let r = env.unpack("app");

    // `dest/`: inside; `dest`: renamed; an existing directory: inside.
    assert_eq!(read(&r.join("dest1/a.txt")), "A\n");
    assert!(r.join("dest2").is_file(), "/dest2 must be the file itself");
    assert_eq!(read(&r.join("dest2")), "A\n");
    assert_eq!(read(&r.join("etc/a.txt")), "A\n");
    // A directory copies its contents.
    assert_eq!(
        names(&r.join("dircopy")),
        ["link-abs", "link-rel", "one", "sub"]
    );
    assert_eq!(read(&r.join("dircopy/sub/two")), "2\n");
    // Symlinks are copied as symlinks, targets untouched.
    assert_eq!(link(&r.join("dircopy/link-rel")), Path::new("one"));
    assert_eq!(link(&r.join("dircopy/link-abs")), Path::new("/etc/passwd"));
    // A symlink named as the source itself is followed: BuildKit's dispatchCopy
    // (frontend/dockerfile/dockerfile2llb/convert.go) copies with FollowSymlinks: true,
    // which applies to the source path, not to entries inside a copied directory.
    assert!(fs::symlink_metadata(r.join("top-link")).unwrap().is_file());
    assert_eq!(read(&r.join("top-link")), "B\n");
    // Wildcards; no match is not an error (BuildKit's AllowEmptyWildcard).
    assert_eq!(names(&r.join("txt")), ["a.txt", "b.txt"]);
    // (`COPY *.nomatch /nomatch/` above built without error.)
    // Relative to WORKDIR.
    assert_eq!(read(&r.join("work/rel/a.txt")), "A\n");
    // .dockerignore with a `!` re-include.
    assert_eq!(names(&r.join("ign")), ["keep.txt"]);
    // --exclude.
    assert_eq!(names(&r.join("logs")), ["app.conf"]);
    // --from an earlier stage.
    assert_eq!(read(&r.join("from-first.txt")), "A\n");
    // Heredocs: unquoted expands, quoted does not.
    assert_eq!(read(&r.join("heredoc.txt")), "hello world\n");
    assert_eq!(read(&r.join("quoted.txt")), "hello $NAME\n");
    // Through a symlinked directory: /lib stays a link, the file lands in /usr/lib.
    assert_eq!(link(&r.join("lib")), Path::new("usr/lib"));
    assert_eq!(read(&r.join("usr/lib/f")), "A\n");
}

/// (2b) COPY errors: exit 1 and the Dockerfile line in the message.
#[test]
fn copy_errors_name_the_line() {
    let env = BusyboxEnv::new(PYBUILD);
    let files = [("a.txt", "A\n"), ("b.txt", "B\n")];

    // Several sources need a directory destination ending in `/`.
    let ctx = env.context("multi", "FROM busybox\nCOPY a.txt b.txt /multi\n", &files);
    let stderr = assert_fails(&env.build(&ctx, "multi", &[]));
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("/multi"), "{stderr}");

    // A missing source: line, source name and a hint.
    let ctx = env.context("missing", "FROM busybox\n\nCOPY nope.txt /x\n", &files);
    let stderr = assert_fails(&env.build(&ctx, "missing", &[]));
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(stderr.contains("nope.txt"), "{stderr}");
    assert!(stderr.contains("hint"), "no hint in: {stderr}");
    // No tag for a failed build.
    let out = tool("skopeo")
        .args(["inspect", "--raw"])
        .arg(env.oci_ref("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed build was tagged");

    // An unknown user in --chown.
    let ctx = env.context(
        "chown",
        "FROM busybox\nCOPY --chown=nosuchuser a.txt /x\n",
        &files,
    );
    let stderr = assert_fails(&env.build(&ctx, "chown", &[]));
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("nosuchuser"), "{stderr}");
}

/// (2c) --chown and --chmod.
#[test]
fn copy_chown_chmod() {
    let env = BusyboxEnv::new(PYBUILD);
    let dockerfile = "\
FROM busybox
COPY --chown=app:staff a.txt /c1
COPY --chown=1234 a.txt /c2
COPY --chown=app a.txt /c3
COPY --chmod=0600 a.txt /m1
COPY --chmod=u+x,go-rwx a.txt /m2
COPY a.txt /plain
";
    let ctx = env.context("ctx", dockerfile, &[("a.txt", "A\n")]);
    env.build_ok(&ctx, "app", &[]);
    let r = env.unpack("app");
    assert_eq!(owner(&r.join("c1")), (1000, 50));
    assert_eq!(owner(&r.join("c2")), (1234, 1234));
    // A user without a group takes the user's primary group.
    assert_eq!(owner(&r.join("c3")), (1000, 1000));
    assert_eq!(owner(&r.join("plain")), (0, 0));
    assert_eq!(mode(&r.join("m1")), 0o600);
    // 0644 + u+x = 0744, then go-rwx = 0700.
    assert_eq!(mode(&r.join("m2")), 0o700);
    assert_eq!(mode(&r.join("plain")), 0o644);
}

/// (3) ADD: a local tar.gz is extracted; a plain file is copied.
#[test]
fn add_extracts_local_archives() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "FROM busybox\nADD pkg.tar.gz /opt/\nADD plain.txt /opt/plain.txt\n\
         ADD pkg.tar.gz /noslash\nADD nest/ /nested/\n",
        &[
            ("plain.txt", "plain\n"),
            ("src/pkg/bin/tool", "#!/bin/sh\n"),
            ("src/pkg/README", "r\n"),
        ],
    );
    fs::set_permissions(
        ctx.join("src/pkg/bin/tool"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::create_dir_all(ctx.join("nest")).unwrap();
    check(
        tool("tar")
            .arg("-C")
            .arg(ctx.join("src"))
            .args(["-czf"])
            .arg(ctx.join("pkg.tar.gz"))
            .arg("pkg"),
    );
    fs::copy(ctx.join("pkg.tar.gz"), ctx.join("nest/inner.tar.gz")).unwrap();
    env.build_ok(&ctx, "app", &[]);
    let r = env.unpack("app");
    assert_eq!(names(&r.join("opt")), ["pkg", "plain.txt"]);
    // Without a trailing slash the archive still goes *into* the destination
    // (BuildKit's file backend `unpack`: MkdirAll(dest), then untar there).
    assert_eq!(names(&r.join("noslash")), ["pkg"]);
    assert_eq!(read(&r.join("noslash/pkg/README")), "r\n");
    // Only a source that is itself an archive is unpacked: archives inside a copied
    // directory stay files.
    assert_eq!(names(&r.join("nested")), ["inner.tar.gz"]);
    assert_eq!(
        fs::read(r.join("nested/inner.tar.gz")).unwrap(),
        fs::read(ctx.join("pkg.tar.gz")).unwrap()
    );
    assert_eq!(read(&r.join("opt/pkg/README")), "r\n");
    assert_eq!(read(&r.join("opt/pkg/bin/tool")), "#!/bin/sh\n");
    assert_eq!(mode(&r.join("opt/pkg/bin/tool")), 0o755);
    assert_eq!(read(&r.join("opt/plain.txt")), "plain\n");
}

/// ADD recognizes archives by content, whatever their name: plain, gzip, bzip2, xz and
/// zstd tars are extracted; a compressed file that is not a tar is copied as it is.
#[test]
fn add_detects_every_archive_format_by_content() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "FROM busybox
ADD a.tar /plain/
ADD a.tbz /bz2/
ADD a.txz /xz/
ADD a.tzst /zst/
         ADD notes.gz /gz/
ADD misleading.tar.gz /misleading/
",
        &[
            ("src/pkg/file", "payload\n"),
            ("misleading.tar.gz", "just text\n"),
        ],
    );
    for (flag, name) in [("-cf", "a.tar"), ("-cjf", "a.tbz"), ("-cJf", "a.txz")] {
        check(
            tool("tar")
                .arg("-C")
                .arg(ctx.join("src"))
                .arg(flag)
                .arg(ctx.join(name))
                .arg("pkg"),
        );
    }
    check(
        tool("zstd")
            .arg("-q")
            .arg(ctx.join("a.tar"))
            .arg("-o")
            .arg(ctx.join("a.tzst")),
    );
    fs::write(ctx.join("notes"), "not a tar\n").unwrap();
    check(tool("gzip").arg("-n").arg(ctx.join("notes")));
    env.build_ok(&ctx, "app", &[]);
    let r = env.unpack("app");
    for dir in ["plain", "bz2", "xz", "zst"] {
        assert_eq!(read(&r.join(dir).join("pkg/file")), "payload\n", "{dir}");
    }
    // A gzip stream that does not hold a tar, and a text file named like an archive,
    // are copied unchanged.
    assert_eq!(names(&r.join("gz")), ["notes.gz"]);
    assert_eq!(
        fs::read(r.join("gz/notes.gz")).unwrap(),
        fs::read(ctx.join("notes.gz")).unwrap()
    );
    assert_eq!(read(&r.join("misleading/misleading.tar.gz")), "just text\n");
}

/// (4) Metadata instructions land in the config; history matches the layers.
#[test]
fn config_instructions() {
    let env = BusyboxEnv::new(PYBUILD);
    let dockerfile = r#"FROM busybox
ENV A=1 B="two words"
ENV C $A-x
LABEL org.example.k="v v" other=1
EXPOSE 80 53/udp
VOLUME ["/data", "/cache"]
WORKDIR /srv
USER app
WORKDIR app
ENTRYPOINT ["/bin/echo"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=1s --retries=3 CMD ["/bin/true"]
ONBUILD COPY . /x
"#;
    let ctx = env.context("ctx", dockerfile, &[]);
    env.build_ok(&ctx, "app", &[]);
    let config = env.config("app");
    let c = &config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!([DEFAULT_PATH, "A=1", "B=two words", "C=1-x"])
    );
    assert_eq!(
        c["Labels"],
        serde_json::json!({"org.example.k": "v v", "other": "1"})
    );
    assert_eq!(c["User"], "app");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "80/tcp": {}})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/cache": {}, "/data": {}}));
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo"]));
    // ENTRYPOINT resets the CMD inherited from busybox.
    assert!(c.get("Cmd").is_none_or(Value::is_null), "Cmd: {}", c["Cmd"]);
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({
            "Test": ["CMD", "/bin/true"],
            "Interval": 30_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "StartPeriod": 1_000_000_000u64,
            "Retries": 3,
        })
    );
    assert_eq!(c["OnBuild"], serde_json::json!(["COPY . /x"]));

    // WORKDIR created its directories, 0755, the one after USER owned by that user
    // (BuildKit's dispatchWorkdir: llb.Mkdir(wd, 0755, WithParents, WithUser(User))).
    let r = env.unpack("app");
    assert!(
        r.join("srv/app").is_dir(),
        "WORKDIR did not create /srv/app"
    );
    assert_eq!(mode(&r.join("srv")), 0o755);
    assert_eq!(owner(&r.join("srv")), (0, 0));
    assert_eq!(owner(&r.join("srv/app")), (1000, 1000));

    // History: one non-empty entry per layer, in order.
    let history = config["history"].as_array().unwrap();
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    let non_empty = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(non_empty, layers, "history: {history:#?}");
    let created_by: Vec<&str> = history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or(""))
        .collect();
    // busybox's 3 entries, then one per instruction of this Dockerfile except ONBUILD
    // (BuildKit's dispatchOnbuild only stores the trigger).
    assert_eq!(history.len(), 3 + 11, "{created_by:#?}");
    // BuildKit's created_by forms (Go's %v / %q of the parsed values).
    let want = [
        "ENV A=1 B=two words",
        "ENV C=1-x",
        "LABEL org.example.k=v v other=1",
        "EXPOSE map[53/udp:{} 80/tcp:{}]",
        "VOLUME [/data /cache]",
        "WORKDIR /srv",
        "USER app",
        "WORKDIR /srv/app",
        "ENTRYPOINT [\"/bin/echo\"]",
        "STOPSIGNAL SIGTERM",
    ];
    assert_eq!(created_by[3..13], want, "{created_by:#?}");
    assert!(
        created_by[13].starts_with("HEALTHCHECK "),
        "{created_by:#?}"
    );
    // Only the WORKDIRs that created a directory made layers.
    let layer_steps: Vec<&str> = history[3..]
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(layer_steps, ["WORKDIR /srv", "WORKDIR /srv/app"]);
    for h in &history[3..] {
        assert_eq!(h["comment"], "buildkit.dockerfile.v0");
    }

    // SHELL, then a shell-form CMD uses it.
    let ctx = env.context(
        "shell",
        "FROM busybox\nSHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\nCMD echo hi\n",
        &[],
    );
    env.build_ok(&ctx, "shell", &[]);
    let c = env.config("shell");
    assert_eq!(
        c["config"]["Shell"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c"])
    );
    let created_by: Vec<&str> = c["history"].as_array().unwrap()[3..]
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        created_by,
        [
            "SHELL [/bin/ash -eo pipefail -c]",
            r#"CMD ["/bin/ash" "-eo" "pipefail" "-c" "echo hi"]"#
        ]
    );
    assert_eq!(
        c["config"]["Cmd"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c", "echo hi"])
    );
}

/// (5) The build cache: rebuilds, touched files, changed files, --no-cache.
#[test]
fn build_cache() {
    let env = BusyboxEnv::new(PYBUILD);
    let dockerfile = "\
FROM busybox
COPY a.txt /a.txt
LABEL step=2
COPY b.txt /b.txt
COPY . /all/
";
    let ctx = env.context("ctx", dockerfile, &[("a.txt", "A\n"), ("b.txt", "B\n")]);
    let quiet = |env: &BusyboxEnv| {
        let out = env
            .pybuild()
            .args(["build", "-q", "-t", "app"])
            .arg(&ctx)
            .output()
            .unwrap();
        assert_success(&out, "quiet build");
        let id = text(&out.stdout).trim().to_owned();
        assert!(
            id.starts_with("sha256:") && id.len() == 71,
            "image ID {id:?}"
        );
        id
    };
    let first = env.build_ok(&ctx, "app", &[]);
    let all_done = copy_steps(&text(&first.stderr));
    assert_eq!(all_done.len(), 3, "{all_done:?}");
    assert!(all_done.iter().all(|(_, cached)| !cached), "{all_done:?}");
    let id = quiet(&env);

    // Rebuild: every COPY cached, same image ID.
    let out = env.build_ok(&ctx, "app", &[]);
    let s = copy_steps(&text(&out.stderr));
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(s.iter().all(|(_, cached)| *cached), "{s:?}");
    assert_eq!(quiet(&env), id);

    // Touch (same content, new mtime): still cached.
    std::thread::sleep(Duration::from_millis(20));
    let f = fs::File::options()
        .write(true)
        .open(ctx.join("b.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    let out = env.build_ok(&ctx, "app", &[]);
    let s = copy_steps(&text(&out.stderr));
    assert!(s.iter().all(|(_, cached)| *cached), "after touch: {s:?}");
    assert_eq!(quiet(&env), id);

    // Change b.txt: the COPY before it stays cached, the ones that see it re-run.
    fs::write(ctx.join("b.txt"), "B2\n").unwrap();
    let out = env.build_ok(&ctx, "app", &[]);
    let s = copy_steps(&text(&out.stderr));
    assert_eq!(
        s,
        [
            ("COPY a.txt /a.txt".to_owned(), true),
            ("COPY b.txt /b.txt".to_owned(), false),
            ("COPY . /all/".to_owned(), false),
        ]
    );
    let changed = quiet(&env);
    assert_ne!(changed, id);

    // --no-cache: nothing cached. (The image ID may change: re-made layers carry new
    // history times, as BuildKit's do.) Its results are still recorded, so the next
    // build is all cached and gives the --no-cache build's image.
    let iid = env.path("iid");
    let out = env.build_ok(
        &ctx,
        "app",
        &["--no-cache", "--iidfile", iid.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("CACHED"), "{stderr}");
    assert_eq!(copy_steps(&stderr).len(), 3);
    let out = env.build_ok(&ctx, "app", &[]);
    let s = copy_steps(&text(&out.stderr));
    assert!(
        s.iter().all(|(_, cached)| *cached),
        "after --no-cache: {s:?}"
    );
    assert_eq!(quiet(&env), read(&iid).trim());
}

/// (6) SOURCE_DATE_EPOCH: the same context in two places, two stores, two times
/// give the same manifest digest.
#[test]
fn reproducible_with_source_date_epoch() {
    const EPOCH: &str = "1700000000";
    let build = |env: &BusyboxEnv, ctx: &Path| -> (String, Vec<u8>) {
        let meta = env.path("meta.json");
        let out = env
            .pybuild()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["build", "-q", "-t", "app", "--metadata-file"])
            .arg(&meta)
            .arg(ctx)
            .output()
            .unwrap();
        assert_success(&out, "reproducible build");
        let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        let digest = meta["containerimage.digest"].as_str().unwrap().to_owned();
        (digest, env.manifest_raw("app"))
    };
    let a = BusyboxEnv::builder(PYBUILD).epoch(EPOCH).build();
    let ctx_a = a.context(
        "ctx",
        "FROM busybox\nCOPY . /src/\nWORKDIR /srv\nCOPY a.txt /srv/\nCMD [\"/src/run\"]\n",
        &[("a.txt", "A\n"), ("dir/b", "B\n")],
    );
    symlink("a.txt", ctx_a.join("lnk")).unwrap();
    let (digest_a, raw_a) = build(&a, &ctx_a);

    std::thread::sleep(Duration::from_secs(1));
    let b = BusyboxEnv::builder(PYBUILD).epoch(EPOCH).build();
    let ctx_b = b.path("elsewhere/ctx-copy");
    fs::create_dir_all(ctx_b.parent().unwrap()).unwrap();
    // `cp -r` (not -a): new mtimes.
    check(Command::new("cp").arg("-r").arg(&ctx_a).arg(&ctx_b));
    let (digest_b, raw_b) = build(&b, &ctx_b);

    assert_eq!(digest_a, digest_b, "manifest digests differ");
    assert_eq!(raw_a, raw_b);
    let sha = text(&check(
        Command::new("sha256sum").stdin(
            fs::File::open({
                let p = a.path("raw");
                fs::write(&p, &raw_a).unwrap();
                p
            })
            .unwrap(),
        ),
    ));
    assert_eq!(
        format!("sha256:{}", sha.split_whitespace().next().unwrap()),
        digest_a
    );

    let config = a.config("app");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    for h in config["history"].as_array().unwrap() {
        assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
    }
}

/// (7) Every export type, checked by skopeo / tar / the file system.
#[test]
fn outputs() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &[("a.txt", "A\n")],
    );
    let out_dir = env.path("out");
    fs::create_dir_all(&out_dir).unwrap();
    let o = |rel: &str| out_dir.join(rel).display().to_string();
    let iid = out_dir.join("iid");
    let meta = out_dir.join("meta.json");
    let out = env
        .pybuild()
        .args(["build", "-q", "-t", "app"])
        .args(["--output", &format!("type=oci,dest={}", o("x.tar"))])
        .args(["--output", &format!("type=oci,dest={},tar=false", o("d"))])
        .args(["--output", &format!("type=docker,dest={}", o("docker.tar"))])
        .args(["--output", &format!("type=local,dest={}", o("local"))])
        .args(["--output", &format!("type=tar,dest={}", o("r.tar"))])
        .arg("--iidfile")
        .arg(&iid)
        .arg("--metadata-file")
        .arg(&meta)
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "build with outputs");
    let image_id = text(&out.stdout).trim().to_owned();
    assert_eq!(read(&iid).trim(), image_id);

    let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let raw = env.manifest_raw("app");
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["config"]["digest"], image_id.as_str());
    let digest = meta["containerimage.digest"]
        .as_str()
        .expect("containerimage.digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(meta["containerimage.config.digest"], image_id.as_str());

    let inspect = |reference: String| -> Value {
        serde_json::from_slice(&check(
            tool("skopeo").args(["inspect", "--config"]).arg(reference),
        ))
        .unwrap()
    };
    let want_layers = env.config("app")["rootfs"]["diff_ids"].clone();
    assert_eq!(want_layers.as_array().unwrap().len(), 3);
    for reference in [
        format!("oci-archive:{}", o("x.tar")),
        format!("oci:{}", o("d")),
        format!("docker-archive:{}", o("docker.tar")),
    ] {
        let config = inspect(reference.clone());
        assert_eq!(config["rootfs"]["diff_ids"], want_layers, "{reference}");
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!(["/bin/sh"]),
            "{reference}"
        );
    }
    // The OCI exports carry the very manifest of the store.
    let raw_archive = check(
        tool("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", o("x.tar"))),
    );
    assert_eq!(raw_archive, raw);
    check(
        tool("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("docker-archive:{}", o("docker.tar")))
            .arg(format!("oci:{}:t", o("copy"))),
    );
    let copied = inspect(format!("oci:{}:t", o("copy")));
    assert_eq!(copied["rootfs"]["diff_ids"], want_layers);

    // type=local: the root file system.
    let local = out_dir.join("local");
    assert_eq!(read(&local.join("a.txt")), "A\n");
    assert_eq!(link(&local.join("bin/sh")), Path::new("busybox"));
    assert_eq!(
        fs::read(local.join("bin/busybox")).unwrap(),
        fs::read(env.path("busybox-ctx/rootfs/bin/busybox")).unwrap()
    );
    // type=tar: the root file system as a tar.
    let listing = text(&check(tool("tar").arg("-tf").arg(o("r.tar"))));
    let entries: Vec<&str> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .collect();
    for want in [
        "a.txt",
        "bin/busybox",
        "bin/sh",
        "etc/passwd",
        "home/app",
        "tmp",
    ] {
        assert!(
            entries.contains(&want),
            "{want} missing from r.tar: {entries:?}"
        );
    }
}

/// (8) FROM an image that is not in the store and cannot be pulled: the registry
/// (a loopback port nobody listens on: tests never leave the machine) is named, with
/// the Dockerfile line.
#[test]
fn from_missing_image() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "# base\nFROM 127.0.0.1:9/nosuch/image:1.0\nCOPY a /a\n",
        &[("a", "a")],
    );
    let stderr = assert_fails(&env.build(&ctx, "app", &[]));
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9/nosuch/image"), "{stderr}");
    assert!(stderr.contains("not in the local store"), "{stderr}");
    let images = env.pybuild().args(["images", "-q"]).output().unwrap();
    assert_success(&images, "images");
    // Only the busybox base: the failed build tagged nothing.
    assert_eq!(
        text(&images.stdout).lines().count(),
        1,
        "{}",
        text(&images.stdout)
    );
}

/// (9) kill -9 in the middle of a build leaves no tag to a partial image, and
/// the next build completes.
#[test]
fn interrupted_build_leaves_no_partial_tag() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "FROM busybox\nCOPY big.bin /big.bin\nCOPY a /a\n",
        &[("a", "a")],
    );
    // 200 MB of incompressible data, written in 1 MiB chunks.
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(fs::File::create(ctx.join("big.bin")).unwrap());
        for seed in 1..=200 {
            f.write_all(&pybuild_testsupport::data::noise(1 << 20, seed))
                .unwrap();
        }
        f.flush().unwrap();
    }
    let tag_exists = || {
        tool("skopeo")
            .args(["inspect", "--raw"])
            .arg(env.oci_ref("big"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(!tag_exists());

    let mut child = env
        .pybuild()
        .args(["build", "--progress=plain", "-t", "big"])
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the build finished within {:?}; the test needs a slower build",
        started.elapsed()
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!tag_exists(), "a killed build left the tag");
    // busybox is still intact, and the store holds nothing half-written that it
    // references.
    env.config("busybox");
    let out = env.pybuild().args(["store", "verify"]).output().unwrap();
    assert_success(&out, "store verify after kill -9");

    env.build_ok(&ctx, "big", &[]);
    assert!(tag_exists());
    let config = env.config("big");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    let r = env.unpack("big");
    assert_eq!(fs::metadata(r.join("big.bin")).unwrap().len(), 200 << 20);
    assert_eq!(
        fs::read(r.join("big.bin")).unwrap(),
        fs::read(ctx.join("big.bin")).unwrap()
    );
}

/// The docker-archive export is what `podman load` reads, and the image then runs under
/// an OCI runtime (runc): ENV, WORKDIR, USER and the copied files are all in effect.
#[test]
fn docker_archive_loads_and_runs_under_podman() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "FROM busybox\nWORKDIR /srv\nCOPY --chown=app:app hello.txt .\nENV GREETING=hi\nUSER app\n\
         CMD [\"/bin/sh\", \"-c\", \"echo $GREETING $(id -u) $(pwd) $(cat hello.txt)\"]\n",
        &[("hello.txt", "from-pybuild\n")],
    );
    let archive = env.path("app.tar");
    let out = env
        .pybuild()
        .args(["build", "-q", "-t", "podman-app"])
        .arg("--output")
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "build with a docker archive output");
    let image_id = text(&out.stdout).trim().to_owned();

    let loaded = text(&check(
        podman(env.dir()).arg("load").arg("-i").arg(&archive),
    ));
    assert!(loaded.contains("podman-app:latest"), "{loaded}");
    // podman's image ID is the config digest, the same image ID pybuild printed.
    let id = text(&check(podman(env.dir()).args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "podman-app:latest",
    ])));
    assert_eq!(format!("sha256:{}", id.trim()), image_id);

    let ran = text(&check(podman(env.dir()).args([
        "run",
        "--rm",
        "podman-app:latest",
    ])));
    assert_eq!(ran.trim(), "hi 1000 /srv from-pybuild");
}

/// ADD of an http URL (a server on 127.0.0.1): the file is named after the URL path,
/// gets mode 0600 and the Last-Modified time as mtime (BuildKit's HTTP source), is
/// never unpacked, and `--checksum` is verified.
#[test]
fn add_downloads_urls_with_checksums() {
    let env = BusyboxEnv::new(PYBUILD);
    let srv = env.path("srv");
    fs::create_dir_all(&srv).unwrap();
    fs::write(srv.join("file.txt"), "remote content\n").unwrap();
    check(
        tool("tar")
            .arg("-C")
            .arg(&srv)
            .args(["-cf"])
            .arg(srv.join("arch.tar"))
            .arg("file.txt"),
    );
    // A known Last-Modified: http.server sends the file's mtime.
    check(
        tool("touch")
            .args(["-d", "@1600000000"])
            .arg(srv.join("file.txt")),
    );
    let log = env.path("srv.log");
    let server = FileServer::start_logged(&srv, &log);
    let url = |name: &str| format!("http://127.0.0.1:{}/{name}", server.port());
    let sum = "sha256:c18243bcea0987f0dabe57a6714acda33fe58db2d6096c58a8b5be13ed378588";
    let dockerfile = format!(
        "FROM busybox\nADD {} /dl/\nADD --checksum={sum} {} /dl/checked.txt\nADD {} /dl/\n",
        url("file.txt"),
        url("file.txt"),
        url("arch.tar")
    );
    let ctx = env.context("ctx", &dockerfile, &[]);
    env.build_ok(&ctx, "app", &[]);
    let r = env.unpack("app");
    assert_eq!(
        names(&r.join("dl")),
        ["arch.tar", "checked.txt", "file.txt"]
    );
    assert_eq!(read(&r.join("dl/file.txt")), "remote content\n");
    assert_eq!(read(&r.join("dl/checked.txt")), "remote content\n");
    assert_eq!(mode(&r.join("dl/file.txt")), 0o600);
    let mtime = fs::metadata(r.join("dl/file.txt")).unwrap().mtime();
    assert_eq!(mtime, 1_600_000_000);
    // A remote archive stays a file.
    assert_eq!(
        fs::read(r.join("dl/arch.tar")).unwrap(),
        fs::read(srv.join("arch.tar")).unwrap()
    );

    // A rebuild fetches no body it already has (BuildKit's HTTP source): the two
    // plain URLs get a conditional GET (If-Modified-Since, from the Last-Modified
    // recorded at the first download) answered 304, the checksummed one no request
    // at all, and every step is cached.
    let requests = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.split_once("\"GET ").map(|(_, rest)| rest.to_string()))
            .collect()
    };
    let before = requests(&read(&log)).len();
    let out = env.build_ok(&ctx, "app", &[]);
    let steps = plain_steps(&text(&out.stderr));
    assert!(steps[1..].iter().all(|s| s.cached), "{}", text(&out.stderr));
    let again: Vec<String> = requests(&read(&log)).split_off(before);
    assert_eq!(
        again,
        ["/file.txt HTTP/1.1\" 304 -", "/arch.tar HTTP/1.1\" 304 -"],
        "{}",
        read(&log)
    );

    let bad = dockerfile.replace(sum, &format!("sha256:{}", "0".repeat(64)));
    let ctx = env.context("bad", &bad, &[]);
    let stderr = assert_fails(&env.build(&ctx, "bad", &[]));
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains(sum), "the actual digest is named: {stderr}");
}

/// `--compression zstd` writes zstd layers with OCI's `tar+zstd` media type, and
/// `--oci-mediatypes=false` writes a Docker schema 2 manifest; both images unpack.
#[test]
fn compression_and_media_types() {
    let env = BusyboxEnv::new(PYBUILD);
    let ctx = env.context(
        "ctx",
        "FROM busybox\nCOPY a.txt /a.txt\n",
        &[("a.txt", "A\n")],
    );
    env.build_ok(&ctx, "zst", &["--compression", "zstd"]);
    let manifest: Value = serde_json::from_slice(&env.manifest_raw("zst")).unwrap();
    let last = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let blob = env.root().join("blobs/sha256").join(
        last["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    // zstd's magic number.
    assert_eq!(&fs::read(blob).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    // umoci 0.4 cannot read zstd layers; skopeo can: copied with --dest-decompress,
    // the layer comes out as the plain tar holding the copied file.
    let copy = env.path("zst-dir");
    check(
        tool("skopeo")
            .args(["copy", "--dest-decompress"])
            .arg(env.oci_ref("zst"))
            .arg(format!("dir:{}", copy.display())),
    );
    // The decompressed layer is stored under its diff ID: find the one holding a.txt.
    let found = fs::read_dir(&copy).unwrap().any(|e| {
        let path = e.unwrap().path();
        tool("tar")
            .arg("-tf")
            .arg(&path)
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && text(&o.stdout).lines().any(|l| l == "a.txt"))
    });
    assert!(found, "no decompressed layer holds a.txt");

    // (skopeo's OCI-layout transport only lists OCI media types, so the Docker
    // manifest is read with `pybuild inspect`, and checked by skopeo through a docker
    // archive export.)
    let archive = env.path("docker.tar");
    env.build_ok(
        &ctx,
        "docker",
        &[
            "--oci-mediatypes=false",
            "--output",
            &format!("type=docker,dest={}", archive.display()),
        ],
    );
    let out = check(env.pybuild().args(["inspect", "docker"]));
    let inspected: Value = serde_json::from_slice(&out).unwrap();
    let manifest = &inspected[0]["Manifest"];
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    let out = check(
        tool("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    assert!(text(&out).contains("\"Layers\""));
}

/// `FROM name@sha256:...` uses the manifest with that digest from the store, by
/// content and whatever its tags, and records it; an unknown digest is not silently
/// replaced by the tag's image.
#[test]
fn from_a_pinned_digest() {
    let env = BusyboxEnv::new(PYBUILD);
    let digest = format!("sha256:{}", sha256_hex(&env.manifest_raw("busybox")));
    let ctx = env.context(
        "ctx",
        &format!("FROM busybox@{digest}\nCOPY a /a\n"),
        &[("a", "a\n")],
    );
    let meta = env.path("meta.json");
    env.build_ok(&ctx, "pinned", &["--metadata-file", meta.to_str().unwrap()]);
    let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        meta["pybuild.base-images"][format!("busybox@{digest}")],
        digest.as_str(),
        "{meta}"
    );
    assert_eq!(read(&env.unpack("pinned").join("a")), "a\n");

    // Another digest: not in the store; the (loopback-only) registry cannot be asked,
    // so the build fails instead of using busybox:latest.
    let other = format!("sha256:{}", "1".repeat(64));
    let ctx = env.context(
        "ctx2",
        &format!("FROM 127.0.0.1:9/busybox@{other}\nCOPY a /a\n"),
        &[("a", "a\n")],
    );
    assert_fails(&env.build(&ctx, "pinned2", &[]));
}
