//! Embedding pybuild: build a context directory from Rust, printing the progress
//! events as they come.
//!
//! ```sh
//! cargo run -p pybuild --example embed -- CONTEXT STORE_DIR [TAG] [--registry-mirror HOST=MIRROR]
//! ```
//!
//! CI runs it on the busybox fixture (see `.ci/run`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use pybuild::build::Event;

fn main() -> ExitCode {
    // RUN steps re-execute this program as their sandbox's init: hand over first.
    pybuild::sandbox_init_if_requested();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(context), Some(root)) = (args.first(), args.get(1)) else {
        eprintln!("usage: embed CONTEXT STORE_DIR [TAG] [--registry-mirror HOST=MIRROR]");
        return ExitCode::from(2);
    };
    let tag = args.get(2).filter(|a| !a.starts_with("--")).cloned();
    let mut builder = pybuild::Builder::new(context)
        .root(root)
        .on_event(|event| match event {
            Event::StepStarted { name, .. } => println!("step   {name}"),
            Event::StepCached { id } => println!("cached #{id}"),
            Event::StepFinished { id } => println!("done   #{id}"),
            Event::StepOutput { line, .. } => println!("       {line}"),
            other => println!("event  {other:?}"),
        });
    if let Some(tag) = tag {
        builder = builder.tag(tag);
    }
    if let Some(pos) = args.iter().position(|a| a == "--registry-mirror")
        && let Some((host, mirror)) = args.get(pos + 1).and_then(|m| m.split_once('='))
    {
        builder = builder.registry_mirror(host, mirror);
    }
    match builder.build() {
        Ok(built) => {
            println!("image {}", built.image_id);
            println!("manifest {}", built.manifest.digest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::FAILURE
        }
    }
}
