//! Image references, parsed and normalized with docker's rules
//! (`distribution/reference`: its grammar and `ParseNormalizedNamed`).
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [ domain "/" ] path
//! domain      := host [ ":" port ]      host: DNS name, IPv4, or [IPv6]
//! path        := component ( "/" component )*
//! component   := [a-z0-9]+ ( separator [a-z0-9]+ )*     separator: "." | "_" | "__" | "-"+
//! tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```
//!
//! The first `/`-separated part is a registry host only when it contains `.` or `:`,
//! is `localhost`, or has upper-case letters (a repository never may); otherwise the
//! registry is `docker.io`. On `docker.io` a one-component path gets `library/`
//! (`python` → `docker.io/library/python`), and `index.docker.io` is the same
//! registry. The whole name is at most 255 characters, and a bare 64-digit hex
//! string is refused as a name (docker reserves it for image IDs).

use std::fmt;
use std::str::FromStr;

use pybuild_oci::Digest;

use crate::Error;

/// The registry of unqualified names.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves `docker.io`'s distribution API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// Docker's `NameTotalLengthMax`.
const NAME_MAX: usize = 255;
/// The tag grammar allows 128 characters.
const TAG_MAX: usize = 128;

/// A normalized image reference: always a registry and a full repository path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port when given (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path within the registry (`library/python`).
    pub repository: String,
    /// Tag, when given (none is added: see [`Reference::tag_or_latest`]).
    pub tag: Option<String>,
    /// Digest, when given; it wins over the tag when resolving, as in docker.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse and normalize a reference.
    pub fn parse(text: &str) -> Result<Reference, Error> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::from_str(d).map_err(|e| bad(&e.to_string()))?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; an earlier one is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        if name.len() > NAME_MAX {
            return Err(bad("repository name must not be more than 255 characters"));
        }
        let (registry, path) = split_domain(name);
        if let Some(registry) = registry {
            check_domain(registry).map_err(bad)?;
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        check_path(path).map_err(bad)?;
        if registry.is_none() && is_hex64(path) {
            return Err(bad(
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        let mut registry = registry.unwrap_or(DOCKER_HUB).to_string();
        if registry == "index.docker.io" {
            registry = DOCKER_HUB.to_string();
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The tag, or `latest` when neither a tag nor a digest was given (docker's
    /// `TagNameOnly`); `None` for a digest-only reference.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// What to ask the registry for: the digest when there is one, else the tag
    /// (`latest` by default).
    pub fn api_reference(&self) -> String {
        match (&self.digest, self.tag_or_latest()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form docker prints: `docker.io/` and `library/` dropped
    /// (`python:3.11-slim`, `someone/app`, `127.0.0.1:5000/app:v1`).
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.with_suffix(name)
    }

    /// A copy with the given tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, Error> {
        check_tag(tag).map_err(|reason| Error::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason: reason.to_string(),
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// A copy pinned to `digest` (the tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    fn with_suffix(&self, mut name: String) -> String {
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(&d.to_string());
        }
        name
    }
}

impl fmt::Display for Reference {
    /// The full, normalized form: `docker.io/library/python:3.11-slim`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Reference::parse(s)
    }
}

/// Docker's `splitDockerDomain`: the registry part, if the first component is one.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_tag(tag: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = tag.bytes();
    match bytes.next() {
        None => return Err("empty tag"),
        Some(b) if !word(b) => return Err("a tag must start with a letter, digit or '_'"),
        Some(_) => {}
    }
    if tag.len() > TAG_MAX {
        return Err("a tag is at most 128 characters");
    }
    if !bytes.all(|b| word(b) || b == b'.' || b == b'-') {
        return Err("a tag may only contain letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    // [IPv6]:port, or host:port.
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("unclosed '[' in registry host")?;
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err("invalid IPv6 address in registry host");
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(
                    p.strip_prefix(':')
                        .ok_or("junk after ']' in registry host")?,
                ),
            ),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid port in registry host");
        }
    }
    if let Some(host) = host {
        for part in host.split('.') {
            let ok = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-');
            if !ok {
                return Err("invalid registry host");
            }
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), &'static str> {
    for component in path.split('/') {
        check_component(component)?;
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn check_component(c: &str) -> Result<(), &'static str> {
    const MSG: &str = "invalid repository name: path components are lower-case letters and digits, separated by '.', '_', '__' or dashes";
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() {
        return Err("invalid repository name: empty path component");
    }
    let mut i = 0;
    let mut need_alnum = true;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return Err(MSG);
        }
        // A separator run.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(MSG);
        }
        need_alnum = true;
    }
    if need_alnum {
        return Err(MSG);
    }
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).expect(s).to_string()
    }

    #[test]
    fn docker_hub_normalization() {
        assert_eq!(
            full("python:3.11-slim"),
            "docker.io/library/python:3.11-slim"
        );
        assert_eq!(full("python"), "docker.io/library/python");
        assert_eq!(full("someone/app:1"), "docker.io/someone/app:1");
        assert_eq!(full("docker.io/python"), "docker.io/library/python");
        assert_eq!(full("index.docker.io/python"), "docker.io/library/python");
        assert_eq!(full("docker.io/library/python"), "docker.io/library/python");
        let r = Reference::parse("busybox").expect("valid");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_latest(), Some("latest"));
        assert_eq!(r.api_reference(), "latest");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = Reference::parse("127.0.0.1:5000/team/app:v2").expect("valid");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(full("localhost/x"), "localhost/x");
        assert_eq!(full("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(full("example.com/a/b/c"), "example.com/a/b/c");
        assert_eq!(full("[::1]:5000/app:1"), "[::1]:5000/app:1");
        // A first component without '.' or ':' is a path, not a host.
        assert_eq!(full("foo/bar"), "docker.io/foo/bar");
        // Upper case marks a host.
        assert_eq!(full("Registry/app"), "Registry/app");
        // Port but no tag: the ':' belongs to the host.
        let r = Reference::parse("host:5000/app").expect("valid");
        assert_eq!((r.registry.as_str(), r.tag), ("host:5000", None));
    }

    #[test]
    fn digests_and_tag_plus_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("python@{d}")).expect("valid");
        assert_eq!(r.digest.as_ref().map(|d| d.to_string()), Some(d.clone()));
        assert_eq!(r.tag, None);
        assert_eq!(r.tag_or_latest(), None);
        assert_eq!(r.api_reference(), d);
        let r = Reference::parse(&format!("127.0.0.1:5000/app:1.0@{d}")).expect("valid");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.api_reference(), d, "the digest wins");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/app:1.0@{d}"));
    }

    #[test]
    fn familiar_form() {
        let fam = |s: &str| Reference::parse(s).expect(s).familiar();
        assert_eq!(
            fam("docker.io/library/python:3.11-slim"),
            "python:3.11-slim"
        );
        assert_eq!(fam("docker.io/someone/app"), "someone/app");
        assert_eq!(fam("docker.io/library/a/b"), "library/a/b");
        assert_eq!(fam("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
    }

    #[test]
    fn invalid_references() {
        for (text, needle) in [
            ("", "empty"),
            ("Python", "lowercase"),
            ("python:", "empty tag"),
            ("python:-x", "must start"),
            ("python:a+b", "may only contain"),
            ("a//b", "empty path component"),
            ("a/-b", "path components"),
            ("a/b-", "path components"),
            ("a..b", "path components"),
            ("a___b", "path components"),
            ("host:x/app", "invalid port"),
            ("-host.com/app", "invalid registry host"),
            ("python@sha256:abc", "64"),
            ("python@md5:abc", "sha256"),
            ("/app", "empty path component"),
        ] {
            let err = Reference::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
        let hex = "f".repeat(64);
        let err = Reference::parse(&hex).expect_err("hex").to_string();
        assert!(err.contains("64-byte"), "{err}");
        let long = format!("a/{}", "b".repeat(260));
        assert!(Reference::parse(&long).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        // Separators that are allowed.
        for ok in ["a__b", "a-b", "a---b", "a.b", "a_b", "a.b/c_d/e--f"] {
            assert!(Reference::parse(ok).is_ok(), "{ok}");
        }
    }
}
