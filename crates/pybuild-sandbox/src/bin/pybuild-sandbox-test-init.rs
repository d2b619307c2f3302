//! The sandbox init for this crate's integration tests: what a program embedding
//! pybuild does first thing in `main`.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if pybuild_sandbox::is_init_invocation(&args) {
        pybuild_sandbox::init_main();
    }
    std::process::exit(2);
}
