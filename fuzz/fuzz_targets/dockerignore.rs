//! Any .dockerignore content and any path: parse, compile and match without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, path) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    let Ok(lines) = pybuild_context::parse_dockerignore(patterns) else {
        return;
    };
    if let Ok(m) = pybuild_context::PatternMatcher::new(&lines) {
        let _ = m.matches(path);
        let _ = m.matches_or_parent_matches(path);
        let _ = m.may_reinclude_under(path);
    }
});
