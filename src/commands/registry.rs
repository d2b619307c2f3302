//! `pybuild pull`, `push`, `login` and `logout`: one library call each.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Read};

use anyhow::Context as _;

use crate::cli::{GlobalArgs, LoginArgs, LogoutArgs, PullArgs, PushArgs};
use crate::report::CliError;

/// `pybuild pull NAME`.
pub fn run_pull(args: &PullArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let platform = match &args.platform {
        Some(p) => super::debug_graph::parse_platform(p)?.to_oci(),
        None => pybuild::store::host_platform(),
    };
    let (local, desc) = pybuild::registry::pull(
        &store,
        &super::registry_settings(global),
        &args.name,
        &platform,
        &pybuild::registry::NoProgress,
    )?;
    if args.quiet {
        println!("{}", desc.digest);
    } else {
        eprintln!("Digest: {}", desc.digest);
        println!("{local}");
    }
    Ok(())
}

/// `pybuild push NAME [DEST]`.
pub fn run_push(args: &PushArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let store = super::open_store(global)?;
    let (name, result) = pybuild::registry::push(
        &store,
        &super::registry_settings(global),
        &args.name,
        args.dest.as_deref(),
        &pybuild::registry::NoProgress,
    )?;
    if args.quiet {
        println!("{}", result.digest);
    } else {
        eprintln!(
            "pushed {name}: {} blob(s) uploaded, {} already there, {} mounted",
            result.uploaded, result.skipped, result.mounted
        );
        println!("{}", result.digest);
    }
    Ok(())
}

/// `pybuild login REGISTRY`.
pub fn run_login(args: &LoginArgs) -> anyhow::Result<()> {
    let username = args
        .username
        .clone()
        .ok_or_else(|| CliError::new("a user name is needed").hint("pass -u USER"))?;
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut stdin = std::io::stdin().lock();
            if stdin.is_terminal() {
                crate::report::warn(
                    "reading the password from standard input (end it with Ctrl-D)",
                );
            }
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .context("cannot read the password from standard input")?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => {
            return Err(CliError::new("a password is needed")
                .hint("pipe it in with --password-stdin")
                .into());
        }
    };
    let file = pybuild::registry::login(&args.registry, &username, &password)?;
    eprintln!(
        "credentials for {} saved in {}",
        args.registry,
        file.display()
    );
    Ok(())
}

/// `pybuild logout REGISTRY`.
pub fn run_logout(args: &LogoutArgs) -> anyhow::Result<()> {
    if pybuild::registry::logout(&args.registry)? {
        eprintln!("removed the credentials for {}", args.registry);
    } else {
        eprintln!("not logged in to {}", args.registry);
    }
    Ok(())
}
