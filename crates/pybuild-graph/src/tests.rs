//! Unit tests of the build graph: scoping, edges, pruning, errors.

use super::*;
use pybuild_dockerfile::Position;

fn graph(src: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<BuildGraph, Error> {
    let df = pybuild_dockerfile::parse(src).map_err(Error::Dockerfile)?;
    let options = Options {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        build_platform: Some(Platform::parse("linux/amd64").expect("platform")),
        target_platform: Some(Platform::parse("linux/arm64").expect("platform")),
    };
    BuildGraph::new(&df, &options)
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The expansion environment of step `n` of stage `s`.
fn env_at(g: &BuildGraph, s: usize, n: usize) -> Vec<(String, String)> {
    g.stages[s].steps[n].expansion_env(&[])
}

#[test]
fn global_args_reach_from_but_not_the_stage_unless_redeclared() {
    let src =
        "ARG TAG=3.11\nARG BASE=python\nFROM ${BASE}:${TAG}-slim\nRUN true\nARG TAG\nRUN true\n";
    let g = graph(src, &[], None).expect("graph");
    assert_eq!(g.stages[0].base, Base::Image("python:3.11-slim".into()));
    assert_eq!(
        get(&env_at(&g, 0, 0), "TAG"),
        None,
        "global ARG leaked into the stage"
    );
    assert_eq!(get(&env_at(&g, 0, 2), "TAG"), Some("3.11"));
    assert_eq!(get(&env_at(&g, 0, 2), "BASE"), None);
}

#[test]
fn build_args_override_defaults_everywhere() {
    let src = "ARG TAG=1\nFROM img:$TAG\nARG TAG\nARG MODE=debug\nRUN true\n";
    let g = graph(src, &[("TAG", "2"), ("MODE", "release")], None).expect("graph");
    assert_eq!(g.stages[0].base, Base::Image("img:2".into()));
    let env = env_at(&g, 0, 2);
    assert_eq!(get(&env, "TAG"), Some("2"));
    assert_eq!(get(&env, "MODE"), Some("release"));
    assert!(g.unused_build_args.is_empty());
}

#[test]
fn env_shadows_arg_and_undeclared_build_args_are_invisible() {
    let src = "FROM a\nARG V=arg\nENV V=env\nENV W=${V}-x\nRUN true\n";
    let g = graph(
        src,
        &[("V", "cli"), ("UNUSED", "1"), ("HTTP_PROXY", "http://p")],
        None,
    )
    .expect("graph");
    let env = env_at(&g, 0, 3);
    assert_eq!(get(&env, "V"), Some("env"));
    assert_eq!(get(&env, "W"), Some("env-x"));
    assert_eq!(get(&env, "UNUSED"), None);
    assert_eq!(
        g.unused_build_args,
        ["UNUSED"],
        "proxy args are never reported unused"
    );
    assert_eq!(
        get(&g.stages[0].steps[3].proxy_env, "HTTP_PROXY"),
        Some("http://p")
    );
    assert_eq!(
        get(&env, "HTTP_PROXY"),
        None,
        "proxy args are not used for expansion"
    );
}

#[test]
fn arg_without_value_is_unset_and_defaults_see_earlier_scope() {
    let src = "FROM a\nARG EMPTY\nENV P=/opt\nARG D=$P/bin\nRUN true\n";
    let g = graph(src, &[], None).expect("graph");
    let env = env_at(&g, 0, 3);
    assert_eq!(get(&env, "EMPTY"), None);
    assert_eq!(get(&env, "D"), Some("/opt/bin"));
}

#[test]
fn platform_args_global_and_declared() {
    let src = "FROM --platform=$BUILDPLATFORM img:${TARGETARCH}\nRUN true\nARG TARGETARCH\nARG BUILDOS\nRUN true\n";
    let g = graph(src, &[], None).expect("graph");
    assert_eq!(g.stages[0].base, Base::Image("img:arm64".into()));
    assert_eq!(
        g.stages[0].platform.as_ref().map(|p| p.to_string()),
        Some("linux/amd64".into())
    );
    assert_eq!(get(&env_at(&g, 0, 0), "TARGETARCH"), None);
    let env = env_at(&g, 0, 3);
    assert_eq!(get(&env, "TARGETARCH"), Some("arm64"));
    assert_eq!(get(&env, "BUILDOS"), Some("linux"));
}

#[test]
fn expansion_skips_run_and_copy_from() {
    let src =
        "FROM a AS $x\nARG D=/dst\nARG F=other\nCOPY --from=$F --chown=$D src $D/\nRUN echo $D\n";
    // `$x` is not a valid stage name: names are not expanded.
    assert!(graph(src, &[], None).is_err());
    let src = "FROM a\nARG D=/dst\nARG F=other\nCOPY --from=$F --chown=$D src $D/\nRUN echo $D\n";
    let g = graph(src, &[], None).expect("graph");
    let step = &g.stages[0].steps[2];
    let Kind::Copy(spec) =
        expand(&step.instruction.kind, &step.expansion_env(&[]), '\\').expect("expands")
    else {
        panic!("not COPY");
    };
    assert_eq!(spec.dest.value, "/dst/");
    assert_eq!(spec.chown.map(|c| c.value), Some("/dst".into()));
    assert_eq!(spec.from.map(|c| c.value), Some("$F".into()));
    let step = &g.stages[0].steps[3];
    let kind = expand(&step.instruction.kind, &step.expansion_env(&[]), '\\').expect("expands");
    assert!(
        matches!(kind, Kind::Run { command: pybuild_dockerfile::instructions::Command::Shell(c), .. } if c == "echo $D")
    );
}

#[test]
fn base_image_env_is_layered_between_args_and_stage_env() {
    let src = "FROM a\nARG HOME=/arg\nWORKDIR $HOME/app\n";
    let g = graph(src, &[], None).expect("graph");
    let step = &g.stages[0].steps[1];
    let base = vec![("HOME".to_string(), "/root".to_string())];
    let Kind::Workdir(w) =
        expand(&step.instruction.kind, &step.expansion_env(&base), '\\').expect("expands")
    else {
        panic!("not WORKDIR")
    };
    // Like BuildKit: the image's ENV shadows a build arg of the same name.
    assert_eq!(w.value, "/root/app");
}

#[test]
fn backtick_escape_is_used_for_expansion() {
    let src = "# escape=`\nFROM a\nENV A=x`$y\n";
    let g = graph(src, &[], None).expect("graph");
    assert_eq!(get(&env_at(&g, 0, 0), "A"), Some("x$y"));
}

#[test]
fn stage_edges_and_pruning() {
    let src = "\
FROM busybox AS base
RUN true
FROM base AS deps
RUN true
FROM busybox AS unused
RUN true
FROM busybox AS tool
FROM scratch
COPY --from=deps /a /a
COPY --from=0 /b /b
RUN --mount=from=tool,target=/t true
COPY --from=alpine:3 /c /c
";
    let g = graph(src, &[], None).expect("graph");
    assert_eq!(g.target, 4);
    assert_eq!(g.stages[1].base, Base::Stage(0));
    assert_eq!(g.stages[4].base, Base::Scratch);
    assert_eq!(g.stages[4].deps, BTreeSet::from([0, 1, 3]));
    assert_eq!(g.order, [0, 1, 3, 4]);
    assert!(!g.is_needed(2), "stage `unused` must be pruned");
    assert_eq!(
        g.stages[4].steps[3].inputs,
        [Input::Image("alpine:3".into())]
    );
    let g = graph(src, &[], Some("deps")).expect("graph");
    assert_eq!(g.order, [0, 1]);
    let d = g.describe();
    assert!(
        d.contains("(pruned)") && d.contains("order: base -> deps"),
        "{d}"
    );
}

#[test]
fn context_inputs_of_copy_and_bind_mounts() {
    let src = "FROM a\nCOPY requirements.txt ./\nCOPY <<EOF /x\nhi\nEOF\nADD https://example.com/f.tgz /f\nRUN --mount=type=bind,source=src,target=/src true\n";
    let g = graph(src, &[], None).expect("graph");
    assert_eq!(
        g.stages[0].steps[0].inputs,
        [Input::Context(vec!["requirements.txt".into()])]
    );
    assert!(
        g.stages[0].steps[1].inputs.is_empty(),
        "heredoc sources are not context paths"
    );
    assert_eq!(
        g.stages[0].steps[2].inputs,
        [Input::Url("https://example.com/f.tgz".into())]
    );
    assert_eq!(
        g.stages[0].steps[3].inputs,
        [Input::Context(vec!["src".into()])]
    );
}

#[test]
fn errors_point_where_they_should() {
    let e = graph("FROM a AS x\nFROM b AS x\n", &[], None).expect_err("duplicate");
    assert!(matches!(e, Error::DuplicateStageName { .. }));
    assert_eq!(e.span().map(|s| s.start), Some(Position::new(2, 11)));

    let e = graph("FROM a\nCOPY --from=7 /a /b\n", &[], None).expect_err("index");
    assert!(matches!(
        e,
        Error::StageIndexOutOfRange {
            index: 7,
            count: 1,
            ..
        }
    ));
    assert_eq!(e.span().map(|s| s.start.line), Some(2));

    let e = graph(
        "FROM a AS one\nCOPY --from=two /a /b\nFROM b AS two\nCOPY --from=one /a /b\n",
        &[],
        None,
    )
    .expect_err("cycle");
    assert!(matches!(e, Error::Cycle { .. }), "{e:?}");
    assert!(matches!(e.span().map(|s| s.start.line), Some(2) | Some(4)));

    let e = graph("FROM a AS self\nCOPY --from=self /a /b\n", &[], None).expect_err("self cycle");
    assert!(matches!(e, Error::Cycle { .. }));

    let e = graph("FROM a AS x\n", &[], Some("nope")).expect_err("target");
    assert!(
        matches!(&e, Error::TargetNotFound { available, .. } if available == &["x".to_string()])
    );
    assert!(e.hint().unwrap_or_default().contains('x'));

    let e = graph("RUN true\nFROM a\n", &[], None).expect_err("before from");
    assert!(matches!(e, Error::InstructionBeforeFrom { .. }));
    assert_eq!(e.span().map(|s| s.start), Some(Position::new(1, 1)));

    let e = graph("ARG A\n", &[], None).expect_err("no stages");
    assert!(matches!(e, Error::NoStages));

    let e = graph("FROM --platform=linux/sparc a\n", &[], None).expect_err("platform");
    assert!(matches!(e, Error::InvalidPlatform { .. }));
    assert_eq!(e.span().map(|s| s.start), Some(Position::new(1, 6)));

    let e = graph("FROM a\nENV X=${Y:?required}\n", &[], None).expect_err("required");
    assert!(matches!(
        e,
        Error::Dockerfile(pybuild_dockerfile::Error::Expansion { .. })
    ));
    assert_eq!(e.span().map(|s| s.start.line), Some(2));
    let rendered = e.render("Dockerfile", "FROM a\nENV X=${Y:?required}\n");
    assert!(rendered.starts_with("Dockerfile:2:"), "{rendered}");
}
