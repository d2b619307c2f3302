//! Any word, in every lexer mode, with both escape characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pybuild_dockerfile::shell::Lexer;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let word = String::from_utf8_lossy(rest);
    let env: Vec<(String, String)> = vec![
        ("A".into(), "a b".into()),
        ("EMPTY".into(), String::new()),
        ("PWD".into(), "/home".into()),
    ];
    let escape = if mode & 1 == 0 { '\\' } else { '`' };
    let lexer = Lexer::new(escape)
        .raw_quotes(mode & 2 != 0)
        .raw_escapes(mode & 4 != 0)
        .skip_unset_env(mode & 8 != 0);
    let _ = lexer.expand_word(&word, &env);
    let _ = lexer.expand_words(&word, &env);
    let _ = lexer.expand_word_with_matches(&word, &env);
});
