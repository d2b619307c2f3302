//! Secrets: a build that pulls its base from a Basic-auth registry (after `pybuild
//! login`), uses a `--secret` in RUN and pushes the result; then every blob
//! (decompressed), record and file of the store, the registry's storage, the
//! metadata file and the build's output are scanned for both values: zero hits.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

use pybuild_testsupport::registry::{Registry, RegistryAuth};

use crate::{Tally, World, all_output, run_ok};

const USER: &str = "robust-user";
const PASSWORD: &str = "Pw-robust-7f3a9c1e-never-stored";
const SECRET: &str = "tok-robust-5b2d8e4f-never-in-layers";

/// Files scanned and hits of `needles` under `dir`, gzip blobs decompressed.
fn scan(dir: &Path, needles: &[&str], files: &mut usize, hits: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            scan(&path, needles, files, hits);
        } else if meta.is_file() {
            let mut bytes = fs::read(&path).unwrap_or_default();
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let mut plain = Vec::new();
                if flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_end(&mut plain)
                    .is_ok()
                {
                    bytes.extend_from_slice(&plain);
                }
            }
            *files += 1;
            for needle in needles {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(format!("{} contains {needle:?}", path.display()));
                }
            }
        }
    }
}

#[test]
fn secrets_and_credentials_reach_no_blob_record_or_log() {
    let world = World::new("secrets");
    let registry = Registry::start(RegistryAuth::Basic {
        user: USER.into(),
        password: PASSWORD.into(),
    });
    let host = registry.host();
    world.busybox();
    let mut login = world
        .pybuild()
        .args(["login", "-u", USER, "--password-stdin", &host])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let login = login.wait_with_output().unwrap();
    assert!(login.status.success(), "{}", all_output(&login));
    let push_base =
        run_ok(
            world
                .pybuild()
                .args(["push", "busybox", &format!("{host}/base/busybox:1")]),
        );

    let secret_file = world.path("secret.txt");
    fs::write(&secret_file, SECRET).unwrap();
    let ctx = world.context(
        "ctx",
        &format!(
            "FROM {host}/base/busybox:1\n\
             RUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok | cut -c1-64)\" = {} && echo used > /used\n\
             COPY f /f\n",
            pybuild_oci::Digest::of(SECRET.as_bytes()).hex()
        ),
        &[("f", "f\n")],
    );
    let metadata = world.path("metadata.json");
    let out = world
        .pybuild()
        .args(["build", "--pull", "--progress=plain", "--push"])
        .args(["-t", &format!("{host}/team/out:1")])
        .arg("--secret")
        .arg(format!("id=tok,src={}", secret_file.display()))
        .arg("--metadata-file")
        .arg(&metadata)
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", all_output(&out));
    // The RUN compares the secret's sha256, so the value itself is nowhere in the
    // Dockerfile, its history or its log unless pybuild leaks it.
    let mut tally = Tally::new("secrets");
    let mut files = 0;
    let mut hits = Vec::new();
    scan(&world.root, &[SECRET, PASSWORD], &mut files, &mut hits);
    scan(
        registry.storage_dir(),
        &[SECRET, PASSWORD],
        &mut files,
        &mut hits,
    );
    let logs = format!(
        "{}{}{}",
        all_output(&login),
        all_output(&push_base),
        fs::read_to_string(&metadata).unwrap_or_default()
    );
    let build_log = all_output(&out);
    for needle in [SECRET, PASSWORD] {
        if logs.contains(needle) || build_log.contains(needle) {
            hits.push(format!("the output contains {needle:?}"));
        }
    }
    let _ = std::io::stderr().write_all(
        format!(
            "ROBUST secrets: scanned {files} files (blobs decompressed) and the logs, {} hit(s)\n",
            hits.len()
        )
        .as_bytes(),
    );
    tally.case(
        "no secret or password anywhere",
        if hits.is_empty() {
            Ok(())
        } else {
            Err(hits.join("\n"))
        },
    );
    tally.finish();
}
