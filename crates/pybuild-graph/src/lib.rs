//! pybuild's build graph: what a Dockerfile asks to build, before anything runs.
//!
//! [`BuildGraph::new`] takes the typed instructions of a Dockerfile and the build's
//! options (build args, target, platforms) and produces:
//!
//! - the **stages** (`FROM ... [AS name]` up to the next `FROM`), each with its base
//!   (scratch, an image reference, or an earlier stage) and its **steps**;
//! - for each step, the build args and `ENV` values in scope at that point, following
//!   BuildKit's scoping rules (below), and its **inputs**: context paths, other stages,
//!   images;
//! - the **dependency edges** between stages (`FROM <stage>`, `COPY --from=<stage or
//!   index>`, `RUN --mount=from=<stage>`), checked for cycles;
//! - the **order** in which the stages that the target needs must be built. Stages the
//!   target does not reach are pruned: they are never executed.
//!
//! ARG and ENV scoping (BuildKit's, which differs from the legacy builder):
//!
//! - ARGs before the first `FROM` are *global*: their values (default, or `--build-arg`)
//!   are visible only to `FROM` lines, unless a stage re-declares them with a bare
//!   `ARG NAME`, which brings the global value into the stage.
//! - Inside a stage an `ARG` is visible from its declaration to the end of the stage.
//!   A `--build-arg` overrides its default; an ARG with neither value nor override
//!   is declared but unset.
//! - `ENV` shadows an ARG of the same name.
//! - The platform args (`TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`,
//!   `BUILDPLATFORM`, `BUILDOS`, `BUILDARCH`, `BUILDVARIANT`) are predefined in the
//!   global scope, and in a stage once declared with `ARG NAME`.
//! - The proxy args (`HTTP_PROXY`, `https_proxy`, ...) need no declaration: given as
//!   `--build-arg`, they reach `RUN` (but not expansion, and not the image history).
//!
//! Expansion is applied exactly where BuildKit applies it (see [`expand`]): never to
//! `RUN`/`CMD`/`ENTRYPOINT`/`SHELL`/`HEALTHCHECK` command text and never to
//! `COPY --from`. Values inherited from the base image's config (its `ENV`) are only
//! known once the image is resolved, so the solver expands each step with
//! [`Step::expansion_env`] given the base image's environment.

mod expand;
mod platform;

use std::collections::{BTreeMap, BTreeSet};

use pybuild_dockerfile::instructions::{self, Instruction, Kind};
use pybuild_dockerfile::shell::Lexer;
use pybuild_dockerfile::{Dockerfile, Span};

pub use expand::expand;
pub use platform::Platform;

/// Build args that need no `ARG` declaration (BuildKit's predefined proxy args).
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Errors found while building the graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Dockerfile itself is invalid (syntax, instruction or expansion error).
    #[error(transparent)]
    Dockerfile(#[from] pybuild_dockerfile::Error),
    /// No `FROM` at all.
    #[error("no build stage in the Dockerfile: it needs at least one FROM")]
    NoStages,
    /// Only `ARG` may come before the first `FROM`.
    #[error("{instruction} before the first FROM: only ARG may come before FROM")]
    InstructionBeforeFrom {
        /// The instruction.
        instruction: String,
        /// Where.
        span: Span,
    },
    /// Two stages with the same name.
    #[error("duplicate stage name {name:?}")]
    DuplicateStageName {
        /// The name.
        name: String,
        /// The second definition.
        span: Span,
    },
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found")]
    TargetNotFound {
        /// What was asked for.
        target: String,
        /// The stage names that exist.
        available: Vec<String>,
    },
    /// `--from=N` (or `from=N`) with no stage N.
    #[error("stage index {index} does not exist (the Dockerfile has {count} stages)")]
    StageIndexOutOfRange {
        /// The index written.
        index: usize,
        /// How many stages there are.
        count: usize,
        /// Where.
        span: Span,
    },
    /// Stages that depend on each other in a circle.
    #[error("circular dependency detected on stage {stage:?}")]
    Cycle {
        /// A stage on the cycle.
        stage: String,
        /// Where the edge that closes the cycle is written.
        span: Span,
    },
    /// A `--platform` value that is not a platform.
    #[error("{message}")]
    InvalidPlatform {
        /// What is wrong.
        message: String,
        /// Where, when it came from the Dockerfile.
        span: Option<Span>,
    },
}

impl Error {
    /// Where in the Dockerfile the error points, if anywhere.
    pub fn span(&self) -> Option<Span> {
        match self {
            Error::Dockerfile(e) => e.span(),
            Error::NoStages | Error::TargetNotFound { .. } => None,
            Error::InstructionBeforeFrom { span, .. }
            | Error::DuplicateStageName { span, .. }
            | Error::StageIndexOutOfRange { span, .. }
            | Error::Cycle { span, .. } => Some(*span),
            Error::InvalidPlatform { span, .. } => *span,
        }
    }

    /// A suggestion, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Dockerfile(e) => e.hint(),
            Error::TargetNotFound { available, .. } if !available.is_empty() => {
                Some(format!("the named stages are: {}", available.join(", ")))
            }
            Error::TargetNotFound { .. } => {
                Some("no stage has a name: use FROM image AS name".into())
            }
            Error::DuplicateStageName { .. } => Some("give each stage its own name".into()),
            Error::InstructionBeforeFrom { .. } => Some("move it after the first FROM".into()),
            _ => None,
        }
    }

    /// Render like a compiler (`Dockerfile:3:1: error: ...`, source line, caret, hint).
    pub fn render(&self, file_name: &str, source: &str) -> String {
        pybuild_dockerfile::render_diagnostic(
            file_name,
            source,
            self.span(),
            "error",
            &self.to_string(),
            self.hint(),
        )
    }
}

/// What a build asks for besides the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--build-arg NAME=VALUE`, in the order given (a later one wins).
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (default: the last one).
    pub target: Option<String>,
    /// The platform the build runs on (default: the host's).
    pub build_platform: Option<Platform>,
    /// `--platform`: the platform to build for (default: the build platform).
    pub target_platform: Option<Platform>,
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference (expanded, as written: not yet normalized or resolved).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Something a step reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// Paths (or patterns) in the build context, unexpanded.
    Context(Vec<String>),
    /// The result of another stage.
    Stage(usize),
    /// An image (for `COPY --from=image` or `RUN --mount=from=image`).
    Image(String),
    /// A remote URL (`ADD https://...`, `ADD git@...`).
    Url(String),
}

/// One instruction of a stage, with what is in scope when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The instruction (unexpanded).
    pub instruction: Instruction,
    /// Build args in scope with a value, in declaration order (`ARG` + `--build-arg`).
    pub args: Vec<(String, String)>,
    /// `ENV` values set by this Dockerfile in this stage so far, in order.
    pub env: Vec<(String, String)>,
    /// Proxy args given as `--build-arg` (reach `RUN` without declaration).
    pub proxy_env: Vec<(String, String)>,
    /// What it reads.
    pub inputs: Vec<Input>,
}

impl Step {
    /// The environment used to expand this step's words: args, then the base image's
    /// environment, then this stage's `ENV` (a later definition shadows an earlier one,
    /// so ENV shadows ARG as in BuildKit).
    pub fn expansion_env(&self, base_env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in self.args.iter().chain(base_env).chain(&self.env) {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position in the file, from 0.
    pub index: usize,
    /// `AS name`, lower case.
    pub name: Option<String>,
    /// What it starts from.
    pub base: Base,
    /// `FROM --platform=` (expanded), when given.
    pub platform: Option<Platform>,
    /// The `FROM` instruction.
    pub from: Instruction,
    /// The instructions after `FROM`.
    pub steps: Vec<Step>,
    /// Stages this one needs (base, `COPY --from`, `RUN --mount=from`).
    pub deps: BTreeSet<usize>,
}

impl Stage {
    /// `name` or `stage-N`, for messages.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// The validated build graph of one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildGraph {
    /// Every stage, in file order (also those the target does not need).
    pub stages: Vec<Stage>,
    /// The stage to build.
    pub target: usize,
    /// The stages the target needs, dependencies first, the target last.
    pub order: Vec<usize>,
    /// Global ARGs (before the first FROM) with values.
    pub global_args: Vec<(String, String)>,
    /// `--build-arg`s that no ARG consumed (docker warns about these).
    pub unused_build_args: Vec<String>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The platform the image is for.
    pub target_platform: Platform,
    /// The Dockerfile's escape character (for expanding words when steps run).
    pub escape: char,
}

impl BuildGraph {
    /// Build the graph of a parsed Dockerfile.
    pub fn new(dockerfile: &Dockerfile, options: &Options) -> Result<Self, Error> {
        let instructions = instructions::parse_all(dockerfile)?;
        let mut graph = Builder::new(options, dockerfile.directives.escape).build(instructions)?;
        graph.escape = dockerfile.directives.escape;
        Ok(graph)
    }

    /// Whether a stage is built for the target (not pruned).
    pub fn is_needed(&self, stage: usize) -> bool {
        self.order.contains(&stage)
    }

    /// A human-readable description: one line per stage, then its steps and edges.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "platform: build {} target {}\n",
            self.build_platform, self.target_platform
        ));
        for stage in &self.stages {
            let status = if stage.index == self.target {
                "target"
            } else if self.is_needed(stage.index) {
                "needed"
            } else {
                "pruned"
            };
            let base = match &stage.base {
                Base::Scratch => "scratch".to_string(),
                Base::Image(i) => format!("image {i}"),
                Base::Stage(s) => format!("stage {}", self.stages[*s].display_name()),
            };
            out.push_str(&format!(
                "stage {} {:?} from {base} ({status})\n",
                stage.index,
                stage.display_name()
            ));
            for step in &stage.steps {
                out.push_str(&format!(
                    "  {:>4}: {}\n",
                    step.instruction.span.start.line, step.instruction.original
                ));
                for input in &step.inputs {
                    let text = match input {
                        Input::Context(p) => format!("context {}", p.join(" ")),
                        Input::Stage(s) => format!("stage {}", self.stages[*s].display_name()),
                        Input::Image(i) => format!("image {i}"),
                        Input::Url(u) => format!("url {u}"),
                    };
                    out.push_str(&format!("        <- {text}\n"));
                }
            }
        }
        let order: Vec<String> = self
            .order
            .iter()
            .map(|i| self.stages[*i].display_name())
            .collect();
        out.push_str(&format!("order: {}\n", order.join(" -> ")));
        if !self.unused_build_args.is_empty() {
            out.push_str(&format!(
                "warning: build args not consumed: {}\n",
                self.unused_build_args.join(", ")
            ));
        }
        out
    }
}

struct Builder<'o> {
    options: &'o Options,
    lexer: Lexer,
    build_args: BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    build_platform: Platform,
    target_platform: Platform,
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value));
}

impl<'o> Builder<'o> {
    fn new(options: &'o Options, escape: char) -> Self {
        let build_platform = options
            .build_platform
            .clone()
            .unwrap_or_else(Platform::host);
        let target_platform = options
            .target_platform
            .clone()
            .unwrap_or_else(|| build_platform.clone());
        Self {
            options,
            lexer: Lexer::new(escape),
            build_args: options.build_args.iter().cloned().collect(),
            used_args: BTreeSet::new(),
            build_platform,
            target_platform,
        }
    }

    fn platform_args(&self) -> Vec<(String, String)> {
        let mut args = self.target_platform.args("TARGET");
        args.extend(self.build_platform.args("BUILD"));
        args
    }

    fn build(mut self, instructions: Vec<Instruction>) -> Result<BuildGraph, Error> {
        let lexer = self.lexer;
        // Global scope: the platform args, then ARGs before the first FROM.
        let mut global: Vec<(String, String)> = self.platform_args();
        let mut global_declared: Vec<(String, String)> = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut iter = instructions.into_iter().peekable();

        while let Some(instr) = iter.next_if(|i| !matches!(i.kind, Kind::From { .. })) {
            let Kind::Arg(decls) = &instr.kind else {
                return Err(Error::InstructionBeforeFrom {
                    instruction: instr.name().to_string(),
                    span: instr.keyword_span,
                });
            };
            for decl in decls {
                let name = decl.name.value.clone();
                let value = match self.build_args.get(&name) {
                    Some(v) => {
                        self.used_args.insert(name.clone());
                        Some(v.clone())
                    }
                    None => match &decl.default {
                        Some(d) => Some(
                            lexer
                                .expand_word(d, &global)
                                .map_err(|e| e.at(decl.name.span))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = value {
                    set(&mut global, &name, v.clone());
                    set(&mut global_declared, &name, v);
                }
            }
        }

        // The stages.
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(from) = iter.next() {
            let Kind::From {
                image,
                name,
                platform,
            } = &from.kind
            else {
                continue;
            };
            let index = stages.len();
            let image_name = lexer
                .expand_word(&image.value, &global)
                .map_err(|e| e.at(image.span))?;
            let platform = match platform {
                Some(p) => {
                    let text = lexer
                        .expand_word(&p.value, &global)
                        .map_err(|e| e.at(p.span))?;
                    Some(
                        Platform::parse(&text).map_err(|message| Error::InvalidPlatform {
                            message,
                            span: Some(p.span),
                        })?,
                    )
                }
                None => None,
            };
            let base = if image_name.eq_ignore_ascii_case("scratch") {
                Base::Scratch
            } else if let Some(&s) = names.get(&image_name.to_ascii_lowercase()) {
                Base::Stage(s)
            } else {
                Base::Image(image_name)
            };
            if let Some(n) = name {
                if names.insert(n.value.clone(), index).is_some() {
                    return Err(Error::DuplicateStageName {
                        name: n.value.clone(),
                        span: n.span,
                    });
                }
            }
            let mut deps = BTreeSet::new();
            if let Base::Stage(s) = base {
                deps.insert(s);
            }
            let mut body = Vec::new();
            while let Some(i) = iter.next_if(|i| !matches!(i.kind, Kind::From { .. })) {
                body.push(i);
            }
            let steps = self.stage_steps(body, &global, &lexer)?;
            stages.push(Stage {
                index,
                name: name.as_ref().map(|n| n.value.clone()),
                base,
                platform,
                from: from.clone(),
                steps,
                deps,
            });
        }
        if stages.is_empty() {
            return Err(Error::NoStages);
        }

        // Edges from COPY --from and RUN --mount=from, now that every name is known.
        let count = stages.len();
        for stage in &mut stages {
            let mut extra = BTreeSet::new();
            for step in &mut stage.steps {
                for input in &mut step.inputs {
                    if let Input::Image(reference) = input {
                        if let Some(target) =
                            resolve_stage(reference, &names, count, step.instruction.span)?
                        {
                            *input = Input::Stage(target);
                            extra.insert(target);
                        }
                    }
                }
            }
            stage.deps.extend(extra);
        }

        let target = match &self.options.target {
            None => count - 1,
            Some(t) => {
                *names
                    .get(&t.to_ascii_lowercase())
                    .ok_or_else(|| Error::TargetNotFound {
                        target: t.clone(),
                        available: names.keys().cloned().collect(),
                    })?
            }
        };
        let order = topological_order(&stages, target)?;

        let unused_build_args = self
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect();
        Ok(BuildGraph {
            stages,
            target,
            order,
            global_args: global_declared,
            unused_build_args,
            build_platform: self.build_platform,
            target_platform: self.target_platform,
            escape: '\\',
        })
    }

    fn stage_steps(
        &mut self,
        body: Vec<Instruction>,
        global: &[(String, String)],
        lexer: &Lexer,
    ) -> Result<Vec<Step>, Error> {
        let mut args: Vec<(String, String)> = Vec::new();
        let mut env: Vec<(String, String)> = Vec::new();
        let proxy_env: Vec<(String, String)> = PROXY_ARGS
            .iter()
            .filter_map(|k| self.build_args.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        let mut steps = Vec::new();
        for instruction in body {
            let scope = Step {
                instruction: instruction.clone(),
                args: args.clone(),
                env: env.clone(),
                proxy_env: proxy_env.clone(),
                inputs: Vec::new(),
            };
            match &instruction.kind {
                Kind::Arg(decls) => {
                    for decl in decls {
                        let name = &decl.name.value;
                        let value = if let Some(v) = self.build_args.get(name) {
                            self.used_args.insert(name.clone());
                            Some(v.clone())
                        } else if let Some(d) = &decl.default {
                            let env_now = scope_env(&args, &env);
                            Some(
                                lexer
                                    .expand_word(d, &env_now)
                                    .map_err(|e| e.at(decl.name.span))?,
                            )
                        } else {
                            global
                                .iter()
                                .find(|(k, _)| k == name)
                                .map(|(_, v)| v.clone())
                        };
                        match value {
                            Some(v) => set(&mut args, name, v),
                            None => args.retain(|(k, _)| k != name),
                        }
                    }
                }
                Kind::Env(pairs) => {
                    for kv in pairs {
                        let env_now = scope_env(&args, &env);
                        let key = lexer
                            .expand_word(&kv.key.value, &env_now)
                            .map_err(|e| e.at(kv.key.span))?;
                        let value = lexer
                            .expand_word(&kv.value.value, &env_now)
                            .map_err(|e| e.at(kv.value.span))?;
                        set(&mut env, &key, value);
                    }
                }
                _ => {}
            }
            let mut step = scope;
            step.args = args.clone();
            step.env = env.clone();
            step.inputs = inputs_of(&step, lexer)?;
            steps.push(step);
        }
        Ok(steps)
    }
}

fn scope_env(args: &[(String, String)], env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = args.to_vec();
    for (k, v) in env {
        set(&mut out, k, v.clone());
    }
    out
}

/// A `--from`/`from=` value names a stage (by name or index) or else an image.
fn resolve_stage(
    reference: &str,
    names: &BTreeMap<String, usize>,
    count: usize,
    span: Span,
) -> Result<Option<usize>, Error> {
    if let Some(&s) = names.get(&reference.to_ascii_lowercase()) {
        return Ok(Some(s));
    }
    if !reference.is_empty() && reference.chars().all(|c| c.is_ascii_digit()) {
        let index: usize = reference.parse().unwrap_or(usize::MAX);
        if index >= count {
            return Err(Error::StageIndexOutOfRange { index, count, span });
        }
        return Ok(Some(index));
    }
    Ok(None)
}

/// The inputs of a step. Stage references are resolved by the caller; here every
/// `--from`/`from=` is first recorded as an image.
fn inputs_of(step: &Step, lexer: &Lexer) -> Result<Vec<Input>, Error> {
    let mut inputs = Vec::new();
    match &step.instruction.kind {
        Kind::Copy(spec) | Kind::Add(spec) => {
            let is_add = matches!(step.instruction.kind, Kind::Add(_));
            let heredoc_names: Vec<&str> = spec.heredocs.iter().map(|h| h.name.as_str()).collect();
            let mut paths = Vec::new();
            for src in &spec.sources {
                let v = src.value.as_str();
                let is_heredoc = v
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .strip_prefix("<<")
                    .map(|n| n.trim_start_matches('-').trim_matches(['"', '\'']))
                    .is_some_and(|n| heredoc_names.contains(&n));
                if is_heredoc {
                    continue;
                }
                if is_add && (v.contains("://") || v.starts_with("git@")) {
                    inputs.push(Input::Url(v.to_string()));
                } else if spec.from.is_none() {
                    paths.push(v.to_string());
                }
            }
            match &spec.from {
                Some(from) => inputs.push(Input::Image(from.value.clone())),
                None if !paths.is_empty() => inputs.push(Input::Context(paths)),
                None => {}
            }
        }
        Kind::Run { mounts, .. } => {
            let env = step.expansion_env(&[]);
            for raw in mounts {
                let expanded = lexer
                    .expand_word(&raw.value, &env)
                    .map_err(|e| e.at(raw.span))?;
                let mount = instructions::parse_mount(&expanded).map_err(|message| {
                    pybuild_dockerfile::Error::InvalidFlag {
                        instruction: "RUN".into(),
                        flag: "mount".into(),
                        message,
                        span: raw.span,
                    }
                })?;
                match (&mount.from, mount.kind) {
                    (Some(from), _) if !from.is_empty() => inputs.push(Input::Image(from.clone())),
                    (_, instructions::MountType::Bind) => inputs.push(Input::Context(vec![
                        mount.source.clone().unwrap_or_else(|| ".".into()),
                    ])),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(inputs)
}

/// Depth-first order of the stages `target` needs, dependencies first; a dependency
/// back onto a stage still being visited is a cycle.
fn topological_order(stages: &[Stage], target: usize) -> Result<Vec<usize>, Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        stages: &[Stage],
        i: usize,
        marks: &mut [Mark],
        order: &mut Vec<usize>,
    ) -> Result<(), Error> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                return Err(Error::Cycle {
                    stage: stages[i].display_name(),
                    span: stages[i].from.span,
                });
            }
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        for &d in &stages[i].deps {
            if marks[d] == Mark::Visiting {
                // Point at the step that refers back, when there is one.
                let span = stages[i]
                    .steps
                    .iter()
                    .find(|s| s.inputs.contains(&Input::Stage(d)))
                    .map(|s| s.instruction.span)
                    .unwrap_or(stages[i].from.span);
                return Err(Error::Cycle {
                    stage: stages[d].display_name(),
                    span,
                });
            }
            visit(stages, d, marks, order)?;
        }
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    visit(stages, target, &mut marks, &mut order)?;
    Ok(order)
}

#[cfg(test)]
mod tests;
