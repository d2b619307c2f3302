//! End to end for RUN: `pybuild build` driving the real binary on the busybox base
//! (fixtures/busybox), with the results checked by independent tools: umoci unpacks
//! the image from the store (an OCI image layout), tar lists the layer blobs read
//! straight from `ROOT/blobs/sha256/`, and plain progress shows what ran.
//!
//! Every test gets its own temp dir and store root (`--root`). skopeo, umoci, busybox
//! (busybox-static), tar, gzip, sha256sum and kill must be installed: a missing tool
//! fails the test with a message saying so, it never skips. RUN needs namespaces and
//! the fixture chowns files, so the tests run as root (as CI does).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pybuild_testsupport::cmd::{assert_success, check, text, tool};
use pybuild_testsupport::fsx::{meta, names, read, sha256_hex};
use pybuild_testsupport::progress::plain_steps;
use pybuild_testsupport::world::BusyboxEnv;
use serde_json::Value;

/// A fresh world for the binary under test, with the busybox base built and tagged
/// `busybox`.
fn new_env() -> BusyboxEnv {
    BusyboxEnv::builder(env!("CARGO_BIN_EXE_pybuild"))
        .prefix("pybuild-run-e2e-")
        .build()
}

/// The RUN steps of a build (`RUN ...` text) with whether they were cached.
fn run_steps(stderr: &str) -> Vec<(String, bool)> {
    plain_steps(stderr)
        .into_iter()
        .filter(|step| step.name.contains("] RUN"))
        .map(|step| (step.instruction().to_owned(), step.cached))
        .collect()
}

/// The output lines a step printed in plain progress (`#N 0.123 line`), by the
/// step's text.
fn step_output(stderr: &str, step: &str) -> Vec<String> {
    let id = stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix('#')?;
            let (id, what) = rest.split_once(' ')?;
            (what.starts_with('[') && what.ends_with(step)).then(|| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no step {step:?} in:\n{stderr}"));
    let prefix = format!("#{id} ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (time, line) = rest.split_once(' ').unwrap_or((rest, ""));
            time.parse::<f64>().ok().map(|_| line.to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------

/// (1) What a RUN leaves in its layer, file by file after `umoci unpack`, and the
/// whiteouts in the layer tar itself.
#[test]
fn layer_contents() {
    let env = new_env();
    let long = "l".repeat(120) + &"o".repeat(100); // 220 characters
    let unicode = "héllo-wörld-日本語-🦀.txt";
    let dockerfile = format!(
        "FROM busybox\n\
         RUN mkdir -p /lower/dir/sub && echo old > /lower/mod && echo gone > /lower/del \
             && echo x > /lower/dir/old && echo y > /lower/dir/sub/old2 && echo keep > /lower/keep\n\
         RUN set -e; echo new > /created; mkdir -p /newdir/a; echo n > /newdir/a/f; \
             echo changed > /lower/mod; rm /lower/del; \
             rm -rf /lower/dir; mkdir /lower/dir; echo fresh > /lower/dir/new; \
             ln -s /created /abs-link; ln -s ../created /newdir/rel-link; \
             echo h > /hard1; ln /hard1 /newdir/hard2; mkfifo /fifo; \
             echo s > /suid; chmod 4755 /suid; \
             echo long > /newdir/{long}; echo uni > '/newdir/{unicode}'\n\
         USER app\n\
         RUN echo mine > /tmp/mine && mkdir /tmp/appdir && echo in > /tmp/appdir/f\n"
    );
    let ctx = env.context("ctx", &dockerfile, &[]);
    env.build_ok(&ctx, "layers", &[]);
    let r = env.unpack("layers");

    // Created files.
    assert_eq!(read(&r.join("created")), "new\n");
    assert_eq!(read(&r.join("newdir/a/f")), "n\n");
    // Modified, deleted, kept lower files.
    assert_eq!(read(&r.join("lower/mod")), "changed\n");
    assert!(!r.join("lower/del").exists(), "deleted file survived");
    assert_eq!(read(&r.join("lower/keep")), "keep\n");
    // Removed and recreated directory: only the new content.
    assert_eq!(names(&r.join("lower/dir")), vec!["new"]);
    assert_eq!(read(&r.join("lower/dir/new")), "fresh\n");
    // Symlinks.
    assert_eq!(
        fs::read_link(r.join("abs-link")).unwrap(),
        PathBuf::from("/created")
    );
    assert_eq!(
        fs::read_link(r.join("newdir/rel-link")).unwrap(),
        PathBuf::from("../created")
    );
    // Hard links: one inode.
    let (h1, h2) = (meta(&r.join("hard1")), meta(&r.join("newdir/hard2")));
    assert_eq!(h1.ino(), h2.ino(), "hard links unpacked as separate files");
    assert_eq!(h1.nlink(), 2);
    assert_eq!(read(&r.join("newdir/hard2")), "h\n");
    // FIFO.
    assert!(
        meta(&r.join("fifo")).file_type().is_fifo(),
        "/fifo is not a FIFO"
    );
    // setuid.
    assert_eq!(meta(&r.join("suid")).mode() & 0o7777, 0o4755);
    // Long and unicode names.
    assert_eq!(long.len(), 220);
    assert_eq!(read(&r.join("newdir").join(&long)), "long\n");
    assert_eq!(read(&r.join("newdir").join(unicode)), "uni\n");
    // Ownership after USER app.
    for p in ["tmp/mine", "tmp/appdir", "tmp/appdir/f"] {
        let m = meta(&r.join(p));
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p}");
    }
    let m = meta(&r.join("created"));
    assert_eq!((m.uid(), m.gid()), (0, 0));

    // The layer tars: base (2 COPY layers) + 3 RUN layers.
    let layers = env.layers("layers");
    assert_eq!(layers.len(), 5, "{layers:?}");
    let second = env.layer_listing(&layers[3]);
    let has = |name: &str| second.iter().any(|e| e == name);
    assert!(
        has("lower/.wh.del"),
        "no whiteout for /lower/del: {second:?}"
    );
    assert!(
        has("lower/dir/.wh..wh..opq"),
        "no opaque whiteout for /lower/dir: {second:?}"
    );
    assert!(has("lower/mod") && has("created") && has("fifo"));
    // Only the changes: no copy of untouched lower files.
    assert!(!has("lower/keep"), "untouched lower file in the layer");
    assert!(!has("bin/busybox"), "untouched base file in the layer");
    assert!(
        !second
            .iter()
            .any(|e| e.contains(".wh.") && e.starts_with("newdir"))
    );
}

/// (2) The process a RUN starts: USER, WORKDIR, ENV and ARG, SHELL, exec form,
/// heredocs, and what the sandbox looks like from inside.
#[test]
fn process_environment() {
    let env = new_env();
    let dockerfile = r#"FROM busybox
ARG DECLARED=default
ENV MYENV=envval
RUN mkdir /out && chmod 777 /out
RUN echo "$MYENV|$DECLARED|${UNDECLARED-unset}" > /out/vars
RUN case $- in *e*) echo errexit;; *) echo plain;; esac > /out/shell-before
SHELL ["/bin/sh", "-ec"]
RUN case $- in *e*) echo errexit;; *) echo plain;; esac > /out/shell-after
RUN ["/bin/echo", "x"]
RUN ["/bin/touch", "/out/$MYENV"]
RUN <<EOF
echo "piped $MYENV" > /out/piped
EOF
RUN <<EOF
#!/bin/sh
echo "script $MYENV" > /out/script-sh
EOF
RUN <<EOF
#!/bin/awk -f
BEGIN { print "awk ran" > "/out/script-awk" }
EOF
RUN cat <<EOF > /out/inline
line1 $MYENV
line2
EOF
RUN hostname > /out/hostname && cat /proc/1/cmdline > /out/cmdline && ls /dev > /out/dev
USER app
RUN id > /out/id
WORKDIR /work/deep
RUN pwd > /out/pwd
"#;
    let ctx = env.context("ctx", dockerfile, &[]);
    let out = env.build_ok(
        &ctx,
        "proc",
        &[
            "--build-arg",
            "DECLARED=fromcli",
            "--build-arg",
            "UNDECLARED=nope",
        ],
    );
    let stderr = text(&out.stderr);
    let r = env.unpack("proc");
    let o = r.join("out");

    assert_eq!(read(&o.join("vars")), "envval|fromcli|unset\n");
    assert_eq!(read(&o.join("shell-before")), "plain\n");
    assert_eq!(read(&o.join("shell-after")), "errexit\n");
    assert_eq!(step_output(&stderr, r#"RUN ["/bin/echo", "x"]"#), vec!["x"]);
    // Exec form: no shell, so no variable expansion.
    assert!(o.join("$MYENV").exists(), "{:?}", names(&o));
    assert!(!o.join("envval").exists());
    assert_eq!(read(&o.join("piped")), "piped envval\n");
    assert_eq!(read(&o.join("script-sh")), "script envval\n");
    // Run through its shebang's interpreter: piped to sh, this would fail.
    assert_eq!(read(&o.join("script-awk")), "awk ran\n");
    assert_eq!(read(&o.join("inline")), "line1 envval\nline2\n");
    assert_eq!(read(&o.join("hostname")), "pybuild\n");
    // PID 1 is pybuild's sandbox init (it reaps zombies and forwards signals; the
    // issue asks for one, where BuildKit's runc runs the command itself as PID 1),
    // and its command line names no host path.
    assert_eq!(
        fs::read(o.join("cmdline")).unwrap(),
        b"pybuild-init\0__pybuild-sandbox-init\0"
    );
    assert_eq!(
        read(&o.join("dev")),
        "fd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n"
    );
    assert_eq!(
        read(&o.join("id")),
        "uid=1000(app) gid=1000(app) groups=50(staff)\n"
    );
    assert_eq!(read(&o.join("pwd")), "/work/deep\n");
    assert!(r.join("work/deep").is_dir());
}

/// (3) A failing RUN: error with the line, command, exit code and last output; no
/// tag; the store stays consistent.
#[test]
fn failing_run() {
    let env = new_env();
    let ctx = env.context(
        "ctx",
        "FROM busybox\nRUN echo fine\nRUN echo oops && exit 3\nRUN echo never\n",
        &[],
    );
    let out = env.build(&ctx, "failed", &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a failing RUN succeeded:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(stderr.contains("echo oops && exit 3"), "{stderr}");
    assert!(stderr.contains("exit code: 3"), "{stderr}");
    let error = &stderr[stderr.find("exit code: 3").unwrap()..];
    assert!(
        error.lines().any(|l| l.trim() == "oops"),
        "the error does not repeat the output: {stderr}"
    );
    assert!(!stderr.contains("never"), "a later step ran: {stderr}");
    assert!(
        env.store_manifest("failed").is_none(),
        "a failed build was tagged"
    );
    env.verify_store();
}

/// (4a) A cache mount persists across builds and never reaches the image.
#[test]
fn cache_mount_persists() {
    let env = new_env();
    let run = |extra: &str| {
        format!(
            "FROM busybox\n\
             RUN --mount=type=cache,target=/cache,id=counter \
             n=$(cat /cache/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /cache/n; \
             echo $n > /count{extra}\n"
        )
    };
    let ctx1 = env.context("ctx1", &run(""), &[]);
    env.build_ok(&ctx1, "c1", &[]);
    let ctx2 = env.context("ctx2", &run(" # second"), &[]);
    env.build_ok(&ctx2, "c2", &[]);

    let r1 = env.unpack("c1");
    assert_eq!(read(&r1.join("count")), "1\n");
    let r2 = env.unpack("c2");
    assert_eq!(read(&r2.join("count")), "2\n");
    for r in [&r1, &r2] {
        assert!(!r.join("cache/n").exists(), "cache content in the image");
        // As BuildKit, the mount point made for the mount is not left behind.
        assert!(!r.join("cache").exists(), "cache mount point in the image");
    }

    // `pybuild prune --all` clears cache mounts: the counter starts again.
    let out = check(env.pybuild().args(["prune", "--all"]));
    assert!(
        String::from_utf8_lossy(&out).contains("1 cache mounts"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let ctx3 = env.context("ctx3", &run(" # third"), &[]);
    env.build_ok(&ctx3, "c3", &[]);
    assert_eq!(read(&env.unpack("c3").join("count")), "1\n");
}

/// (4b) tmpfs and bind mounts (context read-only and rw, from= a stage).
#[test]
fn tmpfs_and_bind_mounts() {
    let env = new_env();
    let dockerfile = r#"FROM busybox AS builder
RUN mkdir /art && echo built > /art/dir-file && echo single > /single
FROM busybox
RUN mkdir /out
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/x && cat /scratch/x > /out/tmpfs
RUN --mount=type=bind,source=data,target=/data cat /data/file > /out/bind && if echo w 2>/dev/null > /data/file; then echo writable; else echo readonly; fi > /out/bind-ro
RUN --mount=type=bind,source=data,target=/data,rw echo changed > /data/file && echo new > /data/added && cat /data/file > /out/bind-rw
RUN --mount=type=bind,from=builder,source=/art,target=/mnt/art cat /mnt/art/dir-file > /out/from-dir
RUN --mount=type=bind,from=builder,source=/single,target=/mnt/single cat /mnt/single > /out/from-file
RUN --mount=type=bind,source=data/file,target=/one cat /one > /out/ctx-file
RUN --mount=type=bind,source=data/file,target=/one,rw echo rw > /one && cat /one > /out/ctx-file-rw
"#;
    let ctx = env.context("ctx", dockerfile, &[("data/file", "context content\n")]);
    env.build_ok(&ctx, "mounts", &[]);
    let r = env.unpack("mounts");
    let o = r.join("out");
    assert_eq!(read(&o.join("tmpfs")), "t\n");
    assert!(
        !r.join("scratch").exists(),
        "tmpfs content or mount point in the image"
    );
    assert_eq!(read(&o.join("bind")), "context content\n");
    assert_eq!(read(&o.join("bind-ro")), "readonly\n");
    assert_eq!(read(&o.join("bind-rw")), "changed\n");
    assert_eq!(read(&ctx.join("data/file")), "context content\n");
    assert!(
        !ctx.join("data/added").exists(),
        "rw bind wrote into the context"
    );
    assert!(!r.join("data").exists(), "bind mount content in the image");
    assert_eq!(read(&o.join("from-dir")), "built\n");
    assert_eq!(read(&o.join("from-file")), "single\n");
    assert_eq!(read(&o.join("ctx-file")), "context content\n");
    assert_eq!(read(&o.join("ctx-file-rw")), "rw\n");
    assert_eq!(read(&ctx.join("data/file")), "context content\n");
    assert!(!r.join("one").exists());

    // A from= source that the stage lacks is an error (BuildKit cannot resolve the mount
    // too), not an empty directory.
    let ctx2 = env.context(
        "ctx2",
        "FROM busybox AS builder\nFROM busybox\n\
         RUN --mount=type=bind,from=builder,source=/nonexistent,target=/x ls /x\n",
        &[],
    );
    let out = env.build(&ctx2, "nosource", &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    assert!(
        stderr.contains("/nonexistent in builder: not found"),
        "{stderr}"
    );
    assert!(!r.join("mnt").exists());
    assert!(!r.join("art").exists() && !r.join("single").exists());
}

/// Every file under `dir`, recursively (binary-safe), with gzip blobs also searched
/// decompressed: the paths that contain `needle`.
fn grep_tree(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let ft = fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                todo.push(p);
            } else if ft.is_file() {
                let data = fs::read(&p).unwrap();
                let mut found = contains(&data, needle);
                if !found && data.starts_with(&[0x1f, 0x8b]) {
                    let out = check(tool("gzip").arg("-dc").arg(&p));
                    found = contains(&out, needle);
                }
                if found {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

/// (4c) Secrets by file and by env, at the default path, at target=, and as env=;
/// never stored; a missing required one fails clearly.
#[test]
fn secret_mounts() {
    let env = new_env();
    let file_secret = "file-SECRET-7f3a9c1e-value";
    let env_secret = "env-SECRET-b52d08e4-value";
    let secret_file = env.path("secret.txt");
    fs::write(&secret_file, file_secret).unwrap();
    let dockerfile = r#"FROM busybox
RUN mkdir /out
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /out/default
RUN --mount=type=secret,id=tok,target=/etc/app/token sha256sum /etc/app/token | cut -d' ' -f1 > /out/target
RUN --mount=type=secret,id=envtok sha256sum /run/secrets/envtok | cut -d' ' -f1 > /out/from-env
RUN --mount=type=secret,id=tok,env=MY_TOKEN printf %s "$MY_TOKEN" | sha256sum | cut -d' ' -f1 > /out/env-option && if [ -e /run/secrets/tok ]; then echo file; else echo nofile; fi > /out/env-option-file
RUN --mount=type=secret,id=absent echo optional > /out/optional
"#;
    let ctx = env.context("ctx", dockerfile, &[]);
    let src = format!("id=tok,src={}", secret_file.display());
    let out = env
        .pybuild()
        .env("PYBUILD_TEST_SECRET", env_secret)
        .args(["build", "--progress=plain", "-t", "secrets"])
        .args(["--secret", &src])
        .args(["--secret", "id=envtok,env=PYBUILD_TEST_SECRET"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "building with secrets");
    let r = env.unpack("secrets");
    let o = r.join("out");
    let file_sum = format!("{}\n", sha256_hex(file_secret.as_bytes()));
    let env_sum = format!("{}\n", sha256_hex(env_secret.as_bytes()));
    assert_eq!(read(&o.join("default")), file_sum);
    assert_eq!(read(&o.join("target")), file_sum);
    assert_eq!(read(&o.join("from-env")), env_sum);
    assert_eq!(read(&o.join("env-option")), file_sum);
    // BuildKit: with env= and no target=, the secret is not mounted as a file.
    assert_eq!(read(&o.join("env-option-file")), "nofile\n");
    assert_eq!(read(&o.join("optional")), "optional\n");
    assert!(
        !r.join("run/secrets").exists(),
        "secret mount point in the image"
    );
    assert!(
        !r.join("etc/app").exists(),
        "secret target= mount point in the image"
    );

    // A required secret that was not given.
    let ctx2 = env.context(
        "ctx2",
        "FROM busybox\nRUN --mount=type=secret,id=needed,required=true cat /run/secrets/needed\n",
        &[],
    );
    let out2 = env.build(&ctx2, "missing", &[]);
    let stderr2 = text(&out2.stderr);
    assert!(!out2.status.success());
    assert!(stderr2.contains("Dockerfile:2"), "{stderr2}");
    assert!(stderr2.contains("\"needed\" is required"), "{stderr2}");
    assert!(env.store_manifest("missing").is_none());

    // The values appear nowhere: not in any file of the store (blobs decompressed
    // too), not in pybuild's output.
    for secret in [file_secret, env_secret] {
        let hits = grep_tree(env.root(), secret.as_bytes());
        assert!(hits.is_empty(), "secret found in {hits:?}");
        for stream in [&out.stdout, &out.stderr, &out2.stdout, &out2.stderr] {
            assert!(!text(stream).contains(secret), "secret in the output");
        }
    }
    // The grep itself can see a value that is there.
    assert!(!grep_tree(env.root(), b"optional\n").is_empty());
    env.verify_store();
}

/// (4d) `--network=none`: only the loopback interface.
#[test]
fn network_none() {
    let env = new_env();
    let ctx = env.context(
        "ctx",
        "FROM busybox\nRUN --network=none cat /proc/net/dev > /netdev\n",
        &[],
    );
    env.build_ok(&ctx, "net", &[]);
    let r = env.unpack("net");
    let ifaces: Vec<String> = read(&r.join("netdev"))
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .collect();
    assert_eq!(ifaces, vec!["lo"]);
}

/// (5) No stub /etc/hosts, /etc/resolv.conf or /etc/hostname in RUN layers on a base
/// that lacks them, while the step still sees them.
#[test]
fn no_stub_files_in_run_layers() {
    let env = new_env();
    let base = env.unpack("busybox");
    for f in ["hosts", "resolv.conf", "hostname"] {
        assert!(!base.join("etc").join(f).exists(), "base has /etc/{f}");
    }
    let dockerfile = "FROM busybox\n\
        RUN grep -q localhost /etc/hosts && echo x > /etc/touched\n\
        RUN --network=none cat /etc/hosts > /hosts-none && echo y > /etc/touched2\n\
        RUN --network=host hostname > /hostname-seen && ls /etc > /etc-seen\n";
    let ctx = env.context("ctx", dockerfile, &[]);
    env.build_ok(&ctx, "stubs", &[]);
    let layers = env.layers("stubs");
    assert_eq!(layers.len(), 5);
    for digest in &layers[2..] {
        let listing = env.layer_listing(digest);
        assert!(!listing.is_empty());
        for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
            assert!(
                !listing
                    .iter()
                    .any(|e| e == f || e.ends_with(&format!(".wh.{}", &f[4..]))),
                "{f} in a RUN layer: {listing:?}"
            );
        }
    }
    let r = env.unpack("stubs");
    assert_eq!(
        names(&r.join("etc")),
        vec!["group", "passwd", "touched", "touched2"]
    );
    assert!(read(&r.join("hosts-none")).contains("localhost"));
    assert_eq!(read(&r.join("hostname-seen")), "pybuild\n");
}

/// (6) RUN and the build cache: unchanged → cached; ENV or a used build arg changed
/// → re-run; an empty RUN is an `empty_layer` history entry with no layer.
#[test]
fn run_cache() {
    let env = new_env();
    let dockerfile = |e: &str| {
        format!(
            "FROM busybox\nENV E={e}\nRUN echo \"$E\" > /e\nARG V=d\nRUN echo \"$V\" > /v\nRUN true\n"
        )
    };
    let ctx = env.context("ctx", &dockerfile("1"), &[]);
    let first = env.build_ok(&ctx, "c", &["--build-arg", "V=one"]);
    let names_of = |out: &Output| run_steps(&text(&out.stderr));
    assert_eq!(
        names_of(&first),
        vec![
            ("RUN echo \"$E\" > /e".to_owned(), false),
            ("RUN echo \"$V\" > /v".to_owned(), false),
            ("RUN true".to_owned(), false),
        ]
    );
    // Nothing changed: everything cached.
    let again = env.build_ok(&ctx, "c", &["--build-arg", "V=one"]);
    assert!(
        names_of(&again).iter().all(|(_, cached)| *cached),
        "{:?}",
        names_of(&again)
    );
    // A different value for the declared ARG: the RUNs after it re-run.
    let arg = env.build_ok(&ctx, "c", &["--build-arg", "V=two"]);
    let cached: Vec<bool> = names_of(&arg).iter().map(|s| s.1).collect();
    assert_eq!(cached, vec![true, false, false]);
    assert_eq!(read(&env.unpack("c").join("v")), "two\n");
    // ENV changed before the RUN: it re-runs (BuildKit: ENV is part of the RUN's
    // definition).
    fs::write(ctx.join("Dockerfile"), dockerfile("2")).unwrap();
    let changed = env.build_ok(&ctx, "c", &["--build-arg", "V=two"]);
    let cached: Vec<bool> = names_of(&changed).iter().map(|s| s.1).collect();
    assert_eq!(cached, vec![false, false, false]);
    let r = env.unpack("c");
    assert_eq!(read(&r.join("e")), "2\n");

    // `RUN true`: no layer, history marks it empty.
    let config = env.store_config("c");
    assert_eq!(env.layers("c").len(), 4);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    let history = config["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert!(
        last["created_by"].as_str().unwrap().contains("RUN"),
        "{last}"
    );
    assert!(
        last["created_by"].as_str().unwrap().contains("true"),
        "{last}"
    );
    assert_eq!(last["empty_layer"], Value::Bool(true), "{last}");
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != Value::Bool(true))
        .count();
    assert_eq!(non_empty, 4);
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").unwrap() {
        let e = e.unwrap();
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(e.path().join("cmdline"))
            && cmdline == want
        {
            pids.push(pid);
        }
    }
    pids
}

/// (7) Ctrl-C during a RUN: pybuild stops promptly, kills the step's processes,
/// unmounts, and leaves the store consistent.
#[test]
fn ctrl_c_stops_run() {
    let env = new_env();
    // A number nothing else on the machine runs `sleep` with.
    let ctx = env.context("ctx", "FROM busybox\nRUN sleep 1237\n", &[]);
    assert!(processes_running(&["sleep", "1237"]).is_empty());
    let mut child = env
        .pybuild()
        .args(["build", "--progress=plain", "-t", "interrupted"])
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("RUN sleep 1237") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the RUN step never started");
    // The step line is printed before the process starts: wait for the process.
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_running(&["sleep", "1237"]).is_empty() {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    check(tool("kill").args(["-INT", &child.id().to_string()]));
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("pybuild still running 10s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = reader.join().unwrap();
    assert!(!status.success(), "interrupted build succeeded:\n{output}");
    assert!(
        processes_running(&["sleep", "1237"]).is_empty(),
        "the RUN's process survived Ctrl-C"
    );
    let root = env.root().canonicalize().unwrap();
    let mountinfo = read(Path::new("/proc/self/mountinfo"));
    let left: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(root.to_str().unwrap()))
        .collect();
    assert!(left.is_empty(), "mounts left under the store: {left:?}");
    assert!(env.store_manifest("interrupted").is_none());
    env.verify_store();
}

/// Every entry under `root` as `path mode uid:gid size link-target`, sorted.
fn tree_listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let link = fs::read_link(&path)
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let size = if meta.is_file() { meta.len() } else { 0 };
            out.push(format!(
                "{rel} {:o} {}:{} {size} {link}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `--squash`: the base image's layers plus exactly one new layer, and the same final
/// file system as the unsquashed build (deletions of base files, a directory removed
/// and recreated, files replaced across steps).
#[test]
fn squash_gives_one_new_layer_with_the_same_filesystem() {
    let env = new_env();
    let dockerfile = "FROM busybox\n\
        RUN mkdir -p /d/sub && echo 1 > /d/sub/a && echo x > /d/x && rm /bin/vi\n\
        RUN rm -rf /d && mkdir -p /d && echo 2 > /d/b\n\
        COPY f /d/\n\
        RUN rm -rf /home && mkdir /home && echo new > /home/n\n\
        CMD [\"/bin/sh\"]\n";
    let ctx = env.context("ctx", dockerfile, &[("f", "file\n")]);
    env.build_ok(&ctx, "plain", &[]);
    env.build_ok(&ctx, "squashed", &["--squash"]);
    let layers = |tag: &str| -> usize {
        let m: serde_json::Value = serde_json::from_slice(&check(
            tool("skopeo")
                .args(["inspect", "--raw"])
                .arg(format!("oci:{}:{tag}:latest", env.root().display())),
        ))
        .unwrap();
        m["layers"].as_array().unwrap().len()
    };
    let base = layers("busybox");
    assert_eq!(layers("plain"), base + 4);
    assert_eq!(layers("squashed"), base + 1);
    let plain = env.unpack("plain");
    let squashed = env.unpack("squashed");
    assert_eq!(tree_listing(&plain), tree_listing(&squashed));
    assert!(!squashed.join("bin/vi").exists());
    assert!(!squashed.join("home/app").exists());
    assert_eq!(fs::read_to_string(squashed.join("d/b")).unwrap(), "2\n");
    assert!(!squashed.join("d/sub").exists());
}

/// Independent stages run in parallel (their RUN steps overlap in the event stream),
/// and a stage the target does not need never starts.
#[test]
fn independent_stages_run_in_parallel_and_pruned_stages_never_start() {
    let env = new_env();
    let dockerfile = "FROM busybox AS left\nRUN sleep 1 && echo left > /left\n\
        FROM busybox AS right\nRUN sleep 1 && echo right > /right\n\
        FROM busybox AS unused\nRUN echo never > /never\n\
        FROM busybox\nCOPY --from=left /left /left\nCOPY --from=right /right /right\n";
    let ctx = env.context("ctx", dockerfile, &[]);
    let out = env
        .pybuild()
        .args(["build", "--progress=rawjson", "-t", "app"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_success(&out, "building app");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let vertex = |needle: &str| -> u64 {
        events
            .iter()
            .find(|e| e["name"].as_str().is_some_and(|n| n.contains(needle)))
            .and_then(|e| e["vertex"].as_u64())
            .unwrap_or_else(|| panic!("no step named {needle}: {events:?}"))
    };
    let position = |vertex: u64, status: &str| -> usize {
        events
            .iter()
            .position(|e| e["vertex"] == vertex && e["type"] == status)
            .unwrap_or_else(|| panic!("vertex {vertex} never {status}"))
    };
    let left = vertex("RUN sleep 1 && echo left");
    let right = vertex("RUN sleep 1 && echo right");
    // Both RUN steps started before either finished.
    let first_done = position(left, "step_done").min(position(right, "step_done"));
    assert!(position(left, "step_started") < first_done, "{events:?}");
    assert!(position(right, "step_started") < first_done, "{events:?}");
    // The pruned stage never started.
    assert!(
        !events
            .iter()
            .any(|e| e["name"].as_str().is_some_and(|n| n.contains("unused"))),
        "{events:?}"
    );
    let r = env.unpack("app");
    assert_eq!(fs::read_to_string(r.join("left")).unwrap(), "left\n");
    assert_eq!(fs::read_to_string(r.join("right")).unwrap(), "right\n");
    assert!(!r.join("never").exists());
}

/// `RUN --mount=type=ssh` forwards the agent socket given with `--ssh default`
/// (`SSH_AUTH_SOCK`): the step sees a socket at `$SSH_AUTH_SOCK`, and nothing of it
/// reaches the layer; a required ssh mount without an agent fails.
#[test]
fn ssh_mount_forwards_the_agent_socket() {
    let env = new_env();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("agent.sock");
    // A stand-in agent socket (the step only has to see it as a socket).
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = env.context(
        "ctx",
        "FROM busybox\n\
         RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /answer\n",
        &[],
    );
    let out = env
        .pybuild()
        .args(["build", "--progress=plain", "-t", "ssh", "--ssh", "default"])
        .arg(&ctx)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert_success(&out, "build with --ssh default");
    let r = env.unpack("ssh");
    assert_eq!(
        fs::read_to_string(r.join("answer")).unwrap(),
        "/run/buildkit/ssh_agent.0\n"
    );
    assert!(
        !r.join("run/buildkit").exists(),
        "the socket's mount point was left"
    );

    let ctx = env.context(
        "ctx2",
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
        &[],
    );
    let out = env.build(&ctx, "ssh2", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SSH agent"), "{stderr}");
}
