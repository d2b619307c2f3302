//! Metadata instructions: how ENV, LABEL, USER, CMD, ENTRYPOINT, EXPOSE, VOLUME,
//! SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD and MAINTAINER change the image config,
//! and what history line each leaves, following BuildKit's `dockerfile2llb`.

use std::time::Duration;

use pybuild_dockerfile::instructions::{Command, Healthcheck, Kind};
use pybuild_oci::{Config, Empty, HealthConfig};

/// The shell BuildKit uses when the Dockerfile sets none (Linux).
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The `PATH` BuildKit gives a Linux image that has none (`FROM scratch`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the stage has set so far, where BuildKit's rules depend on it.
#[derive(Debug, Clone, Default)]
pub struct StageFlags {
    /// A CMD was given in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

/// The command line a CMD/ENTRYPOINT/HEALTHCHECK runs: exec form as is, shell form
/// prefixed with the stage's SHELL.
pub fn command_line(cmd: &Command, config: &Config) -> Vec<String> {
    match cmd {
        Command::Exec(args) => args.clone(),
        Command::Shell(text) => {
            let mut out: Vec<String> = if config.shell.is_empty() {
                DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
            } else {
                config.shell.clone()
            };
            out.push(text.clone());
            out
        }
    }
}

/// Go's `%q` of a string slice, as BuildKit's history lines show command lists
/// (`CMD ["python" "app.py"]`).
fn go_quoted_list(items: &[String]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", parts.join(" "))
}

/// Go's `%v` of a string slice: `[a b]`, no quotes. BuildKit writes VOLUME and SHELL
/// history lines with it (`fmt.Sprintf("VOLUME %v", c.Volumes)` in dockerfile2llb's
/// `dispatchVolume`, likewise `dispatchShell`), unlike CMD/ENTRYPOINT which use `%q`.
fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

fn nanos(d: Duration) -> Option<i64> {
    (!d.is_zero()).then(|| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Apply one expanded metadata instruction to `config`. Returns the history line
/// (`created_by`) BuildKit records for it, or `None` for instructions that leave no
/// history (ARG). `original` is the instruction as written, for ONBUILD.
pub fn apply(kind: &Kind, config: &mut Config, flags: &mut StageFlags) -> Option<String> {
    match kind {
        Kind::Env(pairs) => {
            let mut parts = Vec::new();
            for kv in pairs {
                config.set_env(&kv.key.value, &kv.value.value);
                parts.push(format!("{}={}", kv.key.value, kv.value.value));
            }
            Some(format!("ENV {}", parts.join(" ")))
        }
        Kind::Label(pairs) => {
            let mut parts = Vec::new();
            for kv in pairs {
                config
                    .labels
                    .insert(kv.key.value.clone(), kv.value.value.clone());
                parts.push(format!("{}={}", kv.key.value, kv.value.value));
            }
            Some(format!("LABEL {}", parts.join(" ")))
        }
        Kind::User(user) => {
            config.user = Some(user.value.clone());
            Some(format!("USER {}", user.value))
        }
        Kind::Cmd(cmd) => {
            let line = command_line(cmd, config);
            let shown = go_quoted_list(&line);
            config.cmd = Some(line);
            flags.cmd_set = true;
            Some(format!("CMD {shown}"))
        }
        Kind::Entrypoint(cmd) => {
            let line = command_line(cmd, config);
            let shown = go_quoted_list(&line);
            config.entrypoint = Some(line);
            // BuildKit: an ENTRYPOINT drops a CMD inherited from the base image, but
            // keeps one set earlier in this stage.
            if !flags.cmd_set {
                config.cmd = None;
            }
            Some(format!("ENTRYPOINT {shown}"))
        }
        Kind::Expose(ports) => {
            let mut shown = Vec::new();
            for port in ports {
                for p in expand_ports(&port.value) {
                    config.exposed_ports.insert(p.clone(), Empty {});
                    shown.push(p);
                }
            }
            Some(format!("EXPOSE map[{}]", {
                let mut s: Vec<String> = shown.iter().map(|p| format!("{p}:{{}}")).collect();
                s.sort();
                s.join(" ")
            }))
        }
        Kind::Volume(paths) => {
            for p in paths {
                config.volumes.insert(p.value.clone(), Empty {});
            }
            let list: Vec<String> = paths.iter().map(|p| p.value.clone()).collect();
            Some(format!("VOLUME {}", go_plain_list(&list)))
        }
        Kind::Shell(shell) => {
            config.shell = shell.clone();
            Some(format!("SHELL {}", go_plain_list(shell)))
        }
        Kind::StopSignal(sig) => {
            config.stop_signal = Some(sig.value.clone());
            Some(format!("STOPSIGNAL {}", sig.value))
        }
        Kind::Healthcheck(check) => {
            let hc = match check {
                Healthcheck::None => HealthConfig {
                    test: vec!["NONE".to_string()],
                    ..HealthConfig::default()
                },
                Healthcheck::Check {
                    command,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => {
                    let mut test = match command {
                        Command::Exec(args) => {
                            let mut t = vec!["CMD".to_string()];
                            t.extend(args.iter().cloned());
                            t
                        }
                        Command::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
                    };
                    test.shrink_to_fit();
                    HealthConfig {
                        test,
                        interval: nanos(*interval),
                        timeout: nanos(*timeout),
                        start_period: nanos(*start_period),
                        start_interval: nanos(*start_interval),
                        retries: (*retries != 0).then_some(i64::from(*retries)),
                    }
                }
            };
            let shown = go_quoted_list(&hc.test);
            config.healthcheck = Some(hc);
            Some(format!("HEALTHCHECK &{{{shown} ...}}"))
        }
        Kind::Onbuild(trigger) => {
            // Stored only: BuildKit's `dispatchOnbuild` appends to Config.OnBuild and
            // writes no history entry.
            config.on_build.push(trigger.original.clone());
            None
        }
        Kind::Maintainer(_) => Some("MAINTAINER".to_string()),
        _ => None,
    }
}

/// `EXPOSE` port specs: `80` means `80/tcp`, protocols lower-cased, ranges
/// (`8000-8002/udp`) expanded, as docker's `nat.ParsePortSpecs` does.
pub fn expand_ports(spec: &str) -> Vec<String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if let Some((lo, hi)) = ports.split_once('-')
        && let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>())
        && lo <= hi
        && hi - lo < 65536
    {
        return (lo..=hi).map(|p| format!("{p}/{proto}")).collect();
    }
    vec![format!("{ports}/{proto}")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use pybuild_dockerfile::{Span, Spanned};

    #[test]
    fn ports() {
        assert_eq!(expand_ports("80"), ["80/tcp"]);
        assert_eq!(expand_ports("53/UDP"), ["53/udp"]);
        assert_eq!(
            expand_ports("8000-8002"),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
    }

    #[test]
    fn history_lines_use_buildkit_formats() {
        let mut config = Config::default();
        let mut flags = StageFlags::default();
        let volume = Kind::Volume(vec![
            Spanned::new("/data".to_string(), Span::default()),
            Spanned::new("/cache".to_string(), Span::default()),
        ]);
        assert_eq!(
            apply(&volume, &mut config, &mut flags).as_deref(),
            Some("VOLUME [/data /cache]")
        );
        let shell = Kind::Shell(vec!["/bin/ash".into(), "-c".into()]);
        assert_eq!(
            apply(&shell, &mut config, &mut flags).as_deref(),
            Some("SHELL [/bin/ash -c]")
        );
        let cmd = Kind::Cmd(Command::Exec(vec!["a b".into(), "c".into()]));
        assert_eq!(
            apply(&cmd, &mut config, &mut flags).as_deref(),
            Some(r#"CMD ["a b" "c"]"#)
        );
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_only() {
        let mut config = Config {
            cmd: Some(vec!["inherited".into()]),
            ..Config::default()
        };
        let mut flags = StageFlags::default();
        apply(
            &Kind::Entrypoint(Command::Exec(vec!["/ep".into()])),
            &mut config,
            &mut flags,
        );
        assert_eq!(config.cmd, None);
        apply(
            &Kind::Cmd(Command::Exec(vec!["x".into()])),
            &mut config,
            &mut flags,
        );
        apply(
            &Kind::Entrypoint(Command::Shell("run".into())),
            &mut config,
            &mut flags,
        );
        assert_eq!(config.cmd, Some(vec!["x".to_string()]));
        assert_eq!(
            config.entrypoint,
            Some(vec!["/bin/sh".to_string(), "-c".into(), "run".into()])
        );
    }
}
