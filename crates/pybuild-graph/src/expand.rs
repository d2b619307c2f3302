//! Variable expansion of one instruction, where BuildKit expands.
//!
//! BuildKit expands the words of ADD, COPY (sources, destination, `--chown`,
//! `--chmod`, `--exclude`, `--checksum`; never `--from`), ENV and LABEL (keys and
//! values), ARG defaults, EXPOSE, VOLUME, USER, WORKDIR and STOPSIGNAL, and the
//! values of `RUN --mount`. Command text (RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK,
//! ONBUILD) is left for the shell in the container.

use pybuild_dockerfile::instructions::{ArgDecl, CopySpec, KeyValue, Kind};
use pybuild_dockerfile::shell::Lexer;
use pybuild_dockerfile::{Error, Spanned};

/// Expand an instruction's words with `env` (see [`crate::Step::expansion_env`]),
/// using the Dockerfile's escape character.
pub fn expand(kind: &Kind, env: &[(String, String)], escape: char) -> Result<Kind, Error> {
    let lexer = Lexer::new(escape);
    let word = |s: &Spanned<String>| -> Result<Spanned<String>, Error> {
        Ok(Spanned::new(
            lexer
                .expand_word(&s.value, &env)
                .map_err(|e| e.at(s.span))?,
            s.span,
        ))
    };
    let words = |list: &[Spanned<String>]| -> Result<Vec<Spanned<String>>, Error> {
        let mut out = Vec::new();
        for s in list {
            // EXPOSE/VOLUME lists: an expanded value may hold several words.
            for w in lexer
                .expand_words(&s.value, &env)
                .map_err(|e| e.at(s.span))?
            {
                out.push(Spanned::new(w, s.span));
            }
        }
        Ok(out)
    };
    let opt = |s: &Option<Spanned<String>>| s.as_ref().map(word).transpose();
    let copy = |spec: &CopySpec| -> Result<CopySpec, Error> {
        Ok(CopySpec {
            sources: spec.sources.iter().map(word).collect::<Result<_, _>>()?,
            dest: word(&spec.dest)?,
            from: spec.from.clone(),
            chown: opt(&spec.chown)?,
            chmod: opt(&spec.chmod)?,
            exclude: spec.exclude.iter().map(word).collect::<Result<_, _>>()?,
            checksum: opt(&spec.checksum)?,
            ..spec.clone()
        })
    };
    let pairs = |list: &[KeyValue]| -> Result<Vec<KeyValue>, Error> {
        list.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: word(&kv.key)?,
                    value: word(&kv.value)?,
                    legacy: kv.legacy,
                })
            })
            .collect()
    };
    Ok(match kind {
        Kind::Copy(spec) => Kind::Copy(copy(spec)?),
        Kind::Add(spec) => Kind::Add(copy(spec)?),
        Kind::Env(list) => Kind::Env(pairs(list)?),
        Kind::Label(list) => Kind::Label(pairs(list)?),
        Kind::Arg(decls) => Kind::Arg(
            decls
                .iter()
                .map(|d| {
                    Ok(ArgDecl {
                        name: d.name.clone(),
                        default: d
                            .default
                            .as_ref()
                            .map(|v| lexer.expand_word(v, &env).map_err(|e| e.at(d.name.span)))
                            .transpose()?,
                    })
                })
                .collect::<Result<_, Error>>()?,
        ),
        Kind::Expose(list) => Kind::Expose(words(list)?),
        Kind::Volume(list) => Kind::Volume(words(list)?),
        Kind::User(v) => Kind::User(word(v)?),
        Kind::Workdir(v) => Kind::Workdir(word(v)?),
        Kind::StopSignal(v) => Kind::StopSignal(word(v)?),
        Kind::Run {
            command,
            mounts,
            network,
            security,
            heredocs,
        } => Kind::Run {
            command: command.clone(),
            mounts: mounts.iter().map(word).collect::<Result<_, _>>()?,
            network: *network,
            security: *security,
            heredocs: heredocs.clone(),
        },
        other => other.clone(),
    })
}
