//! Golden tests: the parse dump and the build-graph description of the Dockerfiles in
//! `tests/golden/` must equal the checked-in `.golden` files. Set `PYBUILD_BLESS=1` to
//! rewrite them after a deliberate change (and review the diff).

use std::fs;
use std::path::Path;

use pybuild_graph::{BuildGraph, Options, Platform};

fn render(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read Dockerfile");
    let parsed = pybuild_dockerfile::parse(&text).expect("parses");
    let mut out = String::from("== dump\n");
    out.push_str(&pybuild_dockerfile::dump::dump(&parsed));
    for node in &parsed.nodes {
        let node = node.onbuild.as_deref().unwrap_or(node);
        for h in &node.heredocs {
            out.push_str(&format!(
                "== heredoc {} (line {}) fd={} expand={} chomp={}\n{}",
                h.name, h.span.start.line, h.fd, h.expand, h.chomp, h.content
            ));
        }
    }
    let options = Options {
        build_args: vec![("PYTHON".into(), "3.8".into())],
        target: None,
        build_platform: Some(Platform::parse("linux/amd64").expect("platform")),
        target_platform: Some(Platform::parse("linux/amd64").expect("platform")),
    };
    out.push_str("== graph\n");
    out.push_str(
        &BuildGraph::new(&parsed, &options)
            .expect("plans")
            .describe(),
    );
    out
}

#[test]
fn golden_files_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("PYBUILD_BLESS").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .expect("golden dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
    {
        let got = render(path);
        let golden = path.with_extension("golden");
        if bless {
            fs::write(&golden, &got).expect("write golden");
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            got,
            want,
            "{} differs from {}",
            path.display(),
            golden.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "expected two golden Dockerfiles");
}
