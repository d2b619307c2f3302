//! kill -9 at random points of a build, a pull and a push, N times each
//! (`PYBUILD_ROBUST_ITERATIONS`, default 20). After every kill `pybuild store verify`
//! must report a consistent store and the same operation, run again, must succeed.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pybuild_testsupport::data::noise;
use pybuild_testsupport::registry::{Registry, RegistryAuth};

use crate::{Tally, World, all_output, run_ok};

fn iterations() -> usize {
    std::env::var("PYBUILD_ROBUST_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// xorshift64*: reproducible "random" kill points from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Runs `cmd`, kills it with SIGKILL after `delay` (if still running); whether it was
/// killed.
fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

fn timed(mut cmd: Command) -> Duration {
    let started = Instant::now();
    run_ok(&mut cmd);
    started.elapsed()
}

#[test]
fn kill_9_during_build_pull_and_push() {
    let n = iterations();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let world = World::new("crash");
    world.busybox();
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    let mut tally = Tally::new("kill -9");
    let mut killed = [0usize; 3];

    let ctx = world.context(
        "ctx",
        "FROM busybox\nCOPY a.bin /a.bin\nCOPY b.bin /b.bin\nCOPY n /n\n",
        &[("n", "0")],
    );
    let build = |i: usize| {
        fs::write(ctx.join("a.bin"), noise(6 << 20, i as u64 * 2 + 1)).unwrap();
        fs::write(ctx.join("b.bin"), noise(3 << 20, i as u64 * 2 + 2)).unwrap();
        fs::write(ctx.join("n"), i.to_string()).unwrap();
        let mut cmd = world.pybuild();
        cmd.args(["build", "-q", "-t", "crash"]).arg(&ctx);
        cmd
    };
    // How long one build takes: kills land anywhere in [0, 1.2 × that).
    let build_time = timed(build(1_000_000));

    for i in 0..n {
        let delay = Duration::from_micros(rng.below(build_time.as_micros() as u64 * 6 / 5));
        killed[0] += usize::from(kill_after(build(i), delay));
        let result = world.verify().and_then(|()| {
            let out = build(i).output().unwrap();
            if out.status.success() {
                world.verify()
            } else {
                Err(format!("the next build failed: {}", all_output(&out)))
            }
        });
        tally.case(&format!("build #{i} (kill at {delay:?})"), result);
    }

    // Push: every iteration pushes the last build to a new repository.
    let push = |i: usize| {
        let mut cmd = world.pybuild();
        cmd.args(["push", "crash", &format!("{host}/crash/push{i}:1")]);
        cmd
    };
    fs::write(ctx.join("n"), "push").unwrap();
    run_ok(&mut build(n));
    let push_time = timed(push(1_000_000));
    for i in 0..n {
        let delay = Duration::from_micros(rng.below(push_time.as_micros() as u64 * 6 / 5));
        killed[2] += usize::from(kill_after(push(i), delay));
        let result = world.verify().and_then(|()| {
            let out = push(i).output().unwrap();
            if out.status.success() {
                world.verify()
            } else {
                Err(format!("the next push failed: {}", all_output(&out)))
            }
        });
        tally.case(&format!("push #{i} (kill at {delay:?})"), result);
    }

    // Pull into a second store, emptied before every attempt.
    let pull_world = World::new("crash-pull");
    let reference = format!("{host}/crash/push0:1");
    let pull = || {
        let mut cmd = pull_world.pybuild();
        cmd.args(["pull", "-q", &reference]);
        cmd
    };
    let empty = || {
        let _ = pull_world.pybuild().args(["rmi", &reference]).output();
        run_ok(pull_world.pybuild().args(["prune", "--all"]));
    };
    let pull_time = timed(pull());
    for i in 0..n {
        empty();
        let delay = Duration::from_micros(rng.below(pull_time.as_micros() as u64 * 6 / 5));
        killed[1] += usize::from(kill_after(pull(), delay));
        let result = pull_world.verify().and_then(|()| {
            let out = pull().output().unwrap();
            if out.status.success() {
                pull_world.verify()
            } else {
                Err(format!("the next pull failed: {}", all_output(&out)))
            }
        });
        tally.case(&format!("pull #{i} (kill at {delay:?})"), result);
    }

    let _ = std::io::stderr().write_all(
        format!(
            "ROBUST kill -9 (seed {seed}): {n} builds ({} killed mid-run, build {build_time:?}), \
             {n} pulls ({} killed, pull {pull_time:?}), {n} pushes ({} killed, push {push_time:?})\n",
            killed[0], killed[1], killed[2]
        )
        .as_bytes(),
    );
    tally.finish();
}
