//! Typed instructions (filled in after the parser).
