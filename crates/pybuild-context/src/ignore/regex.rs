//! A tiny regular-expression engine for the expressions moby's pattern matcher builds.
//!
//! moby/patternmatcher does not match globs directly: it rewrites a pattern into a Go
//! (RE2) regular expression, passing `[`, `]`, `^` and backslash escapes through
//! untouched. The glob syntax check it runs first (Go's `filepath.Match`) accepts texts
//! whose regular-expression reading differs from their glob reading — `[*]`, `\d`,
//! `[[:digit:]]`, a `^` in the middle of a pattern — and Docker then uses the regular
//! expression's meaning. To give the same answers we translate the same way (see
//! `glob.rs`) and run the result here.
//!
//! Only the Go syntax the translation can produce is understood: literals, `.`, classes
//! (ranges, `^` negation, escapes, `[:name:]` POSIX groups, `\d\s\w` and their negations),
//! `^`/`$`/`\A`/`\z`, `\b`/`\B`, `\Q…\E`, groups and the `*`, `+`, `?` repetitions. The
//! Unicode group escapes `\p`/`\P` need Unicode tables and are reported as unsupported
//! rather than silently given another meaning.
//!
//! Matching is a Pike VM (a breadth-first simulation of the compiled program), so time is
//! bounded by `text length × program length` whatever the pattern: no backtracking blow-up
//! on hostile input, and no recursion whose depth the input controls.

/// Deepest group nesting accepted. The translation never nests groups; the limit only
/// keeps hand-written expressions from building deep trees.
const MAX_GROUP_DEPTH: usize = 100;

/// A compiled expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Regex {
    insts: Vec<Inst>,
}

/// One instruction of the compiled program.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inst {
    /// Consume this code point.
    Char(u32),
    /// Consume anything but a newline (Go's `.` without the `s` flag).
    AnyNotNewline,
    /// Consume one code point of the class.
    Class(Class),
    /// Zero-width assertion.
    Look(Look),
    /// Continue at both targets.
    Split(usize, usize),
    /// Continue at the target.
    Jump(usize),
    /// The expression has matched.
    Match,
}

/// Zero-width assertions. moby compiles with Go's defaults, where `^` and `$` only
/// match at the beginning and end of the whole text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Start,
    End,
    WordBoundary,
    NotWordBoundary,
}

/// A set of code points: sorted-or-not inclusive ranges, possibly complemented.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        let c = u32::from(c);
        // Go compiles classes with its "ClassNL" flag, so `[^a]` does match a newline.
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Parsed expression tree, before compilation.
#[derive(Debug, Clone)]
enum Node {
    Char(u32),
    AnyNotNewline,
    Class(Class),
    Look(Look),
    Group(Vec<Node>),
    Repeat(Box<Node>, Repetition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repetition {
    ZeroOrMore,
    OneOrMore,
    ZeroOrOne,
}

const MAX_CODE_POINT: u32 = 0x10_FFFF;

// ASCII groups as Go's regexp/syntax defines them.
const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const SPACE_PERL: &[(u32, u32)] = &[(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];

fn posix_group(name: &str) -> Option<&'static [(u32, u32)]> {
    Some(match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
        "alpha" => &[(0x41, 0x5A), (0x61, 0x7A)],
        "ascii" => &[(0x00, 0x7F)],
        "blank" => &[(0x09, 0x09), (0x20, 0x20)],
        "cntrl" => &[(0x00, 0x1F), (0x7F, 0x7F)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7E)],
        "lower" => &[(0x61, 0x7A)],
        "print" => &[(0x20, 0x7E)],
        "punct" => &[(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
        "space" => &[(0x09, 0x0D), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5A)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    })
}

/// The Perl class a `\d`-style escape letter names, and whether it is complemented.
fn perl_group(letter: char) -> Option<(&'static [(u32, u32)], bool)> {
    Some(match letter {
        'd' => (DIGIT, false),
        'D' => (DIGIT, true),
        's' => (SPACE_PERL, false),
        'S' => (SPACE_PERL, true),
        'w' => (WORD, false),
        'W' => (WORD, true),
        _ => return None,
    })
}

/// Add `group` (or its complement) to `ranges`.
fn push_group(ranges: &mut Vec<(u32, u32)>, group: &[(u32, u32)], negated: bool) {
    if !negated {
        ranges.extend_from_slice(group);
        return;
    }
    // The groups are sorted and disjoint, so the complement is the gaps between them.
    let mut next = 0u32;
    for &(lo, hi) in group {
        if lo > next {
            ranges.push((next, lo - 1));
        }
        next = hi.saturating_add(1);
    }
    if next <= MAX_CODE_POINT {
        ranges.push((next, MAX_CODE_POINT));
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Cursor over the expression text.
struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos.saturating_add(offset)).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn rest(&self) -> &[char] {
        self.chars.get(self.pos..).unwrap_or(&[])
    }

    /// Parse the whole expression into a sequence of nodes.
    fn parse(&mut self) -> Result<Vec<Node>, String> {
        // Open groups, innermost last; built without recursion.
        let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
        // Go rejects stacked repetitions (`a**`) but allows one `?` making it lazy.
        let mut after_repeat = false;
        while let Some(c) = self.bump() {
            let was_repeat = after_repeat;
            after_repeat = false;
            let current = stack.last_mut().ok_or("internal: empty group stack")?;
            match c {
                '(' => {
                    if self.peek() == Some('?') {
                        return Err("group flags `(?` are not supported".to_owned());
                    }
                    if stack.len() > MAX_GROUP_DEPTH {
                        return Err("groups nested too deeply".to_owned());
                    }
                    stack.push(Vec::new());
                }
                ')' => {
                    if stack.len() < 2 {
                        return Err("unexpected )".to_owned());
                    }
                    let group = stack.pop().unwrap_or_default();
                    stack
                        .last_mut()
                        .ok_or("internal: empty group stack")?
                        .push(Node::Group(group));
                }
                '|' => return Err("alternation `|` is not supported".to_owned()),
                '*' | '+' | '?' => {
                    if was_repeat {
                        return Err(format!("invalid nested repetition operator `{c}`"));
                    }
                    let Some(operand) = current.pop() else {
                        return Err(format!("missing argument to repetition operator `{c}`"));
                    };
                    let repetition = match c {
                        '*' => Repetition::ZeroOrMore,
                        '+' => Repetition::OneOrMore,
                        _ => Repetition::ZeroOrOne,
                    };
                    current.push(Node::Repeat(Box::new(operand), repetition));
                    // A following `?` only makes the repetition lazy, which changes
                    // which match is found but never whether one is.
                    if self.peek() == Some('?') {
                        self.pos += 1;
                    }
                    after_repeat = true;
                }
                '.' => current.push(Node::AnyNotNewline),
                '^' => current.push(Node::Look(Look::Start)),
                '$' => current.push(Node::Look(Look::End)),
                '[' => {
                    let class = self.parse_class()?;
                    stack
                        .last_mut()
                        .ok_or("internal: empty group stack")?
                        .push(Node::Class(class));
                }
                '\\' => self.parse_escape_outside_class(&mut stack)?,
                // `{` only opens a counted repetition when one parses; the translation
                // always escapes braces, so a bare one is a literal as in Go.
                other => current.push(Node::Char(u32::from(other))),
            }
        }
        if stack.len() != 1 {
            return Err("missing closing )".to_owned());
        }
        Ok(stack.pop().unwrap_or_default())
    }

    /// After a `\` outside a class.
    fn parse_escape_outside_class(&mut self, stack: &mut [Vec<Node>]) -> Result<(), String> {
        let current = stack.last_mut().ok_or("internal: empty group stack")?;
        match self.peek() {
            Some('A') => {
                self.pos += 1;
                current.push(Node::Look(Look::Start));
            }
            Some('z') => {
                self.pos += 1;
                current.push(Node::Look(Look::End));
            }
            Some('b') => {
                self.pos += 1;
                current.push(Node::Look(Look::WordBoundary));
            }
            Some('B') => {
                self.pos += 1;
                current.push(Node::Look(Look::NotWordBoundary));
            }
            Some('C') => return Err("invalid escape sequence `\\C`".to_owned()),
            Some('Q') => {
                // Everything up to `\E` (or the end) is literal text.
                self.pos += 1;
                while let Some(c) = self.bump() {
                    if c == '\\' && self.peek() == Some('E') {
                        self.pos += 1;
                        break;
                    }
                    current.push(Node::Char(u32::from(c)));
                }
            }
            Some(letter @ ('p' | 'P')) => {
                return Err(format!(
                    "Unicode class escape `\\{letter}` is not supported"
                ));
            }
            Some(letter) => {
                if let Some((group, negated)) = perl_group(letter) {
                    self.pos += 1;
                    let mut ranges = Vec::new();
                    push_group(&mut ranges, group, negated);
                    current.push(Node::Class(Class {
                        ranges,
                        negated: false,
                    }));
                } else {
                    let c = self.parse_escape()?;
                    current.push(Node::Char(c));
                }
            }
            None => return Err("trailing backslash at end of expression".to_owned()),
        }
        Ok(())
    }

    /// A single-character escape, the `\` already consumed (Go's `parseEscape`).
    fn parse_escape(&mut self) -> Result<u32, String> {
        let Some(c) = self.bump() else {
            return Err("trailing backslash at end of expression".to_owned());
        };
        let invalid = || Err(format!("invalid escape sequence `\\{c}`"));
        match c {
            '1'..='7' | '0' => {
                // A lone non-zero digit would be a back-reference, which RE2 lacks.
                if c != '0' && !self.peek().is_some_and(|d| ('0'..='7').contains(&d)) {
                    return invalid();
                }
                let mut value = u32::from(c) - u32::from('0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            value = value * 8 + (u32::from(d) - u32::from('0'));
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                Ok(value)
            }
            'x' => {
                let Some(first) = self.bump() else {
                    return invalid();
                };
                if first == '{' {
                    let mut value = 0u32;
                    let mut digits = 0usize;
                    loop {
                        let Some(d) = self.bump() else {
                            return invalid();
                        };
                        if d == '}' {
                            break;
                        }
                        let Some(v) = d.to_digit(16) else {
                            return invalid();
                        };
                        value = value * 16 + v;
                        if value > MAX_CODE_POINT {
                            return invalid();
                        }
                        digits += 1;
                    }
                    if digits == 0 {
                        return invalid();
                    }
                    return Ok(value);
                }
                let high = first.to_digit(16);
                let low = self.bump().and_then(|d| d.to_digit(16));
                match (high, low) {
                    (Some(h), Some(l)) => Ok(h * 16 + l),
                    _ => invalid(),
                }
            }
            'a' => Ok(0x07),
            'f' => Ok(0x0C),
            'n' => Ok(0x0A),
            'r' => Ok(0x0D),
            't' => Ok(0x09),
            'v' => Ok(0x0B),
            // Any ASCII punctuation (or space, or control character) stands for itself.
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(u32::from(c)),
            _ => invalid(),
        }
    }

    /// A class, the `[` already consumed.
    fn parse_class(&mut self) -> Result<Class, String> {
        let negated = if self.peek() == Some('^') {
            self.pos += 1;
            true
        } else {
            false
        };
        let mut ranges = Vec::new();
        // A `]` right after the opening (and `^`) is a member, as in Go.
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err("missing closing ] in character class".to_owned());
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            if c == '[' && self.peek_at(1) == Some(':') && self.parse_posix_group(&mut ranges)? {
                continue;
            }
            if c == '\\' {
                match self.peek_at(1) {
                    Some(letter @ ('p' | 'P')) => {
                        return Err(format!(
                            "Unicode class escape `\\{letter}` is not supported"
                        ));
                    }
                    Some(letter) => {
                        if let Some((group, complement)) = perl_group(letter) {
                            self.pos += 2;
                            push_group(&mut ranges, group, complement);
                            continue;
                        }
                    }
                    None => {}
                }
            }
            let lo = self.parse_class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|n| n != ']') {
                self.pos += 1;
                hi = self.parse_class_char()?;
                if hi < lo {
                    return Err("invalid character class range".to_owned());
                }
            }
            ranges.push((lo, hi));
        }
        Ok(Class { ranges, negated })
    }

    /// `[:name:]` inside a class. Like Go, the closing `:]` is searched for in the whole
    /// rest of the expression; without one the `[` is an ordinary member.
    fn parse_posix_group(&mut self, ranges: &mut Vec<(u32, u32)>) -> Result<bool, String> {
        let rest = self.rest();
        if rest.len() <= 2 {
            return Ok(false);
        }
        let body = rest.get(2..).unwrap_or(&[]);
        let Some(end) = body.windows(2).position(|w| w == [':', ']']) else {
            return Ok(false);
        };
        let name: String = body.get(..end).unwrap_or(&[]).iter().collect();
        let (name, negated) = match name.strip_prefix('^') {
            Some(inner) => (inner.to_owned(), true),
            None => (name, false),
        };
        let Some(group) = posix_group(&name) else {
            return Err(format!("invalid character class range `[:{name}:]`"));
        };
        push_group(ranges, group, negated);
        // `[:` + name + `:]`
        self.pos += end + 4;
        Ok(true)
    }

    fn parse_class_char(&mut self) -> Result<u32, String> {
        match self.bump() {
            None => Err("missing closing ] in character class".to_owned()),
            Some('\\') => self.parse_escape(),
            Some(c) => Ok(u32::from(c)),
        }
    }
}

/// Appends the program for `nodes` to `insts`. Recursion follows group nesting only,
/// which the parser bounds.
fn compile_nodes(nodes: &[Node], insts: &mut Vec<Inst>) {
    for node in nodes {
        compile_node(node, insts);
    }
}

fn compile_node(node: &Node, insts: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => insts.push(Inst::Char(*c)),
        Node::AnyNotNewline => insts.push(Inst::AnyNotNewline),
        Node::Class(class) => insts.push(Inst::Class(class.clone())),
        Node::Look(look) => insts.push(Inst::Look(*look)),
        Node::Group(nodes) => compile_nodes(nodes, insts),
        Node::Repeat(operand, repetition) => match repetition {
            Repetition::ZeroOrMore => {
                // split body, out; body; jump split
                let split = insts.len();
                insts.push(Inst::Match); // placeholder
                compile_node(operand, insts);
                insts.push(Inst::Jump(split));
                let out = insts.len();
                if let Some(slot) = insts.get_mut(split) {
                    *slot = Inst::Split(split + 1, out);
                }
            }
            Repetition::OneOrMore => {
                let body = insts.len();
                compile_node(operand, insts);
                let split = insts.len();
                insts.push(Inst::Split(body, split + 1));
            }
            Repetition::ZeroOrOne => {
                let split = insts.len();
                insts.push(Inst::Match); // placeholder
                compile_node(operand, insts);
                let out = insts.len();
                if let Some(slot) = insts.get_mut(split) {
                    *slot = Inst::Split(split + 1, out);
                }
            }
        },
    }
}

/// What follows the current position, for the zero-width assertions.
#[derive(Debug, Clone, Copy)]
enum Next {
    Char(char),
    End,
    /// Asked about a prefix of some longer text: anything may follow.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    at_start: bool,
    prev: Option<char>,
    next: Next,
}

impl Look {
    fn holds(self, at: Position) -> bool {
        let next_is_word = match at.next {
            Next::Char(c) => Some(is_word_char(c)),
            Next::End => Some(false),
            Next::Unknown => None,
        };
        let prev_is_word = at.prev.is_some_and(is_word_char);
        match self {
            Look::Start => at.at_start,
            Look::End => !matches!(at.next, Next::Char(_)),
            Look::WordBoundary => next_is_word.is_none_or(|n| n != prev_is_word),
            Look::NotWordBoundary => next_is_word.is_none_or(|n| n == prev_is_word),
        }
    }
}

/// The set of live program counters, in insertion order.
struct Threads {
    list: Vec<usize>,
    present: Vec<bool>,
}

impl Threads {
    fn new(len: usize) -> Self {
        Threads {
            list: Vec::new(),
            present: vec![false; len],
        }
    }

    fn insert(&mut self, pc: usize) -> bool {
        match self.present.get_mut(pc) {
            Some(seen) if !*seen => {
                *seen = true;
                self.list.push(pc);
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        for pc in self.list.drain(..) {
            if let Some(seen) = self.present.get_mut(pc) {
                *seen = false;
            }
        }
    }
}

impl Regex {
    /// Parse and compile a Go-syntax expression (the subset described in the module docs).
    pub(crate) fn new(expression: &str) -> Result<Self, String> {
        let chars: Vec<char> = expression.chars().collect();
        let nodes = Parser {
            chars: &chars,
            pos: 0,
        }
        .parse()?;
        let mut insts = Vec::new();
        compile_nodes(&nodes, &mut insts);
        insts.push(Inst::Match);
        Ok(Regex { insts })
    }

    /// Follow the zero-width instructions from `pc`, adding every reachable
    /// instruction to `threads`.
    fn add_thread(&self, threads: &mut Threads, stack: &mut Vec<usize>, pc: usize, at: Position) {
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if !threads.insert(pc) {
                continue;
            }
            match self.insts.get(pc) {
                Some(Inst::Jump(target)) => stack.push(*target),
                Some(Inst::Split(first, second)) => {
                    stack.push(*second);
                    stack.push(*first);
                }
                Some(Inst::Look(look)) if look.holds(at) => stack.push(pc + 1),
                _ => {}
            }
        }
    }

    fn has_match(&self, threads: &Threads) -> bool {
        threads
            .list
            .iter()
            .any(|&pc| matches!(self.insts.get(pc), Some(Inst::Match)))
    }

    /// Simulate the program over `text`.
    ///
    /// Besides `text` itself, every prefix `text[..cut]` for a byte offset in `cuts`
    /// (ascending, on character boundaries) is asked about as a text of its own, in the
    /// same single pass: the threads alive at a position depend only on the characters
    /// before it, so for a cut it is enough to redo the last zero-width step as if the
    /// text ended there. `after` says what follows `text` (its end, or unknown text).
    ///
    /// Returns `Ok(())` when `text` or one of the cut prefixes matches, otherwise the
    /// threads alive at the end of `text`.
    fn simulate(&self, text: &str, cuts: &[usize], after: Next) -> Result<(), Threads> {
        let len = self.insts.len();
        let mut current = Threads::new(len);
        let mut cut_threads = Threads::new(len);
        let mut stack = Vec::new();
        // Where the threads of the current position start from, before their zero-width
        // steps. The expressions moby builds all begin with `^`, so starting threads only
        // at the beginning answers Go's unanchored `MatchString`.
        let mut seeds = vec![0usize];
        let mut next_seeds = Vec::new();
        let mut cuts = cuts.iter().copied().peekable();
        let mut chars = text.char_indices().peekable();
        let mut prev = None;
        loop {
            let (offset, next) = match chars.peek() {
                Some(&(offset, c)) => (offset, Next::Char(c)),
                None => (text.len(), after),
            };
            let at = Position {
                at_start: offset == 0,
                prev,
                next,
            };
            current.clear();
            for &seed in &seeds {
                self.add_thread(&mut current, &mut stack, seed, at);
            }
            // A match found here ends inside `text` and, Go's search being unanchored at
            // the end, also makes every longer prefix and `text` itself match.
            if self.has_match(&current) {
                return Ok(());
            }
            while cuts.next_if(|&cut| cut < offset).is_some() {}
            if matches!(next, Next::Char(_)) && cuts.next_if_eq(&offset).is_some() {
                cut_threads.clear();
                let at_end = Position {
                    next: Next::End,
                    ..at
                };
                for &seed in &seeds {
                    self.add_thread(&mut cut_threads, &mut stack, seed, at_end);
                }
                if self.has_match(&cut_threads) {
                    return Ok(());
                }
            }
            let Some((_, c)) = chars.next() else {
                return Err(current);
            };
            if current.list.is_empty() {
                return Err(current);
            }
            next_seeds.clear();
            for &pc in &current.list {
                let advances = match self.insts.get(pc) {
                    Some(Inst::Char(expected)) => *expected == u32::from(c),
                    Some(Inst::AnyNotNewline) => c != '\n',
                    Some(Inst::Class(class)) => class.contains(c),
                    _ => false,
                };
                if advances {
                    next_seeds.push(pc + 1);
                }
            }
            std::mem::swap(&mut seeds, &mut next_seeds);
            prev = Some(c);
        }
    }

    /// Whether the expression matches `text` (Go's `MatchString`).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.simulate(text, &[], Next::End).is_ok()
    }

    /// Whether the expression matches `text` or one of its prefixes `text[..cut]`, `cuts`
    /// being ascending byte offsets. One pass, where asking each prefix separately would
    /// cost time quadratic in the length of `text`.
    pub(crate) fn is_match_or_prefix_match(&self, text: &str, cuts: &[usize]) -> bool {
        self.simulate(text, cuts, Next::End).is_ok()
    }

    /// Whether some text starting with `prefix` might match. Conservative: it may say
    /// yes when no such text exists, never no when one does.
    pub(crate) fn may_match_with_prefix(&self, prefix: &str) -> bool {
        let threads = match self.simulate(prefix, &[], Next::Unknown) {
            Ok(()) => return true,
            Err(threads) => threads,
        };
        // Can any live thread still reach `Match`, whatever the remaining text?
        let mut seen = vec![false; self.insts.len()];
        let mut stack = threads.list.clone();
        while let Some(pc) = stack.pop() {
            let Some(slot) = seen.get_mut(pc) else {
                continue;
            };
            if *slot {
                continue;
            }
            *slot = true;
            match self.insts.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jump(target)) => stack.push(*target),
                Some(Inst::Split(first, second)) => {
                    stack.push(*first);
                    stack.push(*second);
                }
                // `^` can never hold again once text has been consumed.
                Some(Inst::Look(Look::Start)) if !prefix.is_empty() => {}
                Some(_) => stack.push(pc + 1),
                None => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn matches(expression: &str, text: &str) -> bool {
        match Regex::new(expression) {
            Ok(re) => re.is_match(text),
            Err(e) => panic!("{expression:?} did not compile: {e}"),
        }
    }

    #[test]
    fn literals_star_and_optional_group() {
        assert!(matches("^a[^/]*b$", "axxb"));
        assert!(!matches("^a[^/]*b$", "ax/b"));
        assert!(matches("^(.*/)?foo$", "foo"));
        assert!(matches("^(.*/)?foo$", "a/b/foo"));
        assert!(!matches("^(.*/)?foo$", "a/bfoo"));
        assert!(matches("^a.*$", "a/b/c"));
    }

    #[test]
    fn dot_does_not_match_newline_but_negated_class_does() {
        assert!(!matches("^a.*$", "a\nb"));
        assert!(matches("^a[^/]*$", "a\nb"));
    }

    #[test]
    fn classes() {
        assert!(matches("^[a-c]$", "b"));
        assert!(!matches("^[a-c]$", "d"));
        assert!(matches("^[^a-c]$", "d"));
        assert!(matches("^[]a]$", "]"));
        assert!(matches("^[\\]a]$", "]"));
        assert!(matches("^[[:digit:]x]$", "7"));
        assert!(!matches("^[[:^digit:]]$", "7"));
        assert!(matches("^[\\d]$", "7"));
        assert!(matches("^[\\D]$", "☺"));
        assert!(matches("^[a-ζ]$", "α"));
    }

    #[test]
    fn escapes_and_anchors() {
        assert!(matches("^\\d\\d$", "42"));
        assert!(matches("^\\x41$", "A"));
        assert!(matches("^\\101$", "A"));
        assert!(!matches("^a\\bb$", "ab"));
        assert!(matches("^a\\Bb$", "ab"));
        assert!(matches("^a\\b-$", "a-"));
        assert!(matches("^\\Qa.b$", "a.b$"));
        assert!(matches("^\\Qa.b$", "a.b$ and more"));
        assert!(!matches("^\\Qa.b\\E$", "a.bc"));
        assert!(!matches("^a^b$", "ab"));
        assert!(matches("^^b$", "b"));
    }

    #[test]
    fn compile_errors() {
        for bad in [
            "[z-a]",
            "[a",
            "\\",
            "\\e",
            "\\1",
            "\\pL",
            "[\\pL]",
            "a**",
            "*",
            "(a",
            "a)",
            "[[:foo:]]",
            "\\x4",
            "\\x{}",
            "\\x{110000}",
        ] {
            assert!(Regex::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Regex::new("a*?").is_ok());
    }

    #[test]
    fn prefix_question_is_conservative_but_not_trivial() {
        let Ok(re) = Regex::new("^foo/(.*/)?keep$") else {
            panic!("did not compile");
        };
        assert!(re.may_match_with_prefix("foo/"));
        assert!(re.may_match_with_prefix("foo/a/b/"));
        assert!(!re.may_match_with_prefix("bar/"));
        let Ok(anchored) = Regex::new("^a^b$") else {
            panic!("did not compile");
        };
        assert!(!anchored.may_match_with_prefix("a/"));
    }

    #[test]
    fn prefix_cuts_answer_like_separate_matches() {
        let texts = ["a/b/c", "ab/cd/e", "a b/c", "x/y", "/a/b"];
        for expression in [
            "^a$",
            "^a/b$",
            "^a/[^/]*$",
            "^(.*/)?b$",
            "^a\\b$",
            "^a\\B.*$",
            "^\\Qa/b",
            "^.*c$",
            "^$",
        ] {
            let Ok(re) = Regex::new(expression) else {
                panic!("{expression:?} did not compile");
            };
            for text in texts {
                let cuts: Vec<usize> = text.match_indices('/').map(|(i, _)| i).collect();
                let separately = re.is_match(text)
                    || cuts
                        .iter()
                        .any(|&cut| text.get(..cut).is_some_and(|p| re.is_match(p)));
                assert_eq!(
                    re.is_match_or_prefix_match(text, &cuts),
                    separately,
                    "{expression:?} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn long_hostile_input_is_fast() {
        let expression = format!("^{}b$", "a[^/]*".repeat(200));
        let Ok(re) = Regex::new(&expression) else {
            panic!("did not compile");
        };
        assert!(!re.is_match(&"a".repeat(5000)));
    }
}
