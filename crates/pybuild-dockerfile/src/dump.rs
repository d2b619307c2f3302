//! BuildKit's S-expression dump of a parse tree.
//!
//! One line per instruction: `(keyword ["--flag" ...] "arg" ...)`, strings quoted the
//! way Go's `strconv.Quote` does it, `ONBUILD` wrapping its instruction as a nested
//! list. It exists so the parser can be compared byte for byte with BuildKit's
//! (`parser/testfiles/*/result`) and so users can see how a line was split
//! (`pybuild debug dump`).

use crate::parser::{Dockerfile, Node};

/// The whole file, one line per instruction, each ending in a newline.
pub fn dump(dockerfile: &Dockerfile) -> String {
    let mut out = String::new();
    for node in &dockerfile.nodes {
        out.push_str(&dump_node(node));
        out.push('\n');
    }
    out
}

/// One instruction, without the trailing newline.
pub fn dump_node(node: &Node) -> String {
    let mut out = String::from("(");
    out.push_str(&node.keyword);
    if !node.flags.is_empty() {
        out.push_str(" [");
        let quoted: Vec<String> = node.flags.iter().map(|f| go_quote(&f.value)).collect();
        out.push_str(&quoted.join(" "));
        out.push(']');
    }
    if let Some(inner) = &node.onbuild {
        out.push(' ');
        out.push_str(&dump_node(inner));
    } else if node.args.is_empty() && !is_known(&node.keyword) {
        // BuildKit keeps unknown instructions with one empty argument.
        out.push_str(" \"\"");
    }
    for arg in &node.args {
        out.push(' ');
        out.push_str(&go_quote(&arg.value));
    }
    out.push(')');
    out
}

fn is_known(keyword: &str) -> bool {
    crate::parser::KEYWORDS.contains(&keyword)
}

/// Quote a string as Go's `strconv.Quote` does: printable characters as they are,
/// the usual C escapes, `\xNN` for other ASCII controls, `\uNNNN`/`\UNNNNNNNN` for
/// other non-printable characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint` for non-ASCII characters: letters,
/// marks, numbers, punctuation and symbols are printable; controls, separators other
/// than the ASCII space, format characters, surrogates, private use and
/// non-characters are not.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if u < 0x80 {
        return (0x20..0x7f).contains(&u);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(u,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
        | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f
        | 0xd800..=0xdfff | 0xe000..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff
        | 0xfff9..=0xfffb | 0xfffe | 0xffff | 0xf0000..=0x10ffff)
        && (u & 0xfffe) != 0xfffe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a \"b\""), r#""a \"b\"""#);
        assert_eq!(go_quote("\u{0}\t\n"), r#""\x00\t\n""#);
        assert_eq!(go_quote("♥☃"), "\"♥☃\"");
        assert_eq!(go_quote("\u{200b}"), r#""\u200b""#);
        assert_eq!(go_quote("\u{7f}"), r#""\x7f""#);
    }

    #[test]
    fn dumps_flags_onbuild_and_empty_args() {
        let df =
            crate::parse("FROM x\nONBUILD COPY --from=a . /\nCMD []\nFOO bar\n").expect("parses");
        assert_eq!(
            dump(&df),
            "(from \"x\")\n(onbuild (copy [\"--from=a\"] \".\" \"/\"))\n(cmd)\n(foo \"\")\n"
        );
    }
}
