//! Malicious contexts: symlinks out of the context are copied as symlinks (never
//! followed), `COPY ../x` is cleaned to inside the context (as BuildKit), the
//! `.dockerignore` tricks keep what they exclude out, and a 100,000-file context is
//! built with bounded memory.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use crate::{Canary, Tally, World, all_output, peak_rss_kb, run_ok};

/// The image's root filesystem, exported with `--output type=local`.
fn build_local(
    world: &World,
    ctx: &std::path::Path,
    name: &str,
) -> Result<std::path::PathBuf, String> {
    let dest = world.path(&format!("out-{name}"));
    let out = world
        .pybuild()
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(dest)
    } else {
        Err(all_output(&out))
    }
}

#[test]
fn malicious_contexts() {
    let world = World::new("context");
    let canary = Canary::new("context");
    world.busybox();
    let mut tally = Tally::new("malicious contexts");
    let secret = canary.dir.join("keep");

    // Symlinks pointing outside: copied as links.
    let ctx = world.context("links", "FROM busybox\nCOPY . /ctx/\n", &[("a", "a")]);
    symlink(&secret, ctx.join("abs-link")).unwrap();
    symlink("../../../../../../../../etc/passwd", ctx.join("rel-link")).unwrap();
    symlink(&canary.dir, ctx.join("dir-link")).unwrap();
    let result = build_local(&world, &ctx, "links").and_then(|r| {
        for (link, target) in [
            ("abs-link", secret.display().to_string()),
            ("rel-link", "../../../../../../../../etc/passwd".into()),
            ("dir-link", canary.dir.display().to_string()),
        ] {
            let p = r.join("ctx").join(link);
            let meta = fs::symlink_metadata(&p).map_err(|e| format!("{link}: {e}"))?;
            if !meta.file_type().is_symlink() {
                return Err(format!("{link} was followed"));
            }
            if fs::read_link(&p).unwrap().display().to_string() != target {
                return Err(format!("{link} points elsewhere"));
            }
        }
        canary.check()
    });
    tally.case("symlinks-out-of-context-stay-links", result);

    // COPY through a symlinked directory source: refused or copied as a link, never
    // the canary's content.
    let ctx = world.context("through", "FROM busybox\nCOPY dir-link/keep /stolen\n", &[]);
    symlink(&canary.dir, ctx.join("dir-link")).unwrap();
    let result = match build_local(&world, &ctx, "through") {
        Ok(r) => match fs::read(r.join("stolen")) {
            Ok(bytes) if bytes == b"canary\n" => Err("read the canary through a link".into()),
            _ => Ok(()),
        },
        Err(_) => Ok(()),
    };
    tally.case(
        "copy-through-symlinked-dir",
        result.and_then(|()| canary.check()),
    );

    // COPY ../x: cleaned to the context's own x.
    fs::write(world.path("x"), "outside\n").unwrap();
    let ctx = world.context(
        "dotdot",
        "FROM busybox\nCOPY ../x /x\nCOPY ../../../x /y\n",
        &[("x", "inside\n")],
    );
    let result = build_local(&world, &ctx, "dotdot").and_then(|r| {
        let x = fs::read_to_string(r.join("x")).map_err(|e| e.to_string())?;
        let y = fs::read_to_string(r.join("y")).map_err(|e| e.to_string())?;
        if x == "inside\n" && y == "inside\n" {
            Ok(())
        } else {
            Err(format!("x={x:?} y={y:?}"))
        }
    });
    tally.case("copy-dotdot-is-cleaned", result);

    // .dockerignore: `!` re-includes under an excluded parent, `**`.
    let ctx = world.context(
        "ignore",
        "FROM busybox\nCOPY . /c/\n",
        &[
            (
                ".dockerignore",
                "secrets\n!secrets/public.txt\n**/*.key\n**/.git\n",
            ),
            ("secrets/private.txt", "p"),
            ("secrets/public.txt", "ok"),
            ("deep/a/b/id.key", "k"),
            ("deep/a/b/keep.txt", "k"),
            ("sub/.git/config", "g"),
        ],
    );
    let result = build_local(&world, &ctx, "ignore").and_then(|r| {
        let c = r.join("c");
        let want = [
            ("secrets/private.txt", false),
            ("secrets/public.txt", true),
            ("deep/a/b/id.key", false),
            ("deep/a/b/keep.txt", true),
            ("sub/.git/config", false),
        ];
        for (p, present) in want {
            if c.join(p).exists() != present {
                return Err(format!("{p}: present={}", !present));
            }
        }
        Ok(())
    });
    tally.case("dockerignore-reinclude-and-doublestar", result);

    run_ok(world.pybuild().args(["store", "verify"]));
    tally.finish();
}

/// A 100,000-file context builds in bounded memory (it peaked at ~594 MB until COPY's
/// cache key stopped holding a JSON tree per file: keys are now hashed as they are
/// built, `ListHasher` in the solver).
#[test]
fn context_of_100000_files_builds_in_bounded_memory() {
    let world = World::new("context-many");
    world.busybox();
    let mut tally = Tally::new("100,000-file context");
    // 100,000 files: memory stays bounded.
    let ctx = world.context("many", "FROM busybox\nCOPY . /many/\n", &[]);
    for d in 0..100 {
        let dir = ctx.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}")).unwrap();
        }
    }
    let mut cmd: Command = world.pybuild();
    cmd.args(["build", "-q", "-t", "many"]).arg(&ctx);
    let (out, rss) = peak_rss_kb(cmd);
    let result = if !out.status.success() {
        Err(all_output(&out))
    } else if rss > 200 << 10 {
        Err(format!("peak RSS {rss} kB > 200 MB"))
    } else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("ROBUST 100,000-file context: peak RSS {rss} kB\n").as_bytes(),
        );
        world.verify()
    };
    tally.case("context-of-100000-files", result);
    tally.finish();
}
