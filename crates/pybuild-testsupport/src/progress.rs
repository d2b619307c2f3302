//! Reading `pybuild build --progress=plain` output: which steps ran, in what order,
//! and how each ended.
//!
//! A step starts with `#N [stage-0 2/3] COPY a /a` and may later print `#N CACHED`,
//! `#N DONE 0.1s` or `#N ERROR ...`; other `#N` lines are its output.

use std::collections::BTreeMap;

/// One step of a plain-progress log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainStep {
    /// The step number `N` of its `#N` lines.
    pub id: String,
    /// The text after `#N ` on its first line, e.g. `[stage-0 2/3] COPY a /a`.
    pub name: String,
    /// Whether a `#N CACHED` line was printed for it.
    pub cached: bool,
    /// The last of `CACHED`, `DONE` and `ERROR` it printed, if any.
    pub status: Option<String>,
}

impl PlainStep {
    /// The instruction without the `[stage x/y] ` prefix, e.g. `COPY a /a`.
    pub fn instruction(&self) -> &str {
        self.name
            .split_once("] ")
            .map_or(self.name.as_str(), |(_, instruction)| instruction)
    }
}

/// The steps of a plain-progress log, in the order they started.
pub fn plain_steps(stderr: &str) -> Vec<PlainStep> {
    let mut order = Vec::new();
    let mut by_id: BTreeMap<String, PlainStep> = BTreeMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, what)) = rest.split_once(' ') else {
            continue;
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if what.starts_with('[') {
            order.push(id.to_owned());
            by_id.insert(
                id.to_owned(),
                PlainStep {
                    id: id.to_owned(),
                    name: what.to_owned(),
                    cached: false,
                    status: None,
                },
            );
        } else if let Some(step) = by_id.get_mut(id) {
            if what == "CACHED" {
                step.cached = true;
                step.status = Some("CACHED".to_owned());
            } else if what.starts_with("DONE ") || what.starts_with("ERROR") {
                step.status = what.split(' ').next().map(str::to_owned);
            }
        }
    }
    order.into_iter().map(|id| by_id[&id].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "#1 [internal] load build definition from Dockerfile\n\
                       #1 DONE 0.0s\n\
                       #2 [stage-0 1/3] FROM busybox\n\
                       #2 CACHED\n\
                       #3 [stage-0 2/3] RUN echo hi\n\
                       #3 0.012 hi\n\
                       #3 DONE 0.1s\n\
                       #4 [stage-0 3/3] COPY a /a\n\
                       #4 ERROR: no such file\n\
                       #  manifest sha256:0000\n\
                       writing image sha256:0000\n";

    #[test]
    fn steps_in_order_with_how_they_ended() {
        let steps = plain_steps(LOG);
        let got: Vec<_> = steps
            .iter()
            .map(|s| {
                (
                    s.id.as_str(),
                    s.instruction(),
                    s.cached,
                    s.status.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "1",
                    "load build definition from Dockerfile",
                    false,
                    Some("DONE")
                ),
                ("2", "FROM busybox", true, Some("CACHED")),
                ("3", "RUN echo hi", false, Some("DONE")),
                ("4", "COPY a /a", false, Some("ERROR:")),
            ]
        );
        assert_eq!(steps[3].name, "[stage-0 3/3] COPY a /a");
    }
}
