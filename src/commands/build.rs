//! `pybuild build [OPTIONS] PATH` (and its shorthand `pybuild [OPTIONS] PATH`).
//!
//! The options are resolved into one plain [`BuildSettings`] value (defaults applied,
//! environment consulted, combinations checked, Dockerfile read), which is what the
//! library's build call takes. Until that call exists, the Dockerfile is validated and
//! the command fails saying builds cannot be executed yet.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use pybuild::DockerfileSource;

use crate::cli::{
    BuildArgs, Compression, GlobalArgs, Network, OutputKind, OutputSpec, Progress, SecretSpec,
    SshSpec, resolve_build_args,
};
use crate::report::{CliError, warn};

use super::progress;

/// The command whose `--help` usage errors point at.
const COMMAND: &str = "pybuild build";

/// Set `PYBUILD_DEBUG=1` to print the resolved settings on standard error.
const DEBUG_ENV: &str = "PYBUILD_DEBUG";

/// Everything a build needs, resolved from the command line and the environment.
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "some settings (pull, network, squash, config) are for later issues"
)]
pub struct BuildSettings {
    /// The build context directory, as given; `None` when PATH was `-` (no context).
    pub context_dir: Option<PathBuf>,
    /// The Dockerfile (already read: from `-f`, standard input or `PATH/Dockerfile`).
    pub dockerfile: DockerfileSource,
    /// Where the Dockerfile is on disk (`None` for standard input).
    pub dockerfile_path: Option<PathBuf>,
    /// `-t`: image references, validated.
    pub tags: Vec<String>,
    /// `--build-arg`s in command-line order (a repeated key keeps its first position and
    /// its last value; `KEY` alone was taken from the environment or dropped).
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build; `None` builds the last one.
    pub target: Option<String>,
    /// `--platform`s, lower case, without duplicates; empty means the host's platform.
    pub platforms: Vec<String>,
    /// `--label`s, in order (a repeated key keeps its last value).
    pub labels: Vec<(String, String)>,
    /// `-o/--output`s, with `--push` applied; empty means no export (build only).
    pub outputs: Vec<OutputSpec>,
    /// `--secret`s.
    pub secrets: Vec<SecretSpec>,
    /// `--ssh`s.
    pub ssh: Vec<SshSpec>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages not to take from the cache.
    pub no_cache_filter: Vec<String>,
    /// `--pull`.
    pub pull: bool,
    /// `--push` (also reflected in `outputs` as an image output with `push=true`).
    pub push: bool,
    /// `--progress`, with `-q` folded in (`Quiet`).
    pub progress: Progress,
    /// `-q`: print only the image ID on success.
    pub quiet: bool,
    /// `--network` for RUN.
    pub network: Network,
    /// `--squash`.
    pub squash: bool,
    /// `--compression`; `None` leaves the default (gzip).
    pub compression: Option<Compression>,
    /// `--oci-mediatypes`; `None` leaves the default.
    pub oci_mediatypes: Option<bool>,
    /// `--iidfile`.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file`.
    pub metadata_file: Option<PathBuf>,
    /// `--root` / `PYBUILD_ROOT`: pybuild's state directory; `None` means the default.
    pub root: Option<PathBuf>,
    /// `--config` / `PYBUILD_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--registry-mirror HOST=MIRROR`s.
    pub registry_mirrors: Vec<(String, String)>,
}

/// Run `pybuild build`.
pub fn run(args: BuildArgs, global: GlobalArgs) -> anyhow::Result<()> {
    let settings = resolve(args, global, |key| std::env::var(key).ok())?;
    if std::env::var_os(DEBUG_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("debug: build settings: {settings:#?}");
    }
    // Validation: syntax and planning errors are reported compiler-style before
    // anything runs.
    let options = super::plan_options(
        settings.build_args.clone(),
        settings.target.clone(),
        &settings.platforms,
    )?;
    let planned = pybuild::plan_with_warnings(&settings.dockerfile, &options)?;
    for warning in &planned.warnings {
        eprint!("{warning}");
    }
    for arg in &planned.graph.unused_build_args {
        warn(format_args!(
            "build arg {arg} was given but no ARG in the Dockerfile consumes it"
        ));
    }
    execute(&settings, options, &planned.graph)
}

/// Hand the settings to the library: one `pybuild::build::build` call, with a
/// progress printer, then the summary lines docker prints.
fn execute(
    settings: &BuildSettings,
    plan: pybuild::PlanOptions,
    graph: &pybuild::BuildGraph,
) -> anyhow::Result<()> {
    let mut secrets = pybuild::build::Secrets::default();
    for s in &settings.secrets {
        let source = match &s.source {
            crate::cli::SecretSource::File(path) => {
                pybuild::build::SecretSource::File(path.clone())
            }
            crate::cli::SecretSource::Env(var) => pybuild::build::SecretSource::Env(var.clone()),
        };
        secrets.insert(s.id.clone(), source);
    }
    let ssh_agent = match settings.ssh.first() {
        None => None,
        Some(spec) => Some(ssh_socket(spec)?),
    };
    let store = pybuild::open_store(settings.root.as_deref())?;
    let request = pybuild::build::BuildRequest {
        dockerfile: settings.dockerfile.clone(),
        dockerfile_path: settings.dockerfile_path.clone(),
        context_dir: settings.context_dir.clone(),
        plan,
        solve: pybuild::build::SolveOptions {
            secrets,
            ssh_agent,
            pull: settings.pull,
            no_cache: settings.no_cache,
            no_cache_filter: settings.no_cache_filter.clone(),
            compression: match settings.compression {
                Some(Compression::Zstd) => pybuild::build::Compression::Zstd { level: 3 },
                _ => pybuild::build::Compression::Gzip { level: 6 },
            },
            source_date_epoch: source_date_epoch(settings)?,
            oci_mediatypes: settings.oci_mediatypes.unwrap_or(true),
            labels: settings.labels.clone(),
            squash: settings.squash,
        },
        outputs: outputs(settings)?,
        iidfile: settings.iidfile.clone(),
        metadata_file: settings.metadata_file.clone(),
        registry: pybuild::registry::RegistrySettings {
            config_file: settings.config.clone(),
            mirrors: settings.registry_mirrors.clone(),
        },
        sandbox_program: None,
        cancel: Some(cancel_on_ctrl_c()),
    };
    let printer = progress::Printer::new(settings.progress);
    let result = pybuild::build::build_planned(&store, &request, graph, &printer);
    match &result {
        Ok(built) => printer.finish(progress::Outcome::Built {
            image_id: &built.image_id.to_string(),
        }),
        Err(error) => printer.finish(progress::Outcome::Failed {
            message: &failure_message(error),
        }),
    }
    let result = result?;
    if settings.quiet {
        super::write_stdout(&format!("{}\n", result.image_id))?;
    } else if !matches!(settings.progress, Progress::Quiet | Progress::Rawjson) {
        eprintln!("writing image {}", result.image_id);
        for tag in &result.tags {
            eprintln!("naming to {tag}");
        }
    }
    Ok(())
}

/// What the progress display says about a failed build: the failing step's error
/// (the full diagnostic, with the Dockerfile excerpt, is printed after it).
fn failure_message(error: &pybuild::Error) -> String {
    match error {
        pybuild::Error::Build { error, .. } => error.to_string(),
        other => other.to_string(),
    }
}

/// The agent socket of `--ssh default` (`SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`.
fn ssh_socket(spec: &SshSpec) -> anyhow::Result<PathBuf> {
    if let Some(path) = spec.paths.first() {
        return Ok(path.clone());
    }
    std::env::var_os("SSH_AUTH_SOCK")
        .map(PathBuf::from)
        .ok_or_else(|| {
            CliError::new("--ssh default needs an SSH agent, but SSH_AUTH_SOCK is not set")
                .hint("start one with `eval $(ssh-agent)` and `ssh-add`")
                .into()
        })
}

/// A cancellation token that Ctrl-C (SIGINT) or SIGTERM sets: the running RUN step is
/// stopped, its mounts go away with its namespace, and the build fails without
/// tagging anything.
fn cancel_on_ctrl_c() -> pybuild::build::CancelToken {
    let token = pybuild::build::CancelToken::new();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, flag.clone());
    }
    let watched = token.clone();
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        watched.cancel();
    });
    token
}

/// `SOURCE_DATE_EPOCH`: the build arg wins over the environment (as with buildx, which
/// passes the environment variable on as a build arg).
fn source_date_epoch(settings: &BuildSettings) -> anyhow::Result<Option<i64>> {
    let value = settings
        .build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok());
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => text.trim().parse::<i64>().map(Some).map_err(|_| {
            CliError::new(format!(
                "SOURCE_DATE_EPOCH={text:?} is not a number of seconds since 1970"
            ))
            .into()
        }),
    }
}

/// The library's outputs for the `--output`s and `-t`s.
fn outputs(settings: &BuildSettings) -> anyhow::Result<Vec<pybuild::build::Output>> {
    use pybuild::build::Output;
    let mut out = vec![Output::Store {
        names: settings.tags.clone(),
    }];
    for spec in &settings.outputs {
        let dest = || -> anyhow::Result<PathBuf> {
            match spec.dest.as_deref() {
                Some("-") => Err(CliError::new(format!(
                    "--output type={}: writing to standard output is not supported yet",
                    spec.kind
                ))
                .hint("give a file name: dest=FILE")
                .into()),
                Some(d) => Ok(PathBuf::from(d)),
                None => Err(CliError::usage(
                    COMMAND,
                    format!("--output type={} needs dest=PATH", spec.kind),
                )
                .into()),
            }
        };
        match spec.kind {
            OutputKind::Image => {
                let names: Vec<String> = match spec.attrs.get("name") {
                    Some(names) => names.split(',').map(str::to_owned).collect(),
                    None => settings.tags.clone(),
                };
                if spec.attrs.get("push").is_some_and(|p| p == "true") {
                    out.push(Output::Push {
                        names: names.clone(),
                    });
                }
                if let Some(names) = spec.attrs.get("name") {
                    out.push(Output::Store {
                        names: names.split(',').map(str::to_owned).collect(),
                    });
                }
            }
            OutputKind::CacheOnly => {}
            OutputKind::Local => out.push(Output::LocalDir(dest()?)),
            OutputKind::Tar => out.push(Output::RootfsTar(dest()?)),
            OutputKind::Docker => out.push(Output::DockerArchive(dest()?)),
            OutputKind::Oci => {
                if spec.attrs.get("tar").is_some_and(|t| t == "false") {
                    out.push(Output::OciDir(dest()?));
                } else {
                    out.push(Output::OciArchive(dest()?));
                }
            }
        }
    }
    Ok(out)
}

/// Turn the parsed options into [`BuildSettings`]: check the combinations (usage errors),
/// resolve `--build-arg KEY` through `lookup_env`, apply `--push`, find and read the
/// Dockerfile.
pub fn resolve(
    args: BuildArgs,
    global: GlobalArgs,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<BuildSettings> {
    let context_from_stdin = super::is_stdin(&args.context);

    // Combinations that cannot work.
    if context_from_stdin && args.file.is_some() {
        return Err(CliError::usage(
            COMMAND,
            "with PATH `-` the Dockerfile is read from standard input; -f cannot name another",
        )
        .hint("pass a context directory as PATH to use -f")
        .into());
    }
    let progress = match (args.quiet, args.progress) {
        (false, progress) => progress,
        (true, Progress::Auto | Progress::Quiet) => Progress::Quiet,
        (true, other) => {
            return Err(CliError::usage(
                COMMAND,
                format!(
                    "-q/--quiet and --progress={} cannot be used together",
                    clap::ValueEnum::to_possible_value(&other)
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default()
                ),
            )
            .into());
        }
    };
    if args.compression == Some(Compression::Zstd) && args.oci_mediatypes == Some(false) {
        return Err(CliError::usage(
            COMMAND,
            "--compression=zstd needs OCI media types, but --oci-mediatypes=false was given",
        )
        .into());
    }
    let mut outputs = args.outputs;
    if args.push {
        apply_push(&mut outputs);
    }
    if outputs.iter().filter(|o| o.to_stdout()).count() > 1 {
        return Err(CliError::usage(COMMAND, "only one output can go to standard output").into());
    }
    if outputs.iter().any(|o| o.to_stdout()) && args.quiet {
        return Err(CliError::usage(
            COMMAND,
            "-q/--quiet prints the image ID on standard output, where an output (dest=-) goes too",
        )
        .into());
    }
    let pushes_unnamed = outputs.iter().any(|o| {
        o.kind == OutputKind::Image
            && o.attrs.get("push").is_some_and(|p| p == "true")
            && !o.attrs.contains_key("name")
    });
    if pushes_unnamed && args.tags.is_empty() {
        return Err(CliError::usage(COMMAND, "pushing needs an image name")
            .hint("name the image with -t NAME[:TAG]")
            .into());
    }

    let (build_args, unset) = resolve_build_args(&args.build_args, lookup_env);
    for key in unset {
        warn(format_args!(
            "--build-arg {key}: {key} is not set in the environment; ignored"
        ));
    }

    // The context, then the Dockerfile.
    let context_dir = if context_from_stdin {
        None
    } else {
        Some(check_context(&args.context)?)
    };
    let dockerfile_path = match (&args.file, &context_dir) {
        (Some(file), _) if !super::is_stdin(file) => Some(file.clone()),
        (None, Some(dir)) => Some(default_dockerfile(dir)),
        _ => None,
    };
    let dockerfile = match (&args.file, &context_dir) {
        (Some(file), _) => super::read_dockerfile(
            file,
            "use -f to name the Dockerfile (a path from the current directory, or - for standard input)",
        )?,
        (None, Some(dir)) => {
            super::read_dockerfile(&default_dockerfile(dir), "use -f to name the Dockerfile")?
        }
        (None, None) => super::read_dockerfile_from_stdin()?,
    };

    Ok(BuildSettings {
        context_dir,
        dockerfile,
        dockerfile_path,
        tags: dedup(args.tags),
        build_args,
        target: args.target,
        platforms: dedup(args.platforms),
        labels: last_wins(args.labels),
        outputs,
        secrets: args.secrets,
        ssh: args.ssh,
        no_cache: args.no_cache,
        no_cache_filter: dedup(args.no_cache_filter),
        pull: args.pull,
        push: args.push,
        progress,
        quiet: args.quiet,
        network: args.network,
        squash: args.squash,
        compression: args.compression,
        oci_mediatypes: args.oci_mediatypes,
        iidfile: args.iidfile,
        metadata_file: args.metadata_file,
        root: global.root,
        config: global.config,
        registry_mirrors: global.registry_mirrors,
    })
}

/// `--push` as buildx does it: every image output pushes; without one, add one.
fn apply_push(outputs: &mut Vec<OutputSpec>) {
    let mut pushed = false;
    for output in outputs.iter_mut().filter(|o| o.kind == OutputKind::Image) {
        output.attrs.insert("push".into(), "true".into());
        pushed = true;
    }
    if !pushed {
        outputs.push(OutputSpec {
            kind: OutputKind::Image,
            dest: None,
            attrs: [("push".to_owned(), "true".to_owned())].into(),
        });
    }
}

/// The context directory must exist and be a directory.
fn check_context(dir: &Path) -> anyhow::Result<PathBuf> {
    let text = dir.to_string_lossy();
    if ["http://", "https://", "git://", "git@"]
        .iter()
        .any(|p| text.starts_with(p))
    {
        return Err(CliError::new(format!(
            "remote build contexts are not supported yet: {text}"
        ))
        .hint("clone or download it, then pass the local directory as PATH")
        .into());
    }
    if !dir.exists() {
        return Err(
            CliError::new(format!("build context {} not found", dir.display()))
                .hint("PATH is the build context directory, e.g. `pybuild -t NAME .`")
                .into(),
        );
    }
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "build context {} is not a directory",
            dir.display()
        ))
        .hint("PATH is the build context directory; name the Dockerfile with -f FILE")
        .into());
    }
    Ok(dir.to_path_buf())
}

/// `PATH/Dockerfile`, or `PATH/dockerfile` when only that exists (as docker does).
fn default_dockerfile(dir: &Path) -> PathBuf {
    let upper = dir.join("Dockerfile");
    let lower = dir.join("dockerfile");
    if !upper.exists() && lower.is_file() {
        lower
    } else {
        upper
    }
}

/// Remove repeats, keeping the first occurrence.
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// A repeated key keeps its first position and its last value.
fn last_wins(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value,
            None => out.push((key, value)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_output;

    #[test]
    fn push_marks_image_outputs_or_adds_one() {
        let mut outputs = vec![parse_output("type=local,dest=out").unwrap()];
        apply_push(&mut outputs);
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[1].kind, OutputKind::Image);
        assert_eq!(outputs[1].attrs["push"], "true");

        let mut outputs = vec![parse_output("type=image,name=x").unwrap()];
        apply_push(&mut outputs);
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].attrs["push"], "true");
    }

    #[test]
    fn repeats() {
        assert_eq!(dedup(vec!["a".into(), "b".into(), "a".into()]), ["a", "b"]);
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            last_wins(pairs(&[("a", "1"), ("b", "2"), ("a", "3")])),
            pairs(&[("a", "3"), ("b", "2")])
        );
    }
}
