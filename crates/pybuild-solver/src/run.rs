//! RUN: a command executed in the sandbox on top of the stage's snapshots, its
//! overlay upper directory becoming the step's layer.
//!
//! BuildKit's rules, as `dockerfile2llb` applies them:
//! - shell form runs through the stage's SHELL (`/bin/sh -c`), exec form as is;
//! - `RUN <<EOF` alone: the heredoc is the script, executed directly when it starts
//!   with `#!`, else fed to the shell on standard input; heredocs elsewhere in the
//!   command are left to the shell, which gets the full text with their bodies;
//! - the environment is the image's ENV plus the build args in scope that ENV does
//!   not shadow, plus proxy args given with `--build-arg`;
//! - USER and WORKDIR apply; the working directory is created if missing.
//!
//! The cache key holds everything the command can see: its argv, environment,
//! working directory, user, network mode, mount definitions (with the content
//! checksum of what bind mounts expose) and stdin. Secrets never enter it.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use pybuild_dockerfile::Heredoc;
use pybuild_dockerfile::instructions::{
    CacheSharing, Command, MountType, NetworkMode, Security, parse_mount,
};
use pybuild_graph::{Stage, Step};
use pybuild_oci::Digest;
use pybuild_sandbox::{Mount as SandboxMount, Network, Output, RunSpec};
use serde_json::json;

use crate::config::DEFAULT_SHELL;
use crate::{Error, Event, Result, Solver, State, first_line, key_of, rootfs, user};

/// How many lines of output a failed RUN's error message repeats.
const ERROR_TAIL_LINES: usize = 10;

/// `/etc/hosts` during a step (the image's own file is shadowed, never changed).
const HOSTS: &str = "127.0.0.1\tlocalhost pybuild\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The host name commands see (BuildKit uses `buildkitsandbox`).
pub(crate) const HOSTNAME: &str = "pybuild";

/// One `--mount`, resolved to something the sandbox can mount, plus its key part.
struct Resolved {
    mount: Option<SandboxMount>,
    key: serde_json::Value,
    env: Vec<String>,
    /// Held for the step's duration (locked cache mounts, temporary copies).
    _guard: Option<Box<dyn std::any::Any>>,
}

impl Solver<'_> {
    /// Run one RUN step. Returns whether it came from the cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &mut self,
        stage: &Stage,
        step: &Step,
        command: &Command,
        mounts: &[pybuild_dockerfile::Spanned<String>],
        network: Option<NetworkMode>,
        security: Option<Security>,
        heredocs: &[Heredoc],
        state: &mut State,
        use_cache: bool,
        step_id: Option<usize>,
    ) -> Result<bool> {
        let instr = &step.instruction;
        let err = |message: String| Error::Step {
            instruction: first_line(&instr.original),
            span: instr.span,
            message,
            hint: None,
        };
        let Some(sandbox) = self.sandbox else {
            return Err(err("RUN needs a sandbox, and this build has none".into()));
        };
        if security == Some(Security::Insecure) {
            return Err(Error::Step {
                instruction: first_line(&instr.original),
                span: instr.span,
                message: "--security=insecure needs the security.insecure entitlement".into(),
                hint: Some("pybuild does not grant it: run the step without it".into()),
            });
        }
        let config = &state.config.config;
        let shell: Vec<String> = if config.shell.is_empty() {
            DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            config.shell.clone()
        };

        // The command line and what goes to stdin.
        let (args, stdin, script) = match command {
            Command::Exec(args) => (args.clone(), None, None),
            Command::Shell(text) => {
                let trimmed = text.trim();
                let only_heredoc = heredocs.len() == 1
                    && trimmed
                        .strip_prefix("<<")
                        .map(|r| r.trim_start_matches('-').trim_matches(['"', '\'']))
                        == Some(heredocs[0].name.as_str());
                if only_heredoc {
                    let body = heredocs[0].content.clone();
                    if body.starts_with("#!") {
                        // Executed as a script: written into the sandbox, run directly.
                        (Vec::new(), None, Some(body))
                    } else {
                        // Piped to the shell: its first word, no `-c`.
                        (vec![shell[0].clone()], Some(body.into_bytes()), None)
                    }
                } else {
                    let mut full = text.clone();
                    for doc in heredocs {
                        full.push('\n');
                        full.push_str(&doc.content);
                        full.push_str(&doc.name);
                    }
                    let mut args = shell.clone();
                    args.push(full);
                    (args, None, None)
                }
            }
        };

        // Environment: args in scope that ENV does not shadow, proxy args, then ENV.
        let env_pairs = config.env_pairs();
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in step.args.iter().chain(&step.proxy_env) {
            if !env_pairs.iter().any(|(ek, _)| ek == k) {
                env.retain(|(ek, _)| ek != k);
                env.push((k.clone(), v.clone()));
            }
        }
        env.extend(env_pairs);

        let tree = state.tree(self.store);
        let cwd = config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".to_string());
        let (owner, groups) = user::resolve_user(config.user.as_deref().unwrap_or(""), &tree)
            .map_err(|e| err(e.to_string()))?;
        let network = match network {
            Some(NetworkMode::None) => Network::None,
            _ => Network::Host,
        };

        // Mounts.
        let mut resolved = Vec::new();
        for m in mounts {
            let mount = parse_mount(&m.value).map_err(|e| Error::Step {
                instruction: first_line(&instr.original),
                span: m.span,
                message: format!("--mount={}: {e}", m.value),
                hint: None,
            })?;
            resolved.push(self.resolve_mount(stage, step, &mount, &cwd, &m.value)?);
        }

        let script_path = "/dev/pipes/script";
        let mut args = args;
        if script.is_some() {
            args = vec![script_path.to_string()];
        }
        let key = key_of(
            &state.key,
            json!({
                "op": "run",
                "args": args,
                "script": script.as_ref().map(|s| Digest::of(s.as_bytes())),
                "stdin": stdin.as_ref().map(|s| Digest::of(s)),
                "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "cwd": cwd,
                "uid": owner.uid,
                "gid": owner.gid,
                "groups": groups,
                "network": matches!(network, Network::None).then_some("none"),
                "mounts": resolved.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
                "layer": self.layer_settings(),
            }),
        );
        let created_by = format!("RUN {} # buildkit", args.join(" "));
        if use_cache && let Some((layer, created)) = self.cached(&key)? {
            state.created = Some(self.created_time(created));
            let empty = layer.is_none();
            if let Some(layer) = layer {
                state.layers.push(layer);
            }
            state.key = key;
            self.history(state, created_by, empty);
            return Ok(true);
        }

        let upper = self.store.temp_dir()?;
        let work = self.store.temp_dir()?;
        let mut spec_mounts: Vec<SandboxMount> = Vec::new();
        let mut run_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for r in &resolved {
            spec_mounts.extend(r.mount.clone());
            run_env.extend(r.env.iter().cloned());
        }
        // A `#!` heredoc: the script lives in a private directory bound read-only.
        let script_dir = match &script {
            Some(body) => {
                let dir = tempfile::Builder::new()
                    .prefix("pybuild-script-")
                    .tempdir()
                    .map_err(|e| err(format!("cannot write the heredoc script: {e}")))?;
                let file = dir.path().join("script");
                let mut f = fs::File::create(&file)
                    .map_err(|e| err(format!("cannot write the heredoc script: {e}")))?;
                f.write_all(body.as_bytes())
                    .map_err(|e| err(format!("cannot write the heredoc script: {e}")))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o755))
                    .map_err(|e| err(format!("cannot write the heredoc script: {e}")))?;
                spec_mounts.push(SandboxMount::Bind {
                    source: dir.path().to_path_buf(),
                    target: "/dev/pipes".into(),
                    readonly: true,
                });
                Some(dir)
            }
            None => None,
        };
        let resolv = Path::new("/etc/resolv.conf");
        let spec = RunSpec {
            lower_dirs: tree.layers().to_vec(),
            upper_dir: upper.path().to_path_buf(),
            work_dir: work.path().to_path_buf(),
            args: args.clone(),
            env: run_env,
            cwd: cwd.clone(),
            uid: owner.uid,
            gid: owner.gid,
            additional_gids: groups.clone(),
            hostname: HOSTNAME.into(),
            network,
            mounts: spec_mounts,
            stdin,
            resolv_conf: (network == Network::Host && resolv.exists())
                .then(|| resolv.to_path_buf()),
            hosts: Some(HOSTS.as_bytes().to_vec()),
            cancel: self.cancel.clone().unwrap_or_default(),
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let progress = self.progress;
        let status = sandbox.run(&spec, &mut |out| {
            let (stream, bytes) = match out {
                Output::Stdout(b) => (1, b),
                Output::Stderr(b) => (2, b),
            };
            let line = String::from_utf8_lossy(bytes)
                .trim_end_matches('\n')
                .to_string();
            if tail.len() == ERROR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            if let Some(id) = step_id {
                progress.event(&Event::StepOutput { id, stream, line });
            }
        });
        drop(script_dir);
        drop(resolved);
        let status = status.map_err(|e| Error::Step {
            instruction: first_line(&instr.original),
            span: instr.span,
            message: format!("RUN could not be executed: {e}"),
            hint: e.exit_code().map(|code| format!("exit status {code}")),
        })?;
        if !status.success() {
            let mut message = format!(
                "process {:?} did not complete successfully: exit code: {}",
                args.join(" "),
                status.code()
            );
            if !tail.is_empty() {
                message.push_str("\nlast lines of output:");
                for line in &tail {
                    message.push_str("\n  ");
                    message.push_str(line);
                }
            }
            return Err(Error::Step {
                instruction: first_line(&instr.original),
                span: instr.span,
                message,
                hint: None,
            });
        }
        drop(work);
        let empty = fs::read_dir(upper.path())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let layer = if empty {
            self.record_empty(&key)?;
            None
        } else {
            Some(self.commit(upper, &key)?)
        };
        if let Some(layer) = layer {
            state.layers.push(layer);
        }
        state.key = key;
        state.created = Some(self.now);
        self.history(state, created_by, empty);
        Ok(false)
    }

    /// Find a stage by `--from` name or index.
    fn stage_named(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.graph
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.graph.stages.len())
            })
    }

    fn resolve_mount(
        &mut self,
        stage: &Stage,
        step: &Step,
        mount: &pybuild_dockerfile::instructions::Mount,
        cwd: &str,
        text: &str,
    ) -> Result<Resolved> {
        let instr = &step.instruction;
        let err = |message: String| Error::Step {
            instruction: first_line(&instr.original),
            span: instr.span,
            message: format!("--mount={text}: {message}"),
            hint: None,
        };
        let target = mount.target.clone().map(|t| {
            if t.starts_with('/') {
                t
            } else {
                format!("{}/{t}", cwd.trim_end_matches('/'))
            }
        });
        match mount.kind {
            MountType::Tmpfs => {
                let target = target.ok_or_else(|| err("target is required".into()))?;
                Ok(Resolved {
                    key: json!({"type": "tmpfs", "target": target, "size": mount.size}),
                    mount: Some(SandboxMount::Tmpfs {
                        target,
                        size: mount.size,
                    }),
                    env: Vec::new(),
                    _guard: None,
                })
            }
            MountType::Cache => {
                let target = target.ok_or_else(|| err("target is required".into()))?;
                if mount.from.is_some() {
                    return Err(err(
                        "cache mounts seeded from= another image or stage are not supported yet"
                            .into(),
                    ));
                }
                let id = mount.id.clone().unwrap_or_else(|| target.clone());
                let dir = self
                    .store
                    .cache_mounts_dir()
                    .join(Digest::of(id.as_bytes()).hex());
                let fresh = !dir.exists();
                fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
                if fresh {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(
                        &dir,
                        fs::Permissions::from_mode(mount.mode.unwrap_or(0o755)),
                    )
                    .map_err(|e| err(e.to_string()))?;
                    std::os::unix::fs::chown(
                        &dir,
                        Some(mount.uid.unwrap_or(0)),
                        Some(mount.gid.unwrap_or(0)),
                    )
                    .map_err(|e| err(e.to_string()))?;
                }
                let mut guard: Option<Box<dyn std::any::Any>> = None;
                let source = match mount.sharing {
                    CacheSharing::Shared => dir,
                    CacheSharing::Locked => {
                        let lock = fs::File::create(dir.with_extension("lock"))
                            .map_err(|e| err(e.to_string()))?;
                        fs4::fs_std::FileExt::lock_exclusive(&lock)
                            .map_err(|e| err(e.to_string()))?;
                        guard = Some(Box::new(lock));
                        dir
                    }
                    CacheSharing::Private => {
                        // A scratch copy for this step only.
                        let tmp = self.store.temp_dir()?;
                        let path = tmp.path().to_path_buf();
                        guard = Some(Box::new(tmp));
                        path
                    }
                };
                Ok(Resolved {
                    // The cache's content is deliberately not in the key: it is a
                    // cache, and steps must not depend on what it holds.
                    key: json!({"type": "cache", "target": target, "id": id,
                                "sharing": format!("{:?}", mount.sharing), "ro": mount.read_only}),
                    mount: Some(SandboxMount::Bind {
                        source,
                        target,
                        readonly: mount.read_only,
                    }),
                    env: Vec::new(),
                    _guard: guard,
                })
            }
            MountType::Secret => {
                let id = mount
                    .id
                    .clone()
                    .ok_or_else(|| err("a secret mount needs id=".into()))?;
                let Some(value) = self.options.secrets.get(&id) else {
                    if mount.required {
                        return Err(err(format!(
                            "secret {id:?} is required but was not given (--secret id={id},src=FILE)"
                        )));
                    }
                    return Ok(Resolved {
                        key: json!({"type": "secret", "id": id, "target": target}),
                        mount: None,
                        env: Vec::new(),
                        _guard: None,
                    });
                };
                let value = value
                    .read()
                    .map_err(|e| err(format!("secret {id:?}: {e}")))?;
                let mut env = Vec::new();
                if let Some(var) = &mount.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                }
                // The file lives on a tmpfs where there is one, outside the store, and
                // is gone when the step ends.
                let mut guard = None;
                let mut mount_spec = None;
                if mount.env.is_none() || mount.target.is_some() {
                    let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                    let base = if Path::new("/dev/shm").is_dir() {
                        PathBuf::from("/dev/shm")
                    } else {
                        std::env::temp_dir()
                    };
                    let dir = tempfile::Builder::new()
                        .prefix("pybuild-secret-")
                        .tempdir_in(base)
                        .map_err(|e| err(e.to_string()))?;
                    let file = dir.path().join("secret");
                    fs::write(&file, &value).map_err(|e| err(e.to_string()))?;
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(
                        &file,
                        fs::Permissions::from_mode(mount.mode.unwrap_or(0o400)),
                    )
                    .map_err(|e| err(e.to_string()))?;
                    std::os::unix::fs::chown(
                        &file,
                        Some(mount.uid.unwrap_or(0)),
                        Some(mount.gid.unwrap_or(0)),
                    )
                    .map_err(|e| err(e.to_string()))?;
                    mount_spec = Some(SandboxMount::Bind {
                        source: file,
                        target,
                        readonly: true,
                    });
                    guard = Some(Box::new(dir) as Box<dyn std::any::Any>);
                }
                Ok(Resolved {
                    // The id and where it appears, never the value.
                    key: json!({"type": "secret", "id": id, "target": mount.target, "env": mount.env}),
                    mount: mount_spec,
                    env,
                    _guard: guard,
                })
            }
            MountType::Ssh => {
                let target = target.unwrap_or_else(|| "/run/buildkit/ssh_agent.0".into());
                let Some(sock) = self.options.ssh_agent.clone() else {
                    if mount.required {
                        return Err(err("an SSH agent is required (--ssh default)".into()));
                    }
                    return Ok(Resolved {
                        key: json!({"type": "ssh", "target": target}),
                        mount: None,
                        env: Vec::new(),
                        _guard: None,
                    });
                };
                Ok(Resolved {
                    key: json!({"type": "ssh", "target": target}),
                    mount: Some(SandboxMount::Bind {
                        source: sock,
                        target: target.clone(),
                        readonly: false,
                    }),
                    env: vec![format!("SSH_AUTH_SOCK={target}")],
                    _guard: None,
                })
            }
            MountType::Bind => {
                let target = target.ok_or_else(|| err("target is required".into()))?;
                let source = mount.source.clone().unwrap_or_else(|| "/".into());
                let (dir, content): (PathBuf, serde_json::Value) = match mount.from.as_deref() {
                    None | Some("") => {
                        // The build context: its checksum goes into the key.
                        let exclude = pybuild_context::PatternMatcher::new::<&str>(&[])
                            .map_err(|e| err(e.to_string()))?;
                        let matches = self
                            .context
                            .resolve(&source)
                            .map_err(|e| err(e.to_string()))?;
                        let mut listing = Vec::new();
                        for m in &matches {
                            for e in self
                                .context
                                .walk(m, &exclude)
                                .map_err(|e| err(e.to_string()))?
                            {
                                let what = match &e.kind {
                                    pybuild_context::EntryKind::File { digest, .. } => {
                                        json!(digest)
                                    }
                                    pybuild_context::EntryKind::Symlink { target } => {
                                        json!({"symlink": target})
                                    }
                                    pybuild_context::EntryKind::Dir => json!("dir"),
                                    _ => json!("other"),
                                };
                                listing.push(json!([e.rel_path, e.mode, what]));
                            }
                        }
                        let path = match matches.first() {
                            Some(m) => self.context.root().join(&m.rel_path),
                            None => {
                                return Err(err(format!(
                                    "{source}: not found in the build context"
                                )));
                            }
                        };
                        (
                            path,
                            json!({"context": Digest::of(&pybuild_oci::canonical_json(&listing))}),
                        )
                    }
                    Some(from) => {
                        let state = match self.stage_named(from) {
                            Some(i) => self.states[i]
                                .clone()
                                .ok_or_else(|| err(format!("stage {from} is not built")))?,
                            None => self.base_image(from, stage)?,
                        };
                        // The stage's merged tree at `source`, copied out read-only: its
                        // key identifies the content.
                        let copy = self.store.temp_dir()?;
                        let tree = state.tree(self.store);
                        let path = materialize(&tree, &source, copy.path())
                            .map_err(|e| err(format!("{source} in {from}: {e}")))?;
                        let key = json!({"from": state.key, "source": source});
                        return Ok(Resolved {
                            key: json!({"type": "bind", "target": target, "content": key, "rw": !mount.read_only}),
                            mount: Some(SandboxMount::Bind {
                                source: path,
                                target,
                                // Writes land in the scratch copy and are discarded.
                                readonly: mount.read_only,
                            }),
                            env: Vec::new(),
                            _guard: Some(Box::new(copy)),
                        });
                    }
                };
                let mut guard: Option<Box<dyn std::any::Any>> = None;
                let source_dir = if mount.read_only {
                    dir
                } else {
                    // rw: the command may write, the writes are discarded; never into
                    // the user's context.
                    let copy = self.store.temp_dir()?;
                    let tree = rootfs::LowerTree::new(vec![dir.clone()]);
                    let path =
                        materialize(&tree, "/", copy.path()).map_err(|e| err(e.to_string()))?;
                    guard = Some(Box::new(copy));
                    path
                };
                Ok(Resolved {
                    key: json!({"type": "bind", "target": target, "content": content, "rw": !mount.read_only}),
                    mount: Some(SandboxMount::Bind {
                        source: source_dir,
                        target,
                        readonly: mount.read_only,
                    }),
                    env: Vec::new(),
                    _guard: guard,
                })
            }
        }
    }
}

/// Copy the merged tree under `path` into `dest` (an existing empty directory), with
/// modes, owners and symlinks. Returns what to mount: `dest` for a directory, the
/// copy inside `dest` for anything else (a bind mount's source may be a single file).
fn materialize(tree: &rootfs::LowerTree, path: &str, dest: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
    let entries = tree.walk(path)?;
    let root = match entries.first() {
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found",
            ));
        }
        Some(e) if e.meta.is_dir() => dest.to_path_buf(),
        Some(_) => dest.join("file"),
    };
    for e in entries {
        let out = if e.rel_path.is_empty() {
            root.clone()
        } else {
            dest.join(&e.rel_path)
        };
        let ft = e.meta.file_type();
        if ft.is_dir() {
            if !e.rel_path.is_empty() {
                fs::create_dir(&out)?;
            }
        } else if ft.is_symlink() {
            symlink(fs::read_link(&e.path)?, &out)?;
        } else if ft.is_file() {
            fs::copy(&e.path, &out)?;
        } else {
            continue;
        }
        lchown(&out, Some(e.meta.uid()), Some(e.meta.gid()))?;
        if !ft.is_symlink() {
            fs::set_permissions(&out, fs::Permissions::from_mode(e.meta.mode() & 0o7777))?;
        }
    }
    Ok(root)
}
