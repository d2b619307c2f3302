//! Typed instructions: each parsed [`Node`] checked and turned into what it means.
//!
//! This is the counterpart of BuildKit's `instructions.Parse`: it knows which flags each
//! instruction takes and whether they are booleans, single values or repeatable, how
//! many arguments are required, which forms (JSON/shell) are allowed, and the nesting
//! rules of `ONBUILD`. Values stay *unexpanded* here: variable expansion depends on the
//! ARG/ENV environment at that point of the build, which the build graph tracks.
//!
//! Every error points at the exact flag or argument it is about.

use std::time::Duration;

use crate::parser::{Dockerfile, Heredoc, KEYWORDS, Node};
use crate::span::{Span, Spanned};
use crate::suggest::closest;
use crate::{Error, Result};

/// A command line: exec form (JSON array) or shell form (one string for the shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `["executable", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `echo hi`: run through the stage's SHELL (`/bin/sh -c` by default).
    Shell(String),
}

/// One `key=value` pair of ENV or LABEL, or a legacy `KEY value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, unexpanded.
    pub key: Spanned<String>,
    /// The value, unexpanded (quotes still in place).
    pub value: Spanned<String>,
    /// Legacy form `ENV KEY value with spaces`: the value is taken literally as the rest
    /// of the line (after expansion), not as one shell word.
    pub legacy: bool,
}

/// One `ARG name[=default]` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument's name.
    pub name: Spanned<String>,
    /// The default value, unexpanded, when one was given (`ARG A=` gives `Some("")`).
    pub default: Option<String>,
}

/// `RUN --network=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The builder's default: the host's network.
    Default,
    /// A fresh network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

/// `RUN --security=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// The default sandbox.
    Sandbox,
    /// Extra privileges (needs an entitlement).
    Insecure,
}

/// A `RUN --mount=...` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// Bind a directory of the context, a stage or an image (read-only by default).
    Bind,
    /// A persistent cache directory shared across builds.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or environment variable) given to the build.
    Secret,
    /// The SSH agent socket.
    Ssh,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Concurrent builds use the same directory.
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// Concurrent users wait for each other.
    Locked,
}

/// A parsed `RUN --mount`. Field meanings follow BuildKit's `--mount` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount type (`bind` when not given).
    pub kind: MountType,
    /// `from=`: a stage name, an image reference or (empty) the build context.
    pub from: Option<String>,
    /// `source=`/`src=`: path inside `from` (bind, cache).
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`: where it appears in the container.
    pub target: Option<String>,
    /// Read-only (`ro`/`readonly`); bind mounts default to read-only.
    pub read_only: bool,
    /// `id=`: cache id, secret id or ssh id.
    pub id: Option<String>,
    /// `sharing=` for cache mounts.
    pub sharing: CacheSharing,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `required=` for secrets and ssh.
    pub required: bool,
    /// `size=` of a tmpfs, in bytes.
    pub size: Option<u64>,
    /// `env=` of a secret: expose it as this environment variable.
    pub env: Option<String>,
}

/// HEALTHCHECK settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [OPTIONS] CMD ...`.
    Check {
        /// The test command.
        command: Command,
        /// `--interval` (zero means inherit/default).
        interval: Duration,
        /// `--timeout`.
        timeout: Duration,
        /// `--start-period`.
        start_period: Duration,
        /// `--start-interval`.
        start_interval: Duration,
        /// `--retries`.
        retries: u32,
    },
}

/// COPY and ADD, which share most of their options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// Sources, unexpanded (context paths, globs, URLs for ADD, `<<EOF` heredoc names).
    pub sources: Vec<Spanned<String>>,
    /// Destination, unexpanded.
    pub dest: Spanned<String>,
    /// `--from=` (COPY only): a stage name, a stage index or an image reference.
    pub from: Option<Spanned<String>>,
    /// `--chown=user[:group]`.
    pub chown: Option<Spanned<String>>,
    /// `--chmod=` (octal or symbolic).
    pub chmod: Option<Spanned<String>>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=` patterns.
    pub exclude: Vec<Spanned<String>>,
    /// `--checksum=` (ADD only).
    pub checksum: Option<Spanned<String>>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD only): `None` means the default (local archives are unpacked).
    pub unpack: Option<bool>,
    /// Heredoc sources.
    pub heredocs: Vec<Heredoc>,
    /// Whether the sources were written as a JSON array.
    pub json: bool,
}

/// What an instruction says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `FROM [--platform=P] image [AS name]`.
    From {
        /// The base: an image reference, a stage name, or `scratch` (unexpanded).
        image: Spanned<String>,
        /// The stage name (lower case).
        name: Option<Spanned<String>>,
        /// `--platform=` (unexpanded).
        platform: Option<Spanned<String>>,
    },
    /// `RUN`.
    Run {
        /// The command.
        command: Command,
        /// `--mount=` flags as written (expanded and parsed again when the step runs,
        /// as BuildKit does, because they may refer to build args).
        mounts: Vec<Spanned<String>>,
        /// `--network=`.
        network: Option<NetworkMode>,
        /// `--security=`.
        security: Option<Security>,
        /// Heredocs.
        heredocs: Vec<Heredoc>,
    },
    /// `COPY`.
    Copy(CopySpec),
    /// `ADD`.
    Add(CopySpec),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `WORKDIR`.
    Workdir(Spanned<String>),
    /// `USER`.
    User(Spanned<String>),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `EXPOSE`.
    Expose(Vec<Spanned<String>>),
    /// `VOLUME`.
    Volume(Vec<Spanned<String>>),
    /// `SHELL` (JSON form only).
    Shell(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(Spanned<String>),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `ONBUILD`: a trigger stored in the image, run by images built FROM it.
    Onbuild(Box<Instruction>),
    /// `MAINTAINER` (deprecated; becomes a label-less author field).
    Maintainer(String),
}

/// A checked instruction with its source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// What it says.
    pub kind: Kind,
    /// The logical line as written (for history entries and ONBUILD triggers).
    pub original: String,
    /// From the first line to the last.
    pub span: Span,
    /// The keyword.
    pub keyword_span: Span,
}

impl Instruction {
    /// The keyword in upper case.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            Kind::From { .. } => "FROM",
            Kind::Run { .. } => "RUN",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
            Kind::Arg(_) => "ARG",
            Kind::Env(_) => "ENV",
            Kind::Label(_) => "LABEL",
            Kind::Workdir(_) => "WORKDIR",
            Kind::User(_) => "USER",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::Shell(_) => "SHELL",
            Kind::StopSignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild(_) => "ONBUILD",
            Kind::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Check every node of a parsed file.
pub fn parse_all(dockerfile: &Dockerfile) -> Result<Vec<Instruction>> {
    dockerfile.nodes.iter().map(parse_instruction).collect()
}

/// Check one node.
pub fn parse_instruction(node: &Node) -> Result<Instruction> {
    let name = node.name();
    let kind = match node.keyword.as_str() {
        "from" => parse_from(node, &name)?,
        "run" => parse_run(node, &name)?,
        "copy" => Kind::Copy(parse_copy(node, &name, false)?),
        "add" => Kind::Add(parse_copy(node, &name, true)?),
        "arg" => parse_arg(node, &name)?,
        "env" => Kind::Env(parse_key_values(node, &name)?),
        "label" => Kind::Label(parse_key_values(node, &name)?),
        "workdir" => Kind::Workdir(single(node, &name)?),
        "user" => Kind::User(single(node, &name)?),
        "stopsignal" => Kind::StopSignal(single(node, &name)?),
        "maintainer" => Kind::Maintainer(single(node, &name)?.value),
        "cmd" => {
            Flags::new(node, &name, &[])?;
            Kind::Cmd(command(node))
        }
        "entrypoint" => {
            Flags::new(node, &name, &[])?;
            Kind::Entrypoint(command(node))
        }
        "expose" => {
            Flags::new(node, &name, &[])?;
            require_args(node, &name, 1)?;
            Kind::Expose(node.args.clone())
        }
        "volume" => {
            Flags::new(node, &name, &[])?;
            require_args(node, &name, 1)?;
            if let Some(empty) = node.args.iter().find(|a| a.value.trim().is_empty()) {
                return Err(invalid(
                    &name,
                    "VOLUME specified can not be an empty string",
                    empty.span,
                ));
            }
            Kind::Volume(node.args.clone())
        }
        "shell" => {
            Flags::new(node, &name, &[])?;
            if !node.json {
                return Err(Error::InvalidInstruction {
                    instruction: name,
                    message: "SHELL requires the arguments to be in JSON form".into(),
                    hint: Some("write it as SHELL [\"executable\", \"parameters\"]".into()),
                    span: node.span,
                });
            }
            require_args(node, &name, 1)?;
            Kind::Shell(node.args.iter().map(|a| a.value.clone()).collect())
        }
        "healthcheck" => parse_healthcheck(node, &name)?,
        "onbuild" => parse_onbuild(node, &name)?,
        other => {
            return Err(Error::UnknownInstruction {
                instruction: node
                    .original
                    .split_whitespace()
                    .next()
                    .unwrap_or(other)
                    .to_string(),
                suggestion: closest(other, KEYWORDS.iter().copied()).map(str::to_ascii_uppercase),
                span: node.keyword_span,
            });
        }
    };
    Ok(Instruction {
        kind,
        original: node.original.trim().to_string(),
        span: node.span,
        keyword_span: node.keyword_span,
    })
}

fn invalid(instruction: &str, message: impl Into<String>, span: Span) -> Error {
    Error::InvalidInstruction {
        instruction: instruction.to_string(),
        message: message.into(),
        hint: None,
        span,
    }
}

fn args_span(node: &Node) -> Span {
    match (node.args.first(), node.args.last()) {
        (Some(f), Some(l)) => f.span.to(l.span),
        _ => node.keyword_span,
    }
}

fn require_args(node: &Node, name: &str, min: usize) -> Result<()> {
    if node.args.len() < min {
        return Err(Error::InvalidInstruction {
            instruction: name.to_string(),
            message: if min == 1 {
                format!("{name} requires at least one argument")
            } else {
                format!("{name} requires at least {min} arguments")
            },
            hint: None,
            span: node.keyword_span,
        });
    }
    Ok(())
}

fn single(node: &Node, name: &str) -> Result<Spanned<String>> {
    Flags::new(node, name, &[])?;
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(invalid(
            name,
            format!("{name} requires exactly one argument"),
            node.keyword_span,
        )),
        _ => Err(invalid(
            name,
            format!("{name} requires exactly one argument"),
            args_span(node),
        )),
    }
}

fn command(node: &Node) -> Command {
    if node.json {
        Command::Exec(node.args.iter().map(|a| a.value.clone()).collect())
    } else {
        match node.args.first() {
            Some(a) => Command::Shell(a.value.clone()),
            None => Command::Exec(Vec::new()),
        }
    }
}

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--link`, `--link=true`, `--link=false`.
    Bool,
    /// `--from=x`, at most once.
    Value,
    /// `--mount=...`, any number of times.
    Repeated,
}

/// The flags of one instruction, checked against what it accepts (BuildKit's BFlags).
struct Flags<'a> {
    values: Vec<(&'a str, Option<String>, Span)>,
}

impl<'a> Flags<'a> {
    fn new(node: &Node, instruction: &str, accepted: &[(&'a str, FlagKind)]) -> Result<Self> {
        let mut values: Vec<(&'a str, Option<String>, Span)> = Vec::new();
        for flag in &node.flags {
            let text = flag.value.trim_start_matches('-');
            let (fname, value) = match text.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (text, None),
            };
            let Some(&(known, kind)) = accepted.iter().find(|(n, _)| *n == fname) else {
                return Err(Error::UnknownFlag {
                    instruction: instruction.to_string(),
                    flag: fname.to_string(),
                    suggestion: closest(fname, accepted.iter().map(|(n, _)| *n))
                        .map(str::to_string),
                    span: flag.span,
                });
            };
            let bad = |message: String| Error::InvalidFlag {
                instruction: instruction.to_string(),
                flag: known.to_string(),
                message,
                span: flag.span,
            };
            match kind {
                FlagKind::Bool => {
                    if let Some(v) = &value {
                        if !matches!(v.to_ascii_lowercase().as_str(), "true" | "false") {
                            return Err(bad(format!("expecting boolean value, got {v:?}")));
                        }
                    }
                }
                FlagKind::Value | FlagKind::Repeated => {
                    if value.is_none() {
                        return Err(bad("missing a value on flag".into()));
                    }
                }
            }
            if kind != FlagKind::Repeated && values.iter().any(|(n, _, _)| *n == known) {
                return Err(bad("duplicate flag specified".into()));
            }
            values.push((known, value, flag.span));
        }
        Ok(Self { values })
    }

    fn value(&self, name: &str) -> Option<Spanned<String>> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .and_then(|(_, v, s)| v.clone().map(|v| Spanned::new(v, *s)))
    }

    fn values(&self, name: &str) -> Vec<Spanned<String>> {
        self.values
            .iter()
            .filter(|(n, _, _)| *n == name)
            .filter_map(|(_, v, s)| v.clone().map(|v| Spanned::new(v, *s)))
            .collect()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| v.as_deref().is_none_or(|v| v.eq_ignore_ascii_case("true")))
    }
}

fn parse_from(node: &Node, name: &str) -> Result<Kind> {
    let flags = Flags::new(node, name, &[("platform", FlagKind::Value)])?;
    let (image, stage) = match node.args.as_slice() {
        [image] => (image.clone(), None),
        [image, as_kw, stage] if as_kw.value.eq_ignore_ascii_case("as") => {
            (image.clone(), Some(stage.clone()))
        }
        [_, other, _] => {
            return Err(Error::InvalidInstruction {
                instruction: name.into(),
                message: format!(
                    "expected AS between the image and the stage name, found {:?}",
                    other.value
                ),
                hint: Some("write FROM image AS name".into()),
                span: other.span,
            });
        }
        _ => {
            return Err(Error::InvalidInstruction {
                instruction: name.into(),
                message: "FROM requires either one or three arguments".into(),
                hint: Some("write FROM image, or FROM image AS name".into()),
                span: args_span(node),
            });
        }
    };
    let stage = match stage {
        Some(s) => {
            let lower = s.value.to_ascii_lowercase();
            if !is_valid_stage_name(&lower) {
                return Err(Error::InvalidInstruction {
                    instruction: name.into(),
                    message: format!("invalid name for build stage: {:?}", s.value),
                    hint: Some(
                        "stage names start with a letter and contain only letters, digits, '-', '_' and '.'".into(),
                    ),
                    span: s.span,
                });
            }
            Some(Spanned::new(lower, s.span))
        }
        None => None,
    };
    Ok(Kind::From {
        image,
        name: stage,
        platform: flags.value("platform"),
    })
}

/// BuildKit's `^[a-z][a-z0-9-_\.]*$`, applied to the lower-cased name.
pub fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_run(node: &Node, name: &str) -> Result<Kind> {
    let flags = Flags::new(
        node,
        name,
        &[
            ("mount", FlagKind::Repeated),
            ("network", FlagKind::Value),
            ("security", FlagKind::Value),
        ],
    )?;
    if !node.json {
        require_args(node, name, 1)?;
    }
    let network = match flags.value("network") {
        None => None,
        Some(v) => Some(match v.value.as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => {
                return Err(Error::InvalidFlag {
                    instruction: name.into(),
                    flag: "network".into(),
                    message: format!(
                        "unsupported network mode {other:?} (expected default, none or host)"
                    ),
                    span: v.span,
                });
            }
        }),
    };
    let security = match flags.value("security") {
        None => None,
        Some(v) => Some(match v.value.as_str() {
            "sandbox" => Security::Sandbox,
            "insecure" => Security::Insecure,
            other => {
                return Err(Error::InvalidFlag {
                    instruction: name.into(),
                    flag: "security".into(),
                    message: format!(
                        "unsupported security mode {other:?} (expected sandbox or insecure)"
                    ),
                    span: v.span,
                });
            }
        }),
    };
    let mounts = flags.values("mount");
    // Check the mounts' syntax now (unexpanded) so mistakes surface before anything
    // runs; they are parsed again with expansion when the step is executed.
    for m in &mounts {
        parse_mount(&m.value).map_err(|message| Error::InvalidFlag {
            instruction: name.into(),
            flag: "mount".into(),
            message,
            span: m.span,
        })?;
    }
    Ok(Kind::Run {
        command: command(node),
        mounts,
        network,
        security,
        heredocs: node.heredocs.clone(),
    })
}

/// Parse one `--mount` value (`type=cache,target=/root/.cache,sharing=locked`).
///
/// Keys and defaults follow BuildKit: the type defaults to `bind`; bind mounts are
/// read-only unless `rw`; `target` is required except for secret and ssh mounts;
/// a secret's target defaults to `/run/secrets/<id>`, and its id to the target's
/// file name; an ssh mount's id defaults to `default`.
pub fn parse_mount(value: &str) -> std::result::Result<Mount, String> {
    let mut mount = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: true,
        id: None,
        sharing: CacheSharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    let fields = split_csv(value)?;
    // The type decides the defaults, so read it first wherever it was written.
    let mut read_only: Option<bool> = None;
    for field in &fields {
        if let Some(("type", t)) = field
            .split_once('=')
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v))
            .as_ref()
            .map(|(k, v)| (k.as_str(), *v))
        {
            mount.kind = match t {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => {
                    return Err(format!(
                        "unsupported mount type {other:?} (expected bind, cache, tmpfs, secret or ssh)"
                    ));
                }
            };
        }
    }
    mount.read_only = matches!(
        mount.kind,
        MountType::Bind | MountType::Secret | MountType::Ssh
    );
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |v: &Option<String>| {
            v.clone()
                .ok_or_else(|| format!("mount option {key:?} needs a value ({key}=...)"))
        };
        let boolean = |v: &Option<String>| -> std::result::Result<bool, String> {
            match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(other) => Err(format!(
                    "invalid value {other:?} for {key} (expected true or false)"
                )),
            }
        };
        match key.as_str() {
            "type" => {}
            "from" => mount.from = Some(need(&val)?),
            "source" | "src" => mount.source = Some(need(&val)?),
            "target" | "dst" | "destination" => mount.target = Some(need(&val)?),
            "readonly" | "ro" => read_only = Some(boolean(&val)?),
            "readwrite" | "rw" => read_only = Some(!boolean(&val)?),
            "id" => mount.id = Some(need(&val)?),
            "sharing" => {
                mount.sharing = match need(&val)?.as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    other => {
                        return Err(format!(
                            "unsupported sharing value {other:?} (expected shared, private or locked)"
                        ));
                    }
                }
            }
            "mode" => {
                let v = need(&val)?;
                mount.mode = Some(
                    u32::from_str_radix(&v, 8)
                        .map_err(|_| format!("invalid mode {v:?}: expected octal, like 0755"))?,
                );
            }
            "uid" | "gid" => {
                let v = need(&val)?;
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("invalid {key} {v:?}: expected a number"))?;
                if key == "uid" {
                    mount.uid = Some(n);
                } else {
                    mount.gid = Some(n);
                }
            }
            "required" => mount.required = boolean(&val)?,
            "size" => {
                let v = need(&val)?;
                mount.size = Some(parse_size(&v).ok_or_else(|| {
                    format!("invalid size {v:?}: expected bytes, or a number with k, m or g")
                })?);
            }
            "env" => mount.env = Some(need(&val)?),
            other => return Err(format!("unexpected key {other:?} in {field:?}")),
        }
    }
    if let Some(ro) = read_only {
        mount.read_only = ro;
    }
    match mount.kind {
        MountType::Secret => {
            if mount.id.is_none() {
                let from_target = mount
                    .target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                if from_target.is_none() && mount.env.is_none() {
                    return Err("a secret mount needs id= or target=".into());
                }
                mount.id = from_target.or_else(|| mount.env.clone());
            }
            if mount.target.is_none() && mount.env.is_none() {
                mount.target = mount.id.as_ref().map(|id| format!("/run/secrets/{id}"));
            }
        }
        MountType::Ssh => {
            if mount.id.is_none() {
                mount.id = Some("default".into());
            }
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if mount.target.is_none() {
                return Err("mount needs target= (where it appears inside the container)".into());
            }
        }
    }
    if mount.kind != MountType::Cache && mount.sharing != CacheSharing::Shared {
        return Err("sharing= applies only to type=cache".into());
    }
    Ok(mount)
}

/// Split a CSV field list as Go's encoding/csv does for one record: commas separate,
/// double quotes group (with `""` for a literal quote).
fn split_csv(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', false) if cur.is_empty() || cur.ends_with('=') => in_quotes = true,
            ('"', true) => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            }
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if in_quotes {
        return Err(format!("unterminated quote in {value:?}"));
    }
    fields.push(cur);
    Ok(fields
        .into_iter()
        .filter(|f| !f.trim().is_empty())
        .collect())
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (digits, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_copy(node: &Node, name: &str, add: bool) -> Result<CopySpec> {
    let mut accepted = vec![
        ("chown", FlagKind::Value),
        ("chmod", FlagKind::Value),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Repeated),
    ];
    if add {
        accepted.extend([
            ("checksum", FlagKind::Value),
            ("keep-git-dir", FlagKind::Bool),
            ("unpack", FlagKind::Bool),
        ]);
    } else {
        accepted.extend([("from", FlagKind::Value), ("parents", FlagKind::Bool)]);
    }
    let flags = Flags::new(node, name, &accepted)?;
    let Some((dest, sources)) = node.args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(Error::InvalidInstruction {
            instruction: name.into(),
            message: format!(
                "{name} requires at least two arguments, but only {} provided; the destination could not be determined",
                if node.args.len() == 1 {
                    "one was"
                } else {
                    "none were"
                }
            ),
            hint: Some(format!("write {name} <source>... <destination>")),
            span: if node.args.is_empty() {
                node.keyword_span
            } else {
                args_span(node)
            },
        });
    };
    if let Some(chmod) = flags.value("chmod") {
        check_chmod(&chmod.value).map_err(|message| Error::InvalidFlag {
            instruction: name.into(),
            flag: "chmod".into(),
            message,
            span: chmod.span,
        })?;
    }
    if let Some(sum) = flags.value("checksum") {
        let ok = sum.value.contains('$')
            || sum
                .value
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(Error::InvalidFlag {
                instruction: name.into(),
                flag: "checksum".into(),
                message: format!(
                    "invalid checksum {:?}: expected sha256:<64 hex digits>",
                    sum.value
                ),
                span: sum.span,
            });
        }
    }
    Ok(CopySpec {
        sources: sources.to_vec(),
        dest: dest.clone(),
        from: flags.value("from"),
        chown: flags.value("chown"),
        chmod: flags.value("chmod"),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags.values("exclude"),
        checksum: flags.value("checksum"),
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        unpack: flags.bool("unpack"),
        heredocs: node.heredocs.clone(),
        json: node.json,
    })
}

/// `--chmod` takes an octal mode (`755`, `0644`) or a symbolic one (`u=rwx,go=rx`,
/// `+x`), as BuildKit does since Dockerfile 1.14. Values with variables are checked
/// after expansion.
pub fn check_chmod(value: &str) -> std::result::Result<(), String> {
    if value.contains('$') {
        return Ok(());
    }
    if !value.is_empty() && value.chars().all(|c| c.is_digit(8)) {
        return match u32::from_str_radix(value, 8) {
            Ok(m) if m <= 0o7777 => Ok(()),
            _ => Err(format!("invalid mode {value:?}: octal modes go up to 7777")),
        };
    }
    for clause in value.split(',') {
        let op = clause.find(['+', '-', '=']).ok_or_else(|| {
            format!("invalid mode {value:?}: expected octal (0755) or symbolic (u+x,go=r)")
        })?;
        let (who, rest) = clause.split_at(op);
        let perms = &rest[1..];
        if !who.chars().all(|c| matches!(c, 'u' | 'g' | 'o' | 'a'))
            || !perms
                .chars()
                .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't' | '+' | '-' | '='))
        {
            return Err(format!(
                "invalid mode {value:?}: expected octal (0755) or symbolic (u+x,go=r)"
            ));
        }
    }
    Ok(())
}

fn parse_arg(node: &Node, name: &str) -> Result<Kind> {
    Flags::new(node, name, &[])?;
    require_args(node, name, 1)?;
    let mut decls = Vec::new();
    for word in &node.args {
        let (n, default) = match word.value.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (word.value.clone(), None),
        };
        if n.is_empty() {
            return Err(invalid(name, "ARG names can not be blank", word.span));
        }
        decls.push(ArgDecl {
            name: Spanned::new(n, word.span),
            default,
        });
    }
    Ok(Kind::Arg(decls))
}

fn parse_key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>> {
    Flags::new(node, name, &[])?;
    require_args(node, name, 1)?;
    let mut out = Vec::new();
    for triple in node.args.chunks(3) {
        let [key, value, sep] = triple else {
            return Err(invalid(name, "malformed key=value list", node.span));
        };
        if key.value.is_empty() {
            return Err(invalid(
                name,
                format!("{name} names can not be blank"),
                key.span,
            ));
        }
        out.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
            legacy: sep.value.is_empty(),
        });
    }
    Ok(out)
}

fn parse_healthcheck(node: &Node, name: &str) -> Result<Kind> {
    let flags = Flags::new(
        node,
        name,
        &[
            ("interval", FlagKind::Value),
            ("timeout", FlagKind::Value),
            ("start-period", FlagKind::Value),
            ("start-interval", FlagKind::Value),
            ("retries", FlagKind::Value),
        ],
    )?;
    let Some(typ) = node.args.first() else {
        return Err(invalid(
            name,
            "HEALTHCHECK requires an argument: CMD or NONE",
            node.keyword_span,
        ));
    };
    match typ.value.to_ascii_uppercase().as_str() {
        "NONE" => {
            if node.args.len() > 1 {
                return Err(invalid(
                    name,
                    "HEALTHCHECK NONE takes no arguments",
                    args_span(node),
                ));
            }
            if let Some(f) = node.flags.first() {
                return Err(invalid(name, "HEALTHCHECK NONE takes no options", f.span));
            }
            Ok(Kind::Healthcheck(Healthcheck::None))
        }
        "CMD" => {
            let rest = &node.args[1..];
            if rest.is_empty() {
                return Err(invalid(
                    name,
                    "HEALTHCHECK CMD requires a command",
                    typ.span,
                ));
            }
            let command = if node.json {
                Command::Exec(rest.iter().map(|a| a.value.clone()).collect())
            } else {
                Command::Shell(rest[0].value.clone())
            };
            let duration = |flag: &str| -> Result<Duration> {
                match flags.value(flag) {
                    None => Ok(Duration::ZERO),
                    Some(v) => {
                        let d = parse_go_duration(&v.value).ok_or_else(|| Error::InvalidFlag {
                            instruction: name.into(),
                            flag: flag.into(),
                            message: format!(
                                "invalid duration {:?} (examples: 30s, 1m30s, 500ms)",
                                v.value
                            ),
                            span: v.span,
                        })?;
                        if !d.is_zero() && d < Duration::from_millis(1) {
                            return Err(Error::InvalidFlag {
                                instruction: name.into(),
                                flag: flag.into(),
                                message: "must be at least 1ms (or 0 for the default)".into(),
                                span: v.span,
                            });
                        }
                        Ok(d)
                    }
                }
            };
            let retries = match flags.value("retries") {
                None => 0,
                Some(v) => v.value.parse::<u32>().map_err(|_| Error::InvalidFlag {
                    instruction: name.into(),
                    flag: "retries".into(),
                    message: format!("expected a non-negative number, got {:?}", v.value),
                    span: v.span,
                })?,
            };
            Ok(Kind::Healthcheck(Healthcheck::Check {
                command,
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            }))
        }
        other => Err(Error::InvalidInstruction {
            instruction: name.into(),
            message: format!("unknown type {other:?} in HEALTHCHECK"),
            hint: Some("use HEALTHCHECK CMD <command> or HEALTHCHECK NONE".into()),
            span: typ.span,
        }),
    }
}

/// Go's `time.ParseDuration` for non-negative values: a sequence of decimal numbers
/// each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

fn parse_onbuild(node: &Node, name: &str) -> Result<Kind> {
    Flags::new(node, name, &[])?;
    let Some(inner) = node.onbuild.as_deref() else {
        return Err(invalid(
            name,
            "ONBUILD requires at least one argument",
            node.keyword_span,
        ));
    };
    match inner.keyword.as_str() {
        "onbuild" => {
            return Err(Error::InvalidInstruction {
                instruction: name.into(),
                message: "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                hint: None,
                span: inner.keyword_span,
            });
        }
        "from" | "maintainer" => {
            return Err(Error::InvalidInstruction {
                instruction: name.into(),
                message: format!("{} isn't allowed as an ONBUILD trigger", inner.name()),
                hint: None,
                span: inner.keyword_span,
            });
        }
        _ => {}
    }
    Ok(Kind::Onbuild(Box::new(parse_instruction(inner)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Position;

    fn parse1(src: &str) -> Result<Instruction> {
        let df = crate::parse(src)?;
        let all = parse_all(&df)?;
        Ok(all.into_iter().last().expect("one instruction"))
    }

    fn err_at(src: &str) -> (Error, Position) {
        let e = parse1(src).expect_err("should fail");
        let pos = e.span().expect("has a span").start;
        (e, pos)
    }

    #[test]
    fn from_with_stage_and_platform() {
        let i = parse1("FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\n").expect("ok");
        let Kind::From {
            image,
            name,
            platform,
        } = i.kind
        else {
            panic!("not FROM")
        };
        assert_eq!(image.value, "golang:1.22");
        assert_eq!(name.map(|n| n.value), Some("build".into()));
        assert_eq!(platform.map(|p| p.value), Some("$BUILDPLATFORM".into()));
    }

    #[test]
    fn error_positions_for_each_kind() {
        let (e, p) = err_at("FROM a\nRUNN echo\n");
        assert!(
            matches!(&e, Error::UnknownInstruction { suggestion: Some(s), .. } if s == "RUN"),
            "{e:?}"
        );
        assert_eq!(p, Position::new(2, 1));
        assert_eq!(e.hint().as_deref(), Some("did you mean RUN?"));

        let (e, p) = err_at("FROM a\nCOPY --chwn=1 a b\n");
        assert!(
            matches!(&e, Error::UnknownFlag { suggestion: Some(s), .. } if s == "chown"),
            "{e:?}"
        );
        assert_eq!(p, Position::new(2, 6));

        let (e, p) = err_at("FROM a\nCOPY  --from a b\n");
        assert!(matches!(e, Error::InvalidFlag { .. }));
        assert_eq!(p, Position::new(2, 7));

        let (e, p) = err_at("FROM a\nCOPY --from=x --from=y a b\n");
        assert!(matches!(&e, Error::InvalidFlag { message, .. } if message.contains("duplicate")));
        assert_eq!(p, Position::new(2, 15));

        let (e, p) = err_at("FROM a\nCOPY onlyone\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 6));

        let (e, p) = err_at("FROM a AS 1bad\n");
        assert!(
            matches!(&e, Error::InvalidInstruction { message, .. } if message.contains("invalid name"))
        );
        assert_eq!(p, Position::new(1, 11));

        let (e, p) = err_at("FROM a b\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(1, 6));

        let (e, p) = err_at("FROM a\nSHELL /bin/bash -c\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 1));

        let (e, p) = err_at("FROM a\nONBUILD ONBUILD RUN x\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 9));

        let (e, p) = err_at("FROM a\nONBUILD FROM b\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 9));

        let (e, p) = err_at("FROM a\nHEALTHCHECK --interval=5 CMD true\n");
        assert!(matches!(e, Error::InvalidFlag { .. }));
        assert_eq!(p, Position::new(2, 13));

        let (e, p) = err_at("FROM a\nHEALTHCHECK CONNECT x\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 13));

        let (e, p) = err_at("FROM a\nRUN --network=bridge true\n");
        assert!(matches!(e, Error::InvalidFlag { .. }));
        assert_eq!(p, Position::new(2, 5));

        let (e, p) = err_at("FROM a\nRUN --mount=type=cache true\n");
        assert!(matches!(&e, Error::InvalidFlag { message, .. } if message.contains("target")));
        assert_eq!(p, Position::new(2, 5));

        let (e, p) = err_at("FROM a\nCOPY --chmod=999 a b\n");
        assert!(matches!(e, Error::InvalidFlag { .. }));
        assert_eq!(p, Position::new(2, 6));

        let (e, p) = err_at("FROM a\nWORKDIR\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 1));

        let (e, p) = err_at("FROM a\nVOLUME [\"\"]\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 8));

        let (e, p) = err_at("FROM a\nARG =x\n");
        assert!(matches!(e, Error::InvalidInstruction { .. }));
        assert_eq!(p, Position::new(2, 5));

        let (e, p) = err_at("FROM a\nADD --checksum=md5:abc http://x/y /z\n");
        assert!(matches!(e, Error::InvalidFlag { .. }));
        assert_eq!(p, Position::new(2, 5));
    }

    #[test]
    fn copy_and_add_flags() {
        let i = parse1("COPY --from=build --chown=app:app --chmod=u+x,go=r --link --parents --exclude=*.pyc --exclude=tests a b /dst/\n").expect("ok");
        let Kind::Copy(c) = i.kind else {
            panic!("not COPY")
        };
        assert_eq!(c.from.map(|f| f.value), Some("build".into()));
        assert_eq!(c.chown.map(|f| f.value), Some("app:app".into()));
        assert!(c.link && c.parents);
        assert_eq!(
            c.exclude
                .iter()
                .map(|e| e.value.as_str())
                .collect::<Vec<_>>(),
            ["*.pyc", "tests"]
        );
        assert_eq!(
            c.sources
                .iter()
                .map(|s| s.value.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(c.dest.value, "/dst/");

        let i = parse1("ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d --keep-git-dir=false --unpack=false https://x/a.tgz /opt/\n").expect("ok");
        let Kind::Add(a) = i.kind else {
            panic!("not ADD")
        };
        assert!(a.checksum.is_some());
        assert_eq!(a.unpack, Some(false));
        assert!(!a.keep_git_dir);
        // COPY has no --checksum, ADD has no --from.
        assert!(parse1("COPY --checksum=sha256:00 a b\n").is_err());
        assert!(parse1("ADD --from=x a b\n").is_err());
    }

    #[test]
    fn run_mounts_of_every_type() {
        let m = parse_mount(
            "type=cache,target=/root/.cache/pip,sharing=locked,id=pip,mode=0700,uid=1000,gid=1000",
        )
        .expect("cache");
        assert_eq!(
            (m.kind, m.sharing, m.mode, m.uid, m.read_only),
            (
                MountType::Cache,
                CacheSharing::Locked,
                Some(0o700),
                Some(1000),
                false
            )
        );
        let m = parse_mount("target=/src,from=builder,source=/out,rw").expect("bind");
        assert_eq!(
            (m.kind, m.read_only, m.from.as_deref()),
            (MountType::Bind, false, Some("builder"))
        );
        let m = parse_mount("type=tmpfs,target=/tmp,size=64m").expect("tmpfs");
        assert_eq!(m.size, Some(64 << 20));
        let m = parse_mount("type=secret,id=token").expect("secret");
        assert_eq!(m.target.as_deref(), Some("/run/secrets/token"));
        let m = parse_mount("type=secret,target=/etc/key,required").expect("secret by target");
        assert_eq!((m.id.as_deref(), m.required), (Some("key"), true));
        let m = parse_mount("type=secret,id=tok,env=TOKEN").expect("secret env");
        assert_eq!((m.env.as_deref(), m.target), (Some("TOKEN"), None));
        let m = parse_mount("type=ssh").expect("ssh");
        assert_eq!(m.id.as_deref(), Some("default"));
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(parse_mount("type=bind,target=/x,colour=red").is_err());
        assert!(parse_mount("type=bind,target=/x,sharing=locked").is_err());
        assert!(parse_mount("type=cache,target=/x,mode=999").is_err());
    }

    #[test]
    fn healthcheck_forms() {
        let i = parse1("HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD curl -f http://localhost/\n").expect("ok");
        let Kind::Healthcheck(Healthcheck::Check {
            command,
            interval,
            timeout,
            retries,
            ..
        }) = i.kind
        else {
            panic!()
        };
        assert_eq!(command, Command::Shell("curl -f http://localhost/".into()));
        assert_eq!(
            (interval, timeout, retries),
            (Duration::from_secs(90), Duration::from_millis(500), 3)
        );
        let i = parse1("HEALTHCHECK NONE\n").expect("ok");
        assert_eq!(i.kind, Kind::Healthcheck(Healthcheck::None));
        let i = parse1("HEALTHCHECK CMD [\"true\"]\n").expect("ok");
        assert!(matches!(
            i.kind,
            Kind::Healthcheck(Healthcheck::Check {
                command: Command::Exec(_),
                ..
            })
        ));
    }

    #[test]
    fn env_label_arg_forms() {
        let i = parse1("ENV A=1 B=\"two words\"\n").expect("ok");
        let Kind::Env(kv) = i.kind else { panic!() };
        assert_eq!(kv.len(), 2);
        assert_eq!(kv[1].value.value, "\"two words\"");
        assert!(!kv[0].legacy);
        let i = parse1("ENV PATH /usr/bin:/bin\n").expect("ok");
        let Kind::Env(kv) = i.kind else { panic!() };
        assert!(kv[0].legacy);
        let i = parse1("ARG A B=2 C=\n").expect("ok");
        let Kind::Arg(a) = i.kind else { panic!() };
        let got: Vec<_> = a
            .iter()
            .map(|d| (d.name.value.as_str(), d.default.as_deref()))
            .collect();
        assert_eq!(got, [("A", None), ("B", Some("2")), ("C", Some(""))]);
    }

    #[test]
    fn onbuild_wraps_and_keeps_original() {
        let i = parse1("ONBUILD RUN echo hi\n").expect("ok");
        let Kind::Onbuild(inner) = i.kind else {
            panic!()
        };
        assert_eq!(inner.name(), "RUN");
        assert_eq!(inner.original, "RUN echo hi");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("s"), None);
    }

    #[test]
    fn chmod_forms() {
        assert!(check_chmod("755").is_ok());
        assert!(check_chmod("0644").is_ok());
        assert!(check_chmod("u=rwx,go=rx").is_ok());
        assert!(check_chmod("+x").is_ok());
        assert!(check_chmod("$MODE").is_ok());
        assert!(check_chmod("999").is_err());
        assert!(check_chmod("rwx").is_err());
    }
}
