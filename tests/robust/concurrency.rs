//! Several pybuild processes on one store at once: four builds of different
//! Dockerfiles sharing the busybox base (two with RUN) and two pulls.

use std::process::Output;

use pybuild_testsupport::registry::{Registry, RegistryAuth};

use crate::layers::{Tar, gzip, push_image};
use crate::{Tally, World, all_output};

#[test]
fn concurrent_builds_and_pulls_share_one_store() {
    let world = World::new("concurrency");
    world.busybox();
    let registry = Registry::start(RegistryAuth::None);
    let host = registry.host();
    for name in ["one", "two"] {
        let mut t = Tar::default();
        t.file(name.as_bytes(), &vec![name.as_bytes()[0]; 2 << 20]);
        let tar = t.end();
        let diff_id = pybuild_oci::Digest::of(&tar);
        push_image(
            &host,
            &format!("conc/{name}"),
            "1",
            &[(
                gzip(&tar),
                diff_id,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )],
        );
    }
    let dockerfiles = [
        "FROM busybox\nCOPY f /f\n",
        "FROM busybox\nCOPY f /g\nRUN cat /g > /h\n",
        "FROM busybox\nRUN echo run > /r\nCOPY f /f\n",
        "FROM busybox AS a\nCOPY f /f\nFROM busybox\nCOPY --from=a /f /copied\n",
    ];
    let mut children = Vec::new();
    for (i, dockerfile) in dockerfiles.iter().enumerate() {
        let ctx = world.context(&format!("ctx{i}"), dockerfile, &[("f", &format!("{i}\n"))]);
        let child = world
            .pybuild()
            .args(["build", "-q", "-t", &format!("conc{i}")])
            .arg(ctx)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push((format!("build {i}"), child));
    }
    for name in ["one", "two"] {
        let child = world
            .pybuild()
            .args(["pull", "-q", &format!("{host}/conc/{name}:1")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push((format!("pull {name}"), child));
    }
    let mut tally = Tally::new("concurrency");
    for (name, child) in children {
        let out: Output = child.wait_with_output().unwrap();
        let result = if out.status.success() {
            Ok(())
        } else {
            Err(all_output(&out))
        };
        tally.case(&name, result);
    }
    tally.case("store verify", world.verify());
    tally.finish();
}
