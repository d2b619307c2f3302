//! "Did you mean" suggestions for misspelt keywords and flags.

/// The candidate closest to `word` (case-insensitive Levenshtein distance), if it is
/// close enough to be a plausible typo: at most a third of the word's length, and at
/// least 1.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_close_keywords_and_rejects_far_ones() {
        let kw = ["RUN", "COPY", "WORKDIR", "ENTRYPOINT"];
        assert_eq!(closest("RUNN", kw), Some("RUN"));
        assert_eq!(closest("cpy", kw), Some("COPY"));
        assert_eq!(closest("WORKDIRR", kw), Some("WORKDIR"));
        assert_eq!(closest("xyzzy", kw), None);
    }
}
