//! Registry settings, in the spirit of buildkitd.toml's `[registry."host"]` tables:
//!
//! ```toml
//! [registry."docker.io"]
//! mirrors = ["127.0.0.1:5000", "https://mirror.example.com"]
//!
//! [registry."registry.internal:5000"]
//! http = true                 # plain HTTP
//! insecure = true             # HTTPS without certificate verification
//! ca = ["/etc/pybuild/internal-ca.pem"]
//! ```
//!
//! Which file: the one given, else `$PYBUILD_CONFIG`, else
//! `~/.config/pybuild/config.toml` (honouring `$XDG_CONFIG_HOME`), else
//! `/etc/pybuild/config.toml`; a missing file means defaults.
//!
//! Loopback registries (`127.0.0.0/8`, `::1`, `localhost`) are spoken to over plain
//! HTTP unless a table says `http = false`: docker treats them as insecure registries
//! by default, and a local test registry almost never has a certificate. Unlike
//! docker, pybuild does not first try HTTPS on them (one less round trip and no
//! confusing TLS error); set `http = false` for a loopback registry that has TLS.
//! Every other host uses HTTPS unless `http = true`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST};

/// Settings of one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// Hosts tried, in order, before this one when pulling (`host[:port]`, optionally
    /// with an `http://` or `https://` prefix that fixes the scheme).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Plain HTTP (`Some(true)`), HTTPS (`Some(false)`), or the default for the host.
    #[serde(default)]
    pub http: Option<bool>,
    /// HTTPS without verifying the server's certificate.
    #[serde(default)]
    pub insecure: bool,
    /// Extra PEM files of certificate authorities trusted for this host.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    registry: BTreeMap<String, HostSettings>,
}

/// How to reach one host: the result of applying the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`, as used in URLs and for credentials.
    pub host: String,
    /// Plain HTTP.
    pub http: bool,
    /// Skip certificate verification.
    pub insecure: bool,
    /// Extra trusted CA files.
    pub ca: Vec<PathBuf>,
    /// Whether this is a mirror of the registry asked for (mirrors serve pulls only).
    pub mirror: bool,
}

impl Endpoint {
    /// `http://host` or `https://host`.
    pub fn base_url(&self) -> String {
        let scheme = if self.http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// A distribution API URL under `repository`: `BASE/v2/REPOSITORY/PATH`, with
    /// `path` like `manifests/REF`, `blobs/DIGEST` or `blobs/uploads/` (distribution
    /// spec, "Endpoints").
    pub fn api_url(&self, repository: &str, path: &str) -> String {
        format!("{}/v2/{repository}/{path}", self.base_url())
    }
}

/// All registry settings. Hosts without a table get the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    hosts: BTreeMap<String, HostSettings>,
}

impl RegistryConfig {
    /// Load settings: `path` when given (it must exist), else the first of
    /// `$PYBUILD_CONFIG`, `~/.config/pybuild/config.toml`, `/etc/pybuild/config.toml`
    /// that exists; none means defaults.
    pub fn load(path: Option<&Path>) -> Result<RegistryConfig, Error> {
        if let Some(path) = path {
            return Self::load_file(path);
        }
        if let Some(env) = std::env::var_os("PYBUILD_CONFIG").filter(|v| !v.is_empty()) {
            // Named explicitly, so it must exist.
            return Self::load_file(Path::new(&env));
        }
        for candidate in default_paths() {
            if candidate.is_file() {
                return Self::load_file(&candidate);
            }
        }
        Ok(RegistryConfig::default())
    }

    /// Read one TOML file.
    pub fn load_file(path: &Path) -> Result<RegistryConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse settings from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<RegistryConfig, Error> {
        let bad = |reason: String| Error::Config {
            path: origin.to_path_buf(),
            reason,
        };
        let file: FileFormat = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut hosts = BTreeMap::new();
        for (host, settings) in file.registry {
            if host.is_empty() || host.contains('/') {
                return Err(bad(format!(
                    "registry {host:?}: expected a host with optional port"
                )));
            }
            for m in &settings.mirrors {
                if split_scheme(m).0.is_empty() {
                    return Err(bad(format!("registry {host:?}: empty mirror")));
                }
            }
            hosts.insert(canonical_host(&host), settings);
        }
        Ok(RegistryConfig { hosts })
    }

    /// Add a pull mirror for `host` (`--registry-mirror docker.io=HOST`), after any
    /// configured ones.
    pub fn add_mirror(&mut self, host: &str, mirror: &str) {
        let entry = self.hosts.entry(canonical_host(host)).or_default();
        if !entry.mirrors.iter().any(|m| m == mirror) {
            entry.mirrors.push(mirror.to_string());
        }
    }

    /// Set or replace the settings of one host.
    pub fn set_host(&mut self, host: &str, settings: HostSettings) {
        self.hosts.insert(canonical_host(host), settings);
    }

    /// The settings of `host` (defaults when it has no table).
    pub fn host(&self, host: &str) -> HostSettings {
        self.hosts
            .get(&canonical_host(host))
            .cloned()
            .unwrap_or_default()
    }

    /// The endpoint for `host` itself. `docker.io` is served by
    /// `registry-1.docker.io`.
    pub fn endpoint(&self, host: &str) -> Endpoint {
        let settings = self.host(host);
        let api_host = if canonical_host(host) == DOCKER_HUB {
            DOCKER_HUB_API_HOST.to_string()
        } else {
            host.to_string()
        };
        Endpoint {
            http: settings.http.unwrap_or_else(|| is_loopback(&api_host)),
            insecure: settings.insecure,
            ca: settings.ca,
            host: api_host,
            mirror: false,
        }
    }

    /// Where to go for `host`: its mirrors first when `pull`, then the host itself.
    pub fn endpoints(&self, host: &str, pull: bool) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if pull {
            for m in self.host(host).mirrors {
                let (mirror_host, scheme_http) = split_scheme(&m);
                let mut e = self.endpoint(mirror_host);
                if let Some(http) = scheme_http {
                    e.http = http;
                }
                e.mirror = true;
                out.push(e);
            }
        }
        out.push(self.endpoint(host));
        out
    }
}

/// `http://h` → (`h`, Some(true)); `https://h` → (`h`, Some(false)); `h` → (`h`, None).
/// A trailing `/` is dropped.
fn split_scheme(mirror: &str) -> (&str, Option<bool>) {
    let (rest, http) = if let Some(r) = mirror.strip_prefix("http://") {
        (r, Some(true))
    } else if let Some(r) = mirror.strip_prefix("https://") {
        (r, Some(false))
    } else {
        (mirror, None)
    };
    (rest.trim_end_matches('/'), http)
}

/// Names of docker.io's registry all mean `docker.io` in the settings.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// Whether `host[:port]` is a loopback host: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn default_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    if let Some(dir) = xdg.or_else(|| home.map(|h| h.join(".config"))) {
        out.push(dir.join("pybuild/config.toml"));
    }
    out.push(PathBuf::from("/etc/pybuild/config.toml"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_style_tables() {
        let text = r#"
[registry."docker.io"]
mirrors = ["127.0.0.1:5000", "https://mirror.example.com/"]

[registry."internal:5000"]
http = true

[registry."secure.example"]
insecure = true
ca = ["/tmp/ca.pem"]
"#;
        let c = RegistryConfig::from_toml(text, Path::new("t.toml")).expect("parses");
        let eps = c.endpoints("docker.io", true);
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].base_url(), "http://127.0.0.1:5000");
        assert!(eps[0].mirror);
        assert_eq!(eps[1].base_url(), "https://mirror.example.com");
        assert_eq!(eps[2].base_url(), "https://registry-1.docker.io");
        assert!(!eps[2].mirror);
        // Mirrors are for pulls only.
        assert_eq!(c.endpoints("docker.io", false).len(), 1);
        assert_eq!(
            c.endpoint("internal:5000").base_url(),
            "http://internal:5000"
        );
        let s = c.endpoint("secure.example");
        assert!(s.insecure && !s.http);
        assert_eq!(s.ca, [PathBuf::from("/tmp/ca.pem")]);
        // index.docker.io shares docker.io's table.
        assert_eq!(c.host("index.docker.io").mirrors.len(), 2);
    }

    #[test]
    fn loopback_defaults_to_http() {
        let c = RegistryConfig::default();
        for host in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:80",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(c.endpoint(host).http, "{host}");
        }
        for host in ["example.com", "10.0.0.1:5000", "docker.io"] {
            assert!(!c.endpoint(host).http, "{host}");
        }
        let mut c = RegistryConfig::default();
        c.set_host(
            "127.0.0.1:5000",
            HostSettings {
                http: Some(false),
                ..Default::default()
            },
        );
        assert!(!c.endpoint("127.0.0.1:5000").http);
    }

    #[test]
    fn add_mirror_appends_once() {
        let mut c = RegistryConfig::default();
        c.add_mirror("docker.io", "127.0.0.1:5000");
        c.add_mirror("docker.io", "127.0.0.1:5000");
        let eps = c.endpoints("docker.io", true);
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert!(eps[0].http);
    }

    #[test]
    fn errors_name_the_file() {
        for bad in [
            "[registry.\"a\"]\nmirrors = 3",
            "[registry.\"a\"]\nunknown = 1",
            "[registry.\"a/b\"]\n",
            "not toml [",
        ] {
            let err = RegistryConfig::from_toml(bad, Path::new("/x/conf.toml"))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("/x/conf.toml"), "{err}");
        }
    }

    #[test]
    fn load_explicit_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        assert!(
            RegistryConfig::load(Some(&path)).is_err(),
            "explicit must exist"
        );
        std::fs::write(&path, "[registry.\"docker.io\"]\nmirrors = [\"m:1\"]\n").expect("write");
        let c = RegistryConfig::load(Some(&path)).expect("loads");
        assert_eq!(c.host("docker.io").mirrors, ["m:1"]);
    }
}
