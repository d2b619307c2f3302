//! `--chmod`: octal (`0755`) or symbolic (`u+x,go-w`, `a=rX`), as BuildKit accepts
//! (Dockerfile frontend 1.14 added symbolic modes). Symbolic modes apply relative to
//! each copied entry's own mode, as chmod(1) does.

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An absolute mode.
    Octal(u32),
    /// chmod(1) clauses, applied in order.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32,
    op: char,
    perms: String,
}

impl Chmod {
    /// Parse a `--chmod` value; `None` when it is neither form.
    pub fn parse(text: &str) -> Option<Chmod> {
        if !text.is_empty() && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let mode = u32::from_str_radix(text, 8).ok()?;
            return (mode <= 0o7777).then_some(Chmod::Octal(mode));
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            let op_at = part.find(['+', '-', '='])?;
            let (who_text, rest) = part.split_at(op_at);
            let mut who = 0;
            for c in who_text.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return None,
                };
            }
            let mut chars = rest.chars();
            let op = chars.next()?;
            let perms: String = chars.collect();
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return None;
            }
            clauses.push(Clause {
                who: if who == 0 { 0o7777 } else { who },
                op,
                perms,
            });
        }
        (!clauses.is_empty()).then_some(Chmod::Symbolic(clauses))
    }

    /// The new permission bits of an entry whose current mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = mode & 0o7777;
                for c in clauses {
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    match c.op {
                        '+' => mode |= bits,
                        '-' => mode &= !bits,
                        _ => mode = (mode & !(c.who & 0o7777)) | bits,
                    }
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600, false), 0o755);
        assert_eq!(Chmod::parse("0644").unwrap().apply(0o777, true), 0o644);
        assert_eq!(Chmod::parse("u+x").unwrap().apply(0o644, false), 0o744);
        assert_eq!(Chmod::parse("go-w").unwrap().apply(0o666, false), 0o644);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o700, true), 0o555);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o600, false), 0o444);
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o644, false), 0o755);
        assert_eq!(
            Chmod::parse("u=rwx,g=rx,o=").unwrap().apply(0, false),
            0o750
        );
        assert!(Chmod::parse("8").is_none());
        assert!(Chmod::parse("77777").is_none());
        assert!(Chmod::parse("z+x").is_none());
        assert!(Chmod::parse("u+q").is_none());
        assert!(Chmod::parse("").is_none());
    }
}
