//! Any text: the parser, the instruction checker, the graph builder and the dump must
//! return a value or an error, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = pybuild_dockerfile::parse(&text) else {
        return;
    };
    let _ = pybuild_dockerfile::dump::dump(&parsed);
    if let Err(e) = pybuild_dockerfile::instructions::parse_all(&parsed) {
        let _ = e.render("Dockerfile", &text);
    }
    let options = pybuild_graph::Options {
        build_args: vec![("A".into(), "1".into())],
        ..Default::default()
    };
    if let Ok(graph) = pybuild_graph::BuildGraph::new(&parsed, &options) {
        let _ = graph.describe();
    }
});
