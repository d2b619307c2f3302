//! The command line: clap types, value parsers for the docker-compatible option
//! syntaxes (`--output` csv, `--secret`, `--ssh`, `--build-arg`, ...), and the argv
//! rewrite that makes `pybuild -t NAME PATH` mean `pybuild build -t NAME PATH`.
//!
//! Nothing here prints or touches the file system; the commands in
//! [`crate::commands`] do that.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Shown under the top-level `--help`.
const AFTER_HELP: &str = "\
`pybuild [OPTIONS] PATH` is short for `pybuild build [OPTIONS] PATH`, for example:
  pybuild -t myimage:latest .";

/// pybuild: build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(
    name = "pybuild",
    version,
    about = "Build container images from Dockerfiles, without a daemon",
    long_about = None,
    subcommand_required = true,
    arg_required_else_help = true,
    after_help = AFTER_HELP,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every subcommand accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted by every subcommand (before or after it).
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Directory holding pybuild's state (cache, images)
    #[arg(
        long,
        global = true,
        env = "PYBUILD_ROOT",
        value_name = "DIR",
        help_heading = "Global Options"
    )]
    pub root: Option<PathBuf>,
    /// Configuration file
    #[arg(
        long,
        global = true,
        env = "PYBUILD_CONFIG",
        value_name = "FILE",
        help_heading = "Global Options"
    )]
    pub config: Option<PathBuf>,
    /// Try MIRROR before HOST when pulling from HOST (`docker.io=127.0.0.1:5000`);
    /// repeatable, tried in order before the config file's mirrors
    #[arg(
        long = "registry-mirror",
        global = true,
        value_name = "HOST=MIRROR",
        value_parser = parse_mirror,
        help_heading = "Global Options"
    )]
    pub registry_mirrors: Vec<(String, String)>,
}

/// `--registry-mirror HOST=MIRROR`.
fn parse_mirror(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((host, mirror)) if !host.is_empty() && !mirror.is_empty() => {
            Ok((host.to_owned(), mirror.to_owned()))
        }
        _ => Err(format!(
            "expected HOST=MIRROR (docker.io=127.0.0.1:5000), got {s:?}"
        )),
    }
}

/// The subcommands. Their names (with clap's `help`) are the words that stop the
/// `pybuild -t NAME PATH` shorthand from inserting `build`: see [`expand_shorthand`].
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<BuildArgs>),
    /// Inspect how pybuild reads a Dockerfile (for troubleshooting)
    #[command(subcommand)]
    Debug(DebugCommand),
    /// List the images in the local store
    Images(ImagesArgs),
    /// Show images' manifests and configs as JSON
    Inspect(InspectArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove image names (the data goes with the next prune)
    Rmi(RmiArgs),
    /// Save images to a tar archive
    Save(SaveArgs),
    /// Load images from a tar archive (docker or OCI, plain or gzipped)
    Load(LoadArgs),
    /// Remove unused data from the local store
    Prune(PruneArgs),
    /// Manage the local store
    #[command(subcommand)]
    Store(StoreCommand),
    /// Download an image from a registry into the local store
    Pull(PullArgs),
    /// Upload an image from the local store to a registry
    Push(PushArgs),
    /// Store credentials for a registry (in docker's config.json)
    Login(LoginArgs),
    /// Remove stored credentials for a registry
    Logout(LogoutArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Print the man page, or write one per command into a directory
    Man(ManArgs),
}

/// `pybuild completions SHELL`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pybuild completions bash > /etc/bash_completion.d/pybuild
  pybuild completions zsh > \"${fpath[1]}/_pybuild\"
  pybuild completions fish > ~/.config/fish/completions/pybuild.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `pybuild man [DIR]`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write pybuild.1 and one page per subcommand (pybuild-build.1, ...) here,
    /// instead of printing pybuild.1
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Command {
    /// Whether the command opens the local store (then, unprivileged, it runs in a
    /// user namespace: a rootless store holds files of subordinate ids).
    pub fn uses_store(&self) -> bool {
        !matches!(
            self,
            Command::Debug(_) | Command::Login(_) | Command::Logout(_)
        )
    }
}

/// `pybuild pull NAME`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image (`python:3.11-slim`, `127.0.0.1:5000/app:v1`, `name@sha256:...`)
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub name: String,
    /// The platform to pull from a multi-platform image (default: this machine's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print only the image's digest
    #[arg(short, long)]
    pub quiet: bool,
}

/// `pybuild push NAME [DEST]`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The local image
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
    /// Where to push it (default: NAME)
    #[arg(value_name = "DEST")]
    pub dest: Option<String>,
    /// Print only the pushed manifest digest
    #[arg(short, long)]
    pub quiet: bool,
}

/// `pybuild login [-u USER] [-p PASS | --password-stdin] REGISTRY`
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host (`127.0.0.1:5000`, `docker.io`)
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// User name
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: a password on the command line is visible to
    /// other users of the machine)
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
}

/// `pybuild logout REGISTRY`
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry host
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
}

/// `pybuild store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Re-hash every blob and check every image; exit 1 listing the problems
    Verify,
}

/// `pybuild images [-q] [--format table|json] [--no-trunc]`
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: a table, or one JSON object per line
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: ListFormat,
    /// Do not truncate image IDs
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `--format` of `pybuild images`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ListFormat {
    // Aligned columns: REPOSITORY TAG IMAGE ID CREATED SIZE
    #[default]
    Table,
    // One JSON object per image and line
    Json,
}

/// `pybuild inspect NAME...`
#[derive(Debug, Args)]
#[command(after_help = "Prints a JSON array with one object per image: \
                  {\"Name\", \"Id\" (config digest), \"Digest\" (manifest digest), \
                  \"Manifest\", \"Config\"}.")]
pub struct InspectArgs {
    /// Images to inspect
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `pybuild tag SOURCE TARGET`
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The existing image
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    pub source: String,
    /// The new name
    #[arg(value_name = "TARGET_IMAGE[:TAG]", value_parser = parse_tag)]
    pub target: String,
}

/// `pybuild rmi NAME...`
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `pybuild save NAME... -o FILE [--format ...]`
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Write to this file (written atomically)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format
    #[arg(long, value_name = "FORMAT", default_value = "docker-archive")]
    pub format: ArchiveFormat,
}

/// `--format` of `pybuild save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ArchiveFormat {
    // What `docker save` writes (docker load, podman load, skopeo docker-archive:)
    #[default]
    DockerArchive,
    // An OCI image layout in a tar (skopeo oci-archive:)
    OciArchive,
}

/// `pybuild load -i FILE`
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive to read
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,
    /// Print nothing
    #[arg(short, long)]
    pub quiet: bool,
}

/// `pybuild prune [--all]`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove the whole build cache
    #[arg(short, long)]
    pub all: bool,
}

/// `pybuild debug ...`
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the Dockerfile's parse tree in BuildKit's dump format
    Dump(DebugDumpArgs),
    /// Print the build's stage graph
    Graph(DebugGraphArgs),
}

/// `pybuild debug dump FILE`
#[derive(Debug, Args)]
pub struct DebugDumpArgs {
    /// The Dockerfile (`-` reads standard input)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `pybuild debug graph FILE [--target T] [--build-arg ...] [--platform ...]`
#[derive(Debug, Args)]
pub struct DebugGraphArgs {
    /// The Dockerfile (`-` reads standard input)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub build_args: Vec<BuildArg>,
    /// Set target platform for build (comma-separated list)
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',', value_parser = parse_platform)]
    pub platforms: Vec<String>,
    /// Set the target build stage to build
    #[arg(long, value_name = "STAGE", value_parser = parse_target)]
    pub target: Option<String>,
}

/// `pybuild build [OPTIONS] PATH`: the options of `docker build` (buildx).
///
/// `--help` reads like docker's: one short line per option, alphabetical within each
/// group (what to build, what to produce, how to report it).
#[derive(Debug, Args)]
#[command(
    override_usage = "pybuild build [OPTIONS] PATH | -",
    after_help = BUILD_AFTER_HELP
)]
pub struct BuildArgs {
    /// Build context directory (`-`: a Dockerfile on standard input, no context)
    #[arg(value_name = "PATH")]
    pub context: PathBuf,

    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", value_parser = parse_build_arg)]
    pub build_args: Vec<BuildArg>,

    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Set the networking mode for the RUN instructions during build
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: Network,

    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    pub no_cache: bool,

    /// Do not cache the specified stages
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_parser = parse_target)]
    pub no_cache_filter: Vec<String>,

    /// Set target platform for build (comma-separated list)
    #[arg(long = "platform", value_name = "PLATFORMS", value_delimiter = ',', value_parser = parse_platform)]
    pub platforms: Vec<String>,

    /// Always attempt to pull all referenced images
    #[arg(long)]
    pub pull: bool,

    /// Secret to expose to the build (format: "id=mysecret[,src=/local/secret|,env=VAR]")
    #[arg(long = "secret", value_name = "SECRET", value_parser = SecretParser)]
    pub secrets: Vec<SecretSpec>,

    /// SSH agent socket or keys to expose to the build (format: "default|ID[=SOCKET|KEY]")
    #[arg(long = "ssh", value_name = "SSH", value_parser = parse_ssh)]
    pub ssh: Vec<SshSpec>,

    /// Set the target build stage to build
    #[arg(long, value_name = "STAGE", value_parser = parse_target)]
    pub target: Option<String>,

    /// Compression for the image layers
    #[arg(long, value_name = "ALGORITHM", help_heading = OUTPUT_OPTIONS)]
    pub compression: Option<Compression>,

    /// Write the image ID to a file
    #[arg(long, value_name = "FILE", help_heading = OUTPUT_OPTIONS)]
    pub iidfile: Option<PathBuf>,

    /// Set metadata for an image
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label, help_heading = OUTPUT_OPTIONS)]
    pub labels: Vec<(String, String)>,

    /// Write build result metadata to a file
    #[arg(long = "metadata-file", value_name = "FILE", help_heading = OUTPUT_OPTIONS)]
    pub metadata_file: Option<PathBuf>,

    /// Use OCI media types in the image manifest
    #[arg(long = "oci-mediatypes", value_name = "BOOL", value_parser = BoolishValueParser::new(), help_heading = OUTPUT_OPTIONS)]
    pub oci_mediatypes: Option<bool>,

    /// Output destination (format: "type=local,dest=path")
    #[arg(short = 'o', long = "output", value_name = "OUTPUT", value_parser = parse_output, help_heading = OUTPUT_OPTIONS)]
    pub outputs: Vec<OutputSpec>,

    /// Shorthand for "--output=type=registry"
    #[arg(long, help_heading = OUTPUT_OPTIONS)]
    pub push: bool,

    /// Squash newly built layers into a single new layer
    #[arg(long, help_heading = OUTPUT_OPTIONS)]
    pub squash: bool,

    /// Name and optionally a tag (format: "name:tag")
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]", value_parser = parse_tag, help_heading = OUTPUT_OPTIONS)]
    pub tags: Vec<String>,

    /// Set type of progress output (plain shows the output of RUN steps)
    #[arg(long, value_name = "TYPE", default_value = "auto", help_heading = PROGRESS)]
    pub progress: Progress,

    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long, help_heading = PROGRESS)]
    pub quiet: bool,
}

/// Heading of the options saying what a build produces.
const OUTPUT_OPTIONS: &str = "Output Options";
/// Heading of the options saying how a build reports progress.
const PROGRESS: &str = "Progress";

/// Shown under `pybuild build --help`.
const BUILD_AFTER_HELP: &str = "\
Examples:
  pybuild build -t myapp:latest .
  pybuild build -f docker/Dockerfile --build-arg VERSION=1.2 -t myapp .
  pybuild build --target test --progress=plain .
  pybuild build -o type=oci,dest=myapp.tar .
  pybuild build --push -t 127.0.0.1:5000/myapp:v1 .

Outputs (-o): type=image (the default: the local store), registry, local, tar, oci,
docker; `-o DIR` is type=local, `-o -` a tar on standard output.
Progress (--progress): auto, tty, plain, rawjson, quiet; see docs/progress-events.md.";

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Progress {
    // A terminal display when standard error is a terminal, plain otherwise
    #[default]
    Auto,
    // Redrawn terminal display
    Tty,
    // Plain text log, with the output of RUN steps
    Plain,
    // One JSON object per line
    Rawjson,
    // No progress output
    Quiet,
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Network {
    // The build's own, sandboxed network
    #[default]
    Default,
    // No network access
    None,
    // The host's network
    Host,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    // gzip (the most compatible)
    Gzip,
    // zstd (faster; needs OCI media types)
    Zstd,
}

/// One `--build-arg KEY[=VALUE]` as written: the value is `None` when only the key was
/// given (docker then takes it from the environment, and drops it when unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArg {
    /// The variable name.
    pub key: String,
    /// The value, if `=` was given (it may be empty).
    pub value: Option<String>,
}

/// Parse `KEY[=VALUE]`.
pub fn parse_build_arg(s: &str) -> Result<BuildArg, String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (s, None),
    };
    if key.is_empty() {
        return Err("the variable name is empty (format: KEY[=VALUE])".into());
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!("the variable name {key:?} contains white space"));
    }
    Ok(BuildArg {
        key: key.to_owned(),
        value,
    })
}

/// Resolve `--build-arg`s docker's way: `KEY` alone takes the value of the environment
/// variable `KEY` (through `lookup`) and is dropped when that is unset; a key given
/// twice keeps its first position and its last value. Returns the pairs and the keys
/// that were dropped (the caller warns about them).
pub fn resolve_build_args(
    args: &[BuildArg],
    lookup: impl Fn(&str) -> Option<String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut unset = Vec::new();
    for arg in args {
        let value = match &arg.value {
            Some(v) => v.clone(),
            None => match lookup(&arg.key) {
                Some(v) => v,
                None => {
                    unset.push(arg.key.clone());
                    continue;
                }
            },
        };
        match pairs.iter_mut().find(|(k, _)| *k == arg.key) {
            Some(pair) => pair.1 = value,
            None => pairs.push((arg.key.clone(), value)),
        }
    }
    (pairs, unset)
}

/// Parse `--label KEY=VALUE` (`KEY` alone is an empty value, as in docker).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.is_empty() {
        return Err("the label name is empty (format: KEY=VALUE)".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Parse one platform of `--platform` (`os[/arch[/variant]]`, or `local`).
pub fn parse_platform(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty platform (format: os/arch[/variant], e.g. linux/amd64)".into());
    }
    let parts: Vec<&str> = s.split('/').collect();
    let valid_part = |p: &&str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if parts.len() > 3 || !parts.iter().all(valid_part) {
        return Err(format!(
            "invalid platform {s:?} (format: os/arch[/variant], e.g. linux/amd64)"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// Parse a stage name given to `--target` or `--no-cache-filter`.
pub fn parse_target(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the stage name is empty".into());
    }
    Ok(s.to_owned())
}

/// Validate an image reference given to `-t` (`[registry[:port]/]name[:tag][@digest]`),
/// with docker's rules: lower-case path components separated by `/`, a tag of at most
/// 128 word characters, dots and dashes.
pub fn parse_tag(s: &str) -> Result<String, String> {
    let invalid = |why: &str| format!("invalid reference format: {why}");
    if s.is_empty() {
        return Err(invalid("the name is empty"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(invalid("bad digest (format: name@sha256:HEX)"));
        }
    }
    // The tag is after the last ':' if that is after the last '/'.
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if !name_tag[i..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(invalid(&format!("bad tag {tag:?}")));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // A first component with a '.' or ':' or equal to "localhost" is a registry host.
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':']) || first == "localhost" {
            let host_ok = !first.is_empty()
                && first
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !host_ok {
                return Err(invalid(&format!("bad registry host {first:?}")));
            }
            components.remove(0);
        }
    }
    for component in components {
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(&format!(
                "repository name {name:?} must be lowercase"
            )));
        }
        if !valid_path_component(component) {
            return Err(invalid(&format!("bad name component {component:?}")));
        }
    }
    Ok(s.to_owned())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    let bytes: Vec<char> = c.chars().collect();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep: String = bytes[start..i].iter().collect();
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// Split one line of comma-separated values the way Go's `encoding/csv` does (which
/// BuildKit and buildx use for `--output`, `--secret`, `--cache-to`...): a field may be
/// double-quoted, in which case it may hold commas and `""` stands for one quote; a
/// quote inside an unquoted field is an error.
pub fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed (missing \")".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous text after a closing quote".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => {
                        return Err(
                            "a quote inside an unquoted field (quote the whole field: \"key=a,b\")"
                                .into(),
                        );
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// The exporter of an `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// The built file system, written to a directory.
    Local,
    /// The built file system, as a tar archive.
    Tar,
    /// An OCI image layout, as a tar archive.
    Oci,
    /// A `docker load`-able tar archive.
    Docker,
    /// An image in pybuild's store (`type=registry` is this with `push=true`).
    Image,
    /// Nothing: build only (to fill the cache, or check that the build works).
    CacheOnly,
}

impl OutputKind {
    /// The `type=` name.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Local => "local",
            OutputKind::Tar => "tar",
            OutputKind::Oci => "oci",
            OutputKind::Docker => "docker",
            OutputKind::Image => "image",
            OutputKind::CacheOnly => "cacheonly",
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `--output`, in BuildKit's `type=KIND,dest=PATH,key=value,...` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The exporter.
    pub kind: OutputKind,
    /// `dest=`: a path, or `-` for standard output.
    pub dest: Option<String>,
    /// Every other `key=value` (keys lower-cased, as buildx does).
    pub attrs: BTreeMap<String, String>,
}

impl OutputSpec {
    /// Whether the output goes to standard output (`dest=-`).
    pub fn to_stdout(&self) -> bool {
        self.dest.as_deref() == Some("-")
    }
}

/// Parse `--output` the way buildx does: a bare path (no `type=`, no comma) is
/// `type=local,dest=PATH`; `-` is `type=tar,dest=-`; otherwise csv `key=value` fields
/// with a required `type=`. `type=registry` becomes `type=image,push=true`.
pub fn parse_output(s: &str) -> Result<OutputSpec, String> {
    if s.is_empty() {
        return Err("empty output (format: type=local,dest=path)".into());
    }
    if s == "-" {
        return Ok(OutputSpec {
            kind: OutputKind::Tar,
            dest: Some("-".into()),
            attrs: BTreeMap::new(),
        });
    }
    let fields = split_csv(s)?;
    if fields.len() == 1 && fields[0] == s && !s.starts_with("type=") {
        return Ok(OutputSpec {
            kind: OutputKind::Local,
            dest: Some(s.to_owned()),
            attrs: BTreeMap::new(),
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut attrs = BTreeMap::new();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("invalid field {field:?}: expected key=value"));
        };
        let key = key.trim().to_ascii_lowercase();
        match key.as_str() {
            "type" => kind = Some(value.to_owned()),
            "dest" => dest = Some(value.to_owned()),
            _ => {
                attrs.insert(key, value.to_owned());
            }
        }
    }
    let Some(kind) = kind else {
        return Err("type is required for output (format: type=local,dest=path)".into());
    };
    let kind = match kind.as_str() {
        "local" => OutputKind::Local,
        "tar" => OutputKind::Tar,
        "oci" => OutputKind::Oci,
        "docker" => OutputKind::Docker,
        "image" => OutputKind::Image,
        "registry" => {
            attrs.entry("push".into()).or_insert_with(|| "true".into());
            OutputKind::Image
        }
        "cacheonly" => OutputKind::CacheOnly,
        other => {
            return Err(format!(
                "unknown output type {other:?} (known: local, tar, oci, docker, image, registry, cacheonly)"
            ));
        }
    };
    if dest.as_deref() == Some("") {
        return Err("dest is empty".into());
    }
    if kind == OutputKind::Local && dest.is_none() {
        return Err("dest is required for the local output (type=local,dest=DIR)".into());
    }
    if kind == OutputKind::Local && dest.as_deref() == Some("-") {
        return Err(
            "the local output writes a directory; use type=tar,dest=- for standard output".into(),
        );
    }
    Ok(OutputSpec { kind, dest, attrs })
}

/// Where a secret's value comes from. The path or variable name is kept out of `Debug`
/// output (it can be as telling as the value), and the value is never read here.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(_) => f.write_str("File(<redacted>)"),
            SecretSource::Env(_) => f.write_str("Env(<redacted>)"),
        }
    }
}

/// One `--secret id=ID[,src=FILE|,env=VAR]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id RUN --mount=type=secret,id=... refers to.
    pub id: String,
    /// Where the value is read from at build time.
    pub source: SecretSource,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("id", &self.id)
            .field("source", &self.source)
            .finish()
    }
}

/// Parse `--secret` as buildx does: csv fields `id=`, `src=`/`source=`, `env=`,
/// `type=file|env` (with `type=env`, `src=` names the variable). With neither `src` nor
/// `env`, the variable named by the id is used when `env_has(id)`, else the file named
/// by the id. Error messages never repeat the values.
pub fn parse_secret_with(s: &str, env_has: impl Fn(&str) -> bool) -> Result<SecretSpec, String> {
    let fields = split_csv(s)?;
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut typ = None;
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(
                "every field must be a key=value pair (format: id=ID[,src=FILE|,env=VAR])".into(),
            );
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => match value {
                "file" | "env" => typ = Some(value.to_owned()),
                _ => return Err("unsupported secret type (known: file, env)".into()),
            },
            "id" => id = Some(value.to_owned()),
            "src" | "source" => src = Some(value.to_owned()),
            "env" => env = Some(value.to_owned()),
            other => {
                return Err(format!(
                    "unexpected key {other:?} (known: id, src, source, env, type)"
                ));
            }
        }
    }
    if typ.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let id = match id {
        Some(id) if !id.is_empty() => id,
        _ => return Err("the secret id is missing (format: id=ID[,src=FILE|,env=VAR])".into()),
    };
    let source = match (src, env) {
        (Some(_), Some(_)) => return Err("src and env cannot both be given".into()),
        (Some(src), None) if !src.is_empty() => SecretSource::File(PathBuf::from(src)),
        (None, Some(env)) if !env.is_empty() => SecretSource::Env(env),
        (None, None) if env_has(&id) => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(PathBuf::from(&id)),
        _ => return Err("the secret source is empty".into()),
    };
    Ok(SecretSpec { id, source })
}

/// clap value parser for `--secret`: its errors do not echo the argument (clap's
/// default message would), since a mistyped `--secret` can hold anything.
#[derive(Debug, Clone, Copy)]
pub struct SecretParser;

impl TypedValueParser for SecretParser {
    type Value = SecretSpec;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<SecretSpec, clap::Error> {
        let fail = |msg: String| {
            let mut cmd = cmd.clone();
            cmd.error(
                ErrorKind::ValueValidation,
                format!("invalid --secret: {msg}"),
            )
        };
        let value = value
            .to_str()
            .ok_or_else(|| fail("not valid UTF-8".into()))?;
        parse_secret_with(value, |k| std::env::var_os(k).is_some()).map_err(fail)
    }
}

/// One `--ssh default|ID[=SOCKET|KEY[,KEY]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    /// The id RUN --mount=type=ssh,id=... refers to (`default` when not given there).
    pub id: String,
    /// Agent sockets or key files; empty means the agent at `$SSH_AUTH_SOCK`.
    pub paths: Vec<PathBuf>,
}

/// Parse `--ssh`.
pub fn parse_ssh(s: &str) -> Result<SshSpec, String> {
    let (id, paths) = match s.split_once('=') {
        Some((id, paths)) => (id, Some(paths)),
        None => (s, None),
    };
    if id.is_empty() {
        return Err("the ssh id is empty (format: default|ID[=SOCKET|KEY[,KEY]])".into());
    }
    let paths = match paths {
        None => Vec::new(),
        Some(p) => {
            let paths: Vec<PathBuf> = p.split(',').map(PathBuf::from).collect();
            if paths.iter().any(|p| p.as_os_str().is_empty()) {
                return Err("empty path (format: default|ID[=SOCKET|KEY[,KEY]])".into());
            }
            paths
        }
    };
    Ok(SshSpec {
        id: id.to_owned(),
        paths,
    })
}

/// Top-level words that must not be taken for a build context by the shorthand.
const TOP_LEVEL_FLAGS: &[&str] = &["-h", "--help", "-V", "--version"];

/// Make `pybuild [GLOBAL] -t NAME PATH` mean `pybuild [GLOBAL] build -t NAME PATH`:
/// when the first argument after the global options is not a subcommand (nor
/// `--help`/`--version`), insert `build` before it. The subcommand names and the
/// global options come from the clap definition, so new subcommands need no change
/// here.
pub fn expand_shorthand(args: Vec<OsString>) -> Vec<OsString> {
    let mut cmd = Cli::command();
    cmd.build();
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .flat_map(|s| std::iter::once(s.get_name()).chain(s.get_all_aliases()))
        .map(str::to_owned)
        .collect();
    let mut longs_with_value = Vec::new();
    let mut shorts_with_value = Vec::new();
    for arg in cmd.get_arguments() {
        if arg.is_global_set() && arg.get_action().takes_values() {
            longs_with_value.extend(arg.get_long().map(str::to_owned));
            shorts_with_value.extend(arg.get_short());
        }
    }

    let mut i = 1;
    while i < args.len() {
        let Some(word) = args[i].to_str() else { break };
        if let Some(long) = word.strip_prefix("--") {
            let name = long.split_once('=').map_or(long, |(n, _)| n);
            if longs_with_value.iter().any(|l| l == name) {
                i += if long.contains('=') { 1 } else { 2 };
                continue;
            }
        } else if let Some(short) = word.strip_prefix('-') {
            let mut chars = short.chars();
            if chars.next().is_some_and(|c| shorts_with_value.contains(&c)) {
                i += if chars.as_str().is_empty() { 2 } else { 1 };
                continue;
            }
        }
        break;
    }
    let Some(word) = args.get(i) else {
        return args;
    };
    let word = word.to_string_lossy();
    if subcommands.iter().any(|s| *s == word) || TOP_LEVEL_FLAGS.contains(&word.as_ref()) {
        return args;
    }
    let mut args = args;
    args.insert(i, OsString::from("build"));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shorthand_inserts_build() {
        assert_eq!(
            expand_shorthand(os(&["pybuild", "-t", "x", "."])),
            os(&["pybuild", "build", "-t", "x", "."])
        );
        assert_eq!(
            expand_shorthand(os(&["pybuild", "."])),
            os(&["pybuild", "build", "."])
        );
        assert_eq!(
            expand_shorthand(os(&["pybuild", "--root", "/r", "-t", "x", "."])),
            os(&["pybuild", "--root", "/r", "build", "-t", "x", "."])
        );
        assert_eq!(
            expand_shorthand(os(&["pybuild", "--config=c", "dir"])),
            os(&["pybuild", "--config=c", "build", "dir"])
        );
        assert_eq!(
            expand_shorthand(os(&["pybuild", "-"])),
            os(&["pybuild", "build", "-"])
        );
    }

    #[test]
    fn shorthand_leaves_subcommands_and_help_alone() {
        for args in [
            &["pybuild", "build", "."][..],
            &["pybuild", "debug", "dump", "Dockerfile"],
            &["pybuild", "help"],
            &["pybuild", "--help"],
            &["pybuild", "-V"],
            &["pybuild", "--root", "/r", "build", "."],
            &["pybuild"],
            &["pybuild", "--root", "/r"],
            &["pybuild", "images"],
            &["pybuild", "--root", "/r", "inspect", "x"],
            &["pybuild", "tag", "a", "b"],
            &["pybuild", "rmi", "a"],
            &["pybuild", "save", "a", "-o", "f"],
            &["pybuild", "load", "-i", "f"],
            &["pybuild", "prune"],
            &["pybuild", "store", "verify"],
        ] {
            assert_eq!(expand_shorthand(os(args)), os(args), "{args:?}");
        }
    }

    #[test]
    fn shorthand_parses_as_build() {
        let cli = Cli::try_parse_from(expand_shorthand(os(&[
            "pybuild", "-t", "a:1", "-t", "b", "ctx",
        ])))
        .unwrap();
        let Command::Build(build) = cli.command else {
            panic!("not build: {:?}", cli.command)
        };
        assert_eq!(build.tags, ["a:1", "b"]);
        assert_eq!(build.context, PathBuf::from("ctx"));
    }

    #[test]
    fn csv_splitting() {
        assert_eq!(split_csv("a=1,b=2").unwrap(), ["a=1", "b=2"]);
        assert_eq!(split_csv("").unwrap(), [""]);
        assert_eq!(
            split_csv(r#"type=image,"name=a,b""#).unwrap(),
            ["type=image", "name=a,b"]
        );
        assert_eq!(split_csv(r#""x=""q""",y"#).unwrap(), [r#"x="q""#, "y"]);
        assert!(split_csv(r#"a="b""#).is_err());
        assert!(split_csv(r#""unclosed"#).is_err());
        assert!(split_csv(r#""a"b"#).is_err());
    }

    #[test]
    fn output_csv() {
        let o = parse_output("type=oci,dest=out.tar").unwrap();
        assert_eq!(o.kind, OutputKind::Oci);
        assert_eq!(o.dest.as_deref(), Some("out.tar"));
        assert!(o.attrs.is_empty());

        let o = parse_output(r#"type=image,"name=a:1,b:2",Push=true"#).unwrap();
        assert_eq!(o.kind, OutputKind::Image);
        assert_eq!(o.dest, None);
        assert_eq!(o.attrs["name"], "a:1,b:2");
        assert_eq!(o.attrs["push"], "true");

        let o = parse_output("type=registry,name=r/x").unwrap();
        assert_eq!(o.kind, OutputKind::Image);
        assert_eq!(o.attrs["push"], "true");
        let o = parse_output("type=registry,push=false").unwrap();
        assert_eq!(o.attrs["push"], "false");

        let o = parse_output("type=cacheonly").unwrap();
        assert_eq!(o.kind, OutputKind::CacheOnly);
    }

    #[test]
    fn output_shorthands() {
        let o = parse_output("out/dir").unwrap();
        assert_eq!(o.kind, OutputKind::Local);
        assert_eq!(o.dest.as_deref(), Some("out/dir"));
        let o = parse_output("-").unwrap();
        assert_eq!(o.kind, OutputKind::Tar);
        assert!(o.to_stdout());
        let o = parse_output("type=tar,dest=-").unwrap();
        assert!(o.to_stdout());
    }

    #[test]
    fn output_errors() {
        for bad in [
            "",
            "type=nope",
            "dest=x,compression=gzip",
            "type=local",
            "type=local,dest=-",
            "type=oci,dest=",
            "type=oci,justaword",
            r#"type=oci,dest="x"#,
        ] {
            assert!(parse_output(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn secret_csv() {
        let no_env = |_: &str| false;
        let s = parse_secret_with("id=x,src=/run/x", no_env).unwrap();
        assert_eq!(s.id, "x");
        assert_eq!(s.source, SecretSource::File("/run/x".into()));
        let s = parse_secret_with("id=x,source=f", no_env).unwrap();
        assert_eq!(s.source, SecretSource::File("f".into()));
        let s = parse_secret_with("id=tok,env=TOKEN", no_env).unwrap();
        assert_eq!(s.source, SecretSource::Env("TOKEN".into()));
        let s = parse_secret_with("type=env,id=tok,src=TOKEN", no_env).unwrap();
        assert_eq!(s.source, SecretSource::Env("TOKEN".into()));
        // Neither src nor env: the variable named like the id, else the file.
        let s = parse_secret_with("id=TOKEN", |k| k == "TOKEN").unwrap();
        assert_eq!(s.source, SecretSource::Env("TOKEN".into()));
        let s = parse_secret_with("id=TOKEN", no_env).unwrap();
        assert_eq!(s.source, SecretSource::File("TOKEN".into()));
    }

    #[test]
    fn secret_errors_do_not_echo_values() {
        let no_env = |_: &str| false;
        for bad in [
            "src=/hunter2",
            "id=x,src=/hunter2,env=HUNTER2",
            "id=x,hunter2",
            "id=x,type=hunter2",
            "id=,src=/hunter2",
        ] {
            let err = parse_secret_with(bad, no_env).unwrap_err();
            assert!(!err.to_lowercase().contains("hunter2"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = parse_secret_with("id=x,src=/nonexistent/hunter2", |_| false).unwrap();
        let debug = format!("{s:?} {s:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("\"x\""), "{debug}");
        let s = parse_secret_with("id=x,env=HUNTER2", |_| false).unwrap();
        assert!(!format!("{s:?}").contains("HUNTER2"));
    }

    #[test]
    fn build_arg_parsing() {
        assert_eq!(
            parse_build_arg("A=1").unwrap(),
            BuildArg {
                key: "A".into(),
                value: Some("1".into())
            }
        );
        assert_eq!(parse_build_arg("A=").unwrap().value.as_deref(), Some(""));
        assert_eq!(
            parse_build_arg("A=b=c").unwrap().value.as_deref(),
            Some("b=c")
        );
        assert_eq!(parse_build_arg("A").unwrap().value, None);
        assert!(parse_build_arg("=1").is_err());
        assert!(parse_build_arg("").is_err());
    }

    #[test]
    fn build_arg_resolution() {
        let args: Vec<BuildArg> = ["B=1", "FROM_ENV", "UNSET", "A=x", "B=2", "EMPTY="]
            .iter()
            .map(|s| parse_build_arg(s).unwrap())
            .collect();
        let (pairs, unset) =
            resolve_build_args(&args, |k| (k == "FROM_ENV").then(|| "env value".to_owned()));
        let expected: Vec<(String, String)> = [
            ("B", "2"),
            ("FROM_ENV", "env value"),
            ("A", "x"),
            ("EMPTY", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, expected);
        assert_eq!(unset, ["UNSET"]);
    }

    #[test]
    fn labels_platforms_ssh() {
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_label("a").unwrap(), ("a".into(), String::new()));
        assert!(parse_label("=x").is_err());

        assert_eq!(parse_platform("linux/arm64/v8").unwrap(), "linux/arm64/v8");
        assert_eq!(parse_platform("Linux/AMD64").unwrap(), "linux/amd64");
        assert!(parse_platform("").is_err());
        assert!(parse_platform("linux//amd64").is_err());
        assert!(parse_platform("a/b/c/d").is_err());

        assert_eq!(
            parse_ssh("default").unwrap(),
            SshSpec {
                id: "default".into(),
                paths: vec![]
            }
        );
        assert_eq!(
            parse_ssh("gh=/k1,/k2").unwrap().paths,
            [PathBuf::from("/k1"), PathBuf::from("/k2")]
        );
        assert!(parse_ssh("=x").is_err());
        assert!(parse_ssh("id=a,,b").is_err());
    }

    #[test]
    fn platform_lists_split_on_commas() {
        let cli = Cli::try_parse_from([
            "pybuild",
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--platform=linux/riscv64",
            ".",
        ])
        .unwrap();
        let Command::Build(b) = cli.command else {
            panic!()
        };
        assert_eq!(b.platforms, ["linux/amd64", "linux/arm64", "linux/riscv64"]);
    }

    #[test]
    fn tags() {
        for good in [
            "x",
            "x:1",
            "library/alpine:3.19",
            "registry.example.com:5000/team/app:v1.2-rc_3",
            "localhost/app",
            "a__b/c-d--e.f",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse_tag(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in [
            "",
            "X",
            "app:",
            "app:-x",
            "-app",
            "app/",
            "a b",
            "app@sha256:xyz",
            "a...b",
        ] {
            assert!(parse_tag(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_tag("MyApp").unwrap_err().contains("lowercase"));
    }
}
