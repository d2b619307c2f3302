//! Source resolution, walking and the stat cache against real temporary directories.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, SystemTime};

use pybuild_context::{
    Context, Digest, Entry, EntryKind, Error, HashStats, PatternMatcher, SourceMatch,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn write(root: &Path, rel: &str, content: &str) -> std::io::Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, content)
}

fn matcher(patterns: &[&str]) -> PatternMatcher {
    match PatternMatcher::new(patterns) {
        Ok(m) => m,
        Err(e) => panic!("{patterns:?}: {e}"),
    }
}

fn context(root: &Path, ignore: &[&str]) -> Result<Context, Error> {
    Context::new(root, matcher(ignore))
}

/// A small tree: a.py b.py c.txt src/{x/x, y/x, y/z, z.py} docs/readme.md
fn sample() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    for (rel, content) in [
        ("a.py", "a"),
        ("b.py", "b"),
        ("c.txt", "c"),
        ("src/x/x", "sx"),
        ("src/y/x", "syx"),
        ("src/y/z", "syz"),
        ("src/z.py", "sz"),
        ("docs/readme.md", "readme"),
    ] {
        write(root, rel, content)?;
    }
    Ok(dir)
}

fn one(ctx: &Context, src: &str) -> Result<SourceMatch, Error> {
    let mut matches = ctx.resolve(src)?;
    assert_eq!(matches.len(), 1, "{src}: {matches:?}");
    Ok(matches.remove(0))
}

fn requested(matches: &[SourceMatch]) -> Vec<&str> {
    matches.iter().map(|m| m.requested.as_str()).collect()
}

fn paths(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.rel_path.as_str()).collect()
}

fn not_found(result: Result<Vec<SourceMatch>, Error>) -> bool {
    matches!(result, Err(Error::SourceNotFound { .. }))
}

#[test]
fn resolves_plain_files_dirs_and_the_root() -> TestResult {
    let dir = sample()?;
    let ctx = context(dir.path(), &[])?;
    let m = one(&ctx, "a.py")?;
    assert_eq!((m.rel_path.as_str(), m.is_dir), ("a.py", false));
    let m = one(&ctx, "src")?;
    assert_eq!((m.rel_path.as_str(), m.is_dir), ("src", true));
    for root in [".", "./", "/", ""] {
        let m = one(&ctx, root)?;
        assert_eq!((m.rel_path.as_str(), m.is_dir), ("", true), "{root:?}");
    }
    for src in [
        "./src/x/",
        "/src/x",
        "src//x/.",
        "src/y/../x",
        "../src/x",
        "../../src/x/",
    ] {
        let m = one(&ctx, src)?;
        assert_eq!((m.rel_path.as_str(), m.is_dir), ("src/x", true), "{src:?}");
        assert_eq!(m.requested, "src/x");
    }
    // A trailing slash on a file is accepted (BuildKit cleans it away when copying).
    assert_eq!(one(&ctx, "a.py/")?.rel_path, "a.py");
    assert!(not_found(ctx.resolve("missing")));
    assert!(not_found(ctx.resolve("a.py/x")));
    assert!(matches!(
        ctx.resolve("nope"),
        Err(Error::SourceNotFound { src }) if src == "nope"
    ));
    Ok(())
}

#[test]
fn context_root_must_be_a_directory() -> TestResult {
    let dir = sample()?;
    assert!(matches!(
        context(&dir.path().join("a.py"), &[]),
        Err(Error::Io { .. })
    ));
    assert!(context(&dir.path().join("missing"), &[]).is_err());
    Ok(())
}

#[test]
fn wildcards_match_segment_by_segment_sorted() -> TestResult {
    let dir = sample()?;
    let ctx = context(dir.path(), &[])?;
    assert_eq!(requested(&ctx.resolve("*.py")?), ["a.py", "b.py"]);
    assert_eq!(requested(&ctx.resolve("./*.py")?), ["a.py", "b.py"]);
    assert_eq!(requested(&ctx.resolve("src/*/x")?), ["src/x/x", "src/y/x"]);
    assert_eq!(
        requested(&ctx.resolve("src/*")?),
        ["src/x", "src/y", "src/z.py"]
    );
    assert_eq!(requested(&ctx.resolve("[ab].py")?), ["a.py", "b.py"]);
    assert_eq!(requested(&ctx.resolve("[^a].*")?), ["b.py", "c.txt"]);
    assert_eq!(requested(&ctx.resolve("?.txt")?), ["c.txt"]);
    assert_eq!(requested(&ctx.resolve("src/y/[x-y]")?), ["src/y/x"]);
    let dirs: Vec<bool> = ctx.resolve("src/*")?.iter().map(|m| m.is_dir).collect();
    assert_eq!(dirs, [true, true, false]);
    // `*` never crosses `/`.
    assert_eq!(requested(&ctx.resolve("*.md")?), Vec::<&str>::new());
    assert_eq!(requested(&ctx.resolve("*/*.md")?), ["docs/readme.md"]);
    assert_eq!(requested(&ctx.resolve("*/x")?), ["src/x"]);
    assert!(matches!(
        ctx.resolve("src/[x"),
        Err(Error::BadSourcePattern { .. })
    ));
    Ok(())
}

#[test]
fn wildcard_without_match_is_empty_not_an_error() -> TestResult {
    // BuildKit: dockerfile2llb sets AllowEmptyWildcard for COPY/ADD and the file
    // backend's docopy returns without copying when nothing matches.
    let dir = sample()?;
    let ctx = context(dir.path(), &[])?;
    assert!(ctx.resolve("*.rs")?.is_empty());
    assert!(ctx.resolve("missing/*.py")?.is_empty());
    assert!(ctx.resolve("a.py/*")?.is_empty());
    Ok(())
}

#[test]
fn dockerignore_hides_sources_and_wildcard_matches() -> TestResult {
    let dir = sample()?;
    let ctx = context(dir.path(), &["b.py", "docs", "src/y", "!src/y/z"])?;
    assert!(not_found(ctx.resolve("b.py")));
    assert!(not_found(ctx.resolve("docs")));
    assert!(not_found(ctx.resolve("docs/readme.md")));
    assert!(not_found(ctx.resolve("src/y/x")));
    // An excluded directory holding a re-included file is still in the context.
    assert!(one(&ctx, "src/y")?.is_dir);
    assert_eq!(one(&ctx, "src/y/z")?.rel_path, "src/y/z");
    assert_eq!(requested(&ctx.resolve("*.py")?), ["a.py"]);
    assert_eq!(requested(&ctx.resolve("src/*/x")?), ["src/x/x"]);
    assert_eq!(requested(&ctx.resolve("src/y/*")?), ["src/y/z"]);
    assert_eq!(requested(&ctx.resolve("d*")?), Vec::<&str>::new());
    Ok(())
}

#[test]
fn source_symlinks_are_followed_inside_the_context() -> TestResult {
    let dir = sample()?;
    let root = dir.path();
    symlink("src/y", root.join("linkdir"))?;
    symlink("/src/x", root.join("abslink"))?;
    symlink("../../../../c.txt", root.join("src/up"))?;
    symlink("/etc", root.join("hostetc"))?;
    symlink("nowhere", root.join("dangling"))?;
    symlink("a.py", root.join("filelink"))?;
    let ctx = context(root, &[])?;

    let m = one(&ctx, "linkdir")?;
    assert_eq!((m.rel_path.as_str(), m.is_dir), ("src/y", true));
    assert_eq!(m.requested, "linkdir");
    // A link as an intermediate component, and a wildcard under it.
    assert_eq!(one(&ctx, "linkdir/z")?.rel_path, "src/y/z");
    assert_eq!(
        requested(&ctx.resolve("linkdir/*")?),
        ["linkdir/x", "linkdir/z"]
    );
    let reals: Vec<String> = ctx
        .resolve("linkdir/*")?
        .into_iter()
        .map(|m| m.rel_path)
        .collect();
    assert_eq!(reals, ["src/y/x", "src/y/z"]);
    // Absolute targets start at the context root, not the host root.
    assert_eq!(one(&ctx, "abslink")?.rel_path, "src/x");
    // `..` stops at the context root.
    assert_eq!(one(&ctx, "src/up")?.rel_path, "c.txt");
    // `/etc` is `<context>/etc`, which does not exist: never the host's /etc.
    assert!(not_found(ctx.resolve("hostetc")));
    assert!(not_found(ctx.resolve("hostetc/passwd")));
    assert!(not_found(ctx.resolve("dangling")));
    let m = one(&ctx, "filelink")?;
    assert_eq!(
        (m.rel_path.as_str(), m.requested.as_str()),
        ("a.py", "filelink")
    );
    // A wildcard matching a symlink follows it; one leading nowhere is an error naming it.
    let m = ctx.resolve("file*")?;
    assert_eq!(m.first().map(|m| m.rel_path.as_str()), Some("a.py"));
    assert!(matches!(
        ctx.resolve("dang*"),
        Err(Error::SourceNotFound { src }) if src == "dangling"
    ));
    Ok(())
}

#[test]
fn symlink_loops_are_reported() -> TestResult {
    let dir = sample()?;
    let root = dir.path();
    symlink("loop2", root.join("loop1"))?;
    symlink("loop1", root.join("loop2"))?;
    symlink("self/x", root.join("self"))?;
    let ctx = context(root, &[])?;
    assert!(matches!(ctx.resolve("loop1"), Err(Error::SymlinkLoop { src }) if src == "loop1"));
    assert!(matches!(
        ctx.resolve("self"),
        Err(Error::SymlinkLoop { .. })
    ));
    assert!(matches!(
        ctx.resolve("loop1/*"),
        Err(Error::SymlinkLoop { .. })
    ));
    Ok(())
}

#[test]
fn walk_is_sorted_with_digests_and_metadata() -> TestResult {
    let dir = sample()?;
    let root = dir.path();
    write(root, "src/x.txt", "dot sorts before slash")?;
    let ctx = context(root, &[])?;
    let entries = ctx.walk(&one(&ctx, "src")?, &PatternMatcher::default())?;
    assert_eq!(
        paths(&entries),
        [
            "src",
            "src/x",
            "src/x.txt",
            "src/x/x",
            "src/y",
            "src/y/x",
            "src/y/z",
            "src/z.py"
        ]
    );
    let file = entries
        .iter()
        .find(|e| e.rel_path == "src/y/z")
        .ok_or("missing")?;
    assert_eq!(
        file.kind,
        EntryKind::File {
            digest: Digest::of(b"syz"),
            size: 3
        }
    );
    assert_eq!(file.path, root.join("src/y/z"));
    let meta = fs::metadata(root.join("src/y/z"))?;
    use std::os::unix::fs::MetadataExt;
    assert_eq!(file.mode, meta.mode() & 0o7777);
    assert_eq!(
        (file.uid, file.gid, file.mtime),
        (meta.uid(), meta.gid(), meta.mtime())
    );
    assert_eq!(entries.first().map(|e| &e.kind), Some(&EntryKind::Dir));

    // A file match walks to itself; the root walks everything.
    let single = ctx.walk(&one(&ctx, "a.py")?, &PatternMatcher::default())?;
    assert_eq!(paths(&single), ["a.py"]);
    let all = ctx.walk(&one(&ctx, ".")?, &PatternMatcher::default())?;
    assert_eq!(all.first().map(|e| e.rel_path.as_str()), Some(""));
    assert_eq!(all.len(), 14);
    let mut sorted = paths(&all);
    sorted.sort_unstable();
    assert_eq!(sorted, paths(&all));
    Ok(())
}

#[test]
fn walk_applies_dockerignore_with_reinclusion() -> TestResult {
    let dir = sample()?;
    let root = dir.path();
    write(root, "src/y/deep/keep.txt", "k")?;
    write(root, "src/y/deep/drop.txt", "d")?;
    let ctx = context(root, &["src/y", "!src/y/deep/keep.txt", "docs", "*.txt"])?;
    let entries = ctx.walk(&one(&ctx, ".")?, &PatternMatcher::default())?;
    assert_eq!(
        paths(&entries),
        [
            "",
            "a.py",
            "b.py",
            "src",
            "src/x",
            "src/x/x",
            "src/y",
            "src/y/deep",
            "src/y/deep/keep.txt",
            "src/z.py"
        ]
    );
    Ok(())
}

#[test]
fn walk_applies_exclude_relative_to_the_match() -> TestResult {
    let dir = sample()?;
    let ctx = context(dir.path(), &[])?;
    let m = one(&ctx, "src")?;
    let entries = ctx.walk(&m, &matcher(&["y", "*.py"]))?;
    assert_eq!(paths(&entries), ["src", "src/x", "src/x/x"]);
    let entries = ctx.walk(&m, &matcher(&["y", "!y/z"]))?;
    assert_eq!(
        paths(&entries),
        ["src", "src/x", "src/x/x", "src/y", "src/y/z", "src/z.py"]
    );
    // The exclude patterns are relative to the match, so `src/...` matches nothing.
    let entries = ctx.walk(&m, &matcher(&["src/y"]))?;
    assert_eq!(entries.len(), 7);
    Ok(())
}

#[test]
fn walk_returns_symlinks_and_special_files_unfollowed() -> TestResult {
    let dir = sample()?;
    let root = dir.path();
    symlink("../docs", root.join("src/docs"))?;
    symlink("/etc/passwd", root.join("src/passwd"))?;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("src/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )?;
    let ctx = context(root, &[])?;
    let entries = ctx.walk(&one(&ctx, "src")?, &PatternMatcher::default())?;
    let kind = |rel: &str| {
        entries
            .iter()
            .find(|e| e.rel_path == rel)
            .map(|e| e.kind.clone())
    };
    assert_eq!(
        kind("src/docs"),
        Some(EntryKind::Symlink {
            target: "../docs".into()
        })
    );
    assert_eq!(
        kind("src/passwd"),
        Some(EntryKind::Symlink {
            target: "/etc/passwd".into()
        })
    );
    assert_eq!(kind("src/fifo"), Some(EntryKind::Other));
    assert!(entries.iter().all(|e| !e.rel_path.starts_with("src/docs/")));
    Ok(())
}

#[test]
fn non_utf8_names_are_rejected() -> TestResult {
    use std::os::unix::ffi::OsStrExt;
    let dir = sample()?;
    fs::write(
        dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff")),
        "x",
    )?;
    let ctx = context(dir.path(), &[])?;
    assert!(matches!(
        ctx.walk(&one(&ctx, ".")?, &PatternMatcher::default()),
        Err(Error::NonUtf8Path { .. })
    ));
    assert!(matches!(ctx.resolve("*"), Err(Error::NonUtf8Path { .. })));
    Ok(())
}

// ---- the stat cache ----

const SHORT: Duration = Duration::from_millis(20);

/// Wait until files just written are older than the short margin used below.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

fn walk_all(ctx: &Context) -> Result<Vec<Entry>, Error> {
    let m = one(ctx, ".")?;
    ctx.walk(&m, &PatternMatcher::default())
}

fn digest_of(entries: &[Entry], rel: &str) -> Option<Digest> {
    entries.iter().find_map(|e| match &e.kind {
        EntryKind::File { digest, .. } if e.rel_path == rel => Some(digest.clone()),
        _ => None,
    })
}

fn set_mtime(path: &Path, when: SystemTime) -> std::io::Result<()> {
    fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(when)
}

#[test]
fn second_walk_uses_the_cache() -> TestResult {
    let dir = sample()?;
    settle();
    let ctx = context(dir.path(), &[])?.with_stat_cache_margin(SHORT);
    walk_all(&ctx)?;
    assert_eq!(
        ctx.stats(),
        HashStats {
            files_hashed: 8,
            cache_hits: 0
        }
    );
    let again = walk_all(&ctx)?;
    assert_eq!(
        ctx.stats(),
        HashStats {
            files_hashed: 8,
            cache_hits: 8
        }
    );
    assert_eq!(digest_of(&again, "src/y/z"), Some(Digest::of(b"syz")));
    Ok(())
}

#[test]
fn same_size_rewrite_with_restored_mtime_is_rehashed() -> TestResult {
    // moby/buildkit#4950: size and mtime equal, content different.
    let dir = sample()?;
    let path = dir.path().join("a.py");
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::write(&path, "old!")?;
    set_mtime(&path, old)?;
    settle();
    let ctx = context(dir.path(), &[])?.with_stat_cache_margin(SHORT);
    assert_eq!(
        digest_of(&walk_all(&ctx)?, "a.py"),
        Some(Digest::of(b"old!"))
    );

    fs::write(&path, "new!")?;
    set_mtime(&path, old)?;
    let before = ctx.stats();
    let entries = walk_all(&ctx)?;
    assert_eq!(digest_of(&entries, "a.py"), Some(Digest::of(b"new!")));
    assert_eq!(ctx.stats().files_hashed, before.files_hashed + 1);
    Ok(())
}

#[test]
fn touch_rehashes_to_the_same_digest() -> TestResult {
    let dir = sample()?;
    settle();
    let ctx = context(dir.path(), &[])?.with_stat_cache_margin(SHORT);
    walk_all(&ctx)?;
    set_mtime(&dir.path().join("c.txt"), SystemTime::now())?;
    let before = ctx.stats();
    let entries = walk_all(&ctx)?;
    assert_eq!(digest_of(&entries, "c.txt"), Some(Digest::of(b"c")));
    assert_eq!(ctx.stats().files_hashed, before.files_hashed + 1);
    assert_eq!(ctx.stats().cache_hits, before.cache_hits + 7);
    Ok(())
}

#[test]
fn racily_new_files_are_always_rehashed() -> TestResult {
    // With the default 2 s margin, files written just now are never trusted.
    let dir = sample()?;
    let ctx = context(dir.path(), &[])?;
    walk_all(&ctx)?;
    walk_all(&ctx)?;
    assert_eq!(
        ctx.stats(),
        HashStats {
            files_hashed: 16,
            cache_hits: 0
        }
    );
    Ok(())
}

#[test]
fn cache_file_round_trips_and_is_bounded() -> TestResult {
    let dir = sample()?;
    let state = tempfile::tempdir()?;
    let file = state.path().join("statcache.json");
    settle();
    let ctx = context(dir.path(), &[])?
        .with_stat_cache_margin(SHORT)
        .with_stat_cache(file.clone());
    walk_all(&ctx)?;
    ctx.save_stat_cache()?;
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&file)?)?;
    assert_eq!(json["version"], 1);
    assert_eq!(json["entries"].as_object().map(|e| e.len()), Some(8));
    assert!(json["entries"]["src/y/z"].is_object());

    let ctx = context(dir.path(), &[])?
        .with_stat_cache(file.clone())
        .with_stat_cache_margin(SHORT);
    let entries = walk_all(&ctx)?;
    assert_eq!(
        ctx.stats(),
        HashStats {
            files_hashed: 0,
            cache_hits: 8
        }
    );
    assert_eq!(
        digest_of(&entries, "docs/readme.md"),
        Some(Digest::of(b"readme"))
    );

    // Saving after walking only part of the context keeps only what was seen.
    let ctx = context(dir.path(), &[])?
        .with_stat_cache(file.clone())
        .with_stat_cache_margin(SHORT);
    ctx.walk(&one(&ctx, "src/y")?, &PatternMatcher::default())?;
    ctx.save_stat_cache()?;
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&file)?)?;
    let keys: Vec<&String> = json["entries"]
        .as_object()
        .ok_or("entries")?
        .keys()
        .collect();
    assert_eq!(keys, ["src/y/x", "src/y/z"]);
    // No stray temporary files are left next to it.
    assert_eq!(fs::read_dir(state.path())?.count(), 1);
    Ok(())
}

#[test]
fn corrupt_or_foreign_cache_files_are_ignored() -> TestResult {
    let dir = sample()?;
    let state = tempfile::tempdir()?;
    let file = state.path().join("statcache.json");
    settle();
    for content in [
        "not json at all".to_owned(),
        r#"{"version":2,"entries":{}}"#.to_owned(),
        r#"{"version":1,"entries":{"a.py":{"digest":"bogus"}}}"#.to_owned(),
    ] {
        fs::write(&file, content)?;
        let ctx = context(dir.path(), &[])?
            .with_stat_cache(file.clone())
            .with_stat_cache_margin(SHORT);
        let entries = walk_all(&ctx)?;
        assert_eq!(ctx.stats().files_hashed, 8);
        assert_eq!(digest_of(&entries, "a.py"), Some(Digest::of(b"a")));
        ctx.save_stat_cache()?;
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&file)?)?;
        assert_eq!(json["version"], 1);
    }
    // Without a cache file, saving is a no-op.
    context(dir.path(), &[])?.save_stat_cache()?;
    Ok(())
}
