//! Word expansion, as BuildKit's shell lexer does it (filled in by the shell-lexer work).
