//! Throwaway OCI distribution registries for tests.
//!
//! [`Registry::start`] runs Debian's `docker-registry` (CNCF distribution 2.8) on a free
//! `127.0.0.1` port with a configuration file of its own, storage in a temporary
//! directory and its log captured to a file. It can require no authentication, HTTP
//! Basic authentication (an `htpasswd` file with a bcrypt hash) or bearer tokens issued
//! by an in-process [`TokenServer`]. A [`FaultProxy`] placed in front of a registry
//! injects server errors, corrupted or truncated bodies, rate limiting and delays.
//!
//! Everything listens on loopback only; the packaged `/etc/docker/registry/config.yml`
//! (which listens on every address) is never used.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net::free_port;

mod proxy;
mod scripted;
mod token;

pub use proxy::{Fault, FaultProxy};
pub use scripted::{Canned, ScriptedRegistry};

pub use token::{
    Access, ISSUER, SERVICE, TOKEN_LIFETIME_SECS, TokenServer, certificate_pem, sign_token,
};

/// How the registry authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    None,
    /// HTTP Basic authentication with one account.
    Basic {
        /// The account's user name.
        user: String,
        /// The account's password.
        password: String,
    },
    /// Bearer tokens from a [`TokenServer`] that knows one account.
    Token {
        /// The account's user name.
        user: String,
        /// The account's password.
        password: String,
    },
}

/// How long [`Registry::start`] waits for `GET /v2/` to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry` process; dropping it kills the process and removes its
/// configuration, log and storage.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    storage: PathBuf,
    log_path: PathBuf,
    token_server: Option<TokenServer>,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `docker-registry` is not installed (with an install hint), when it exits
    /// early, or when `GET /v2/` does not answer 200 or 401 within 30 seconds; the
    /// message carries the registry's log.
    pub fn start(auth: RegistryAuth) -> Registry {
        let program = find_program("docker-registry").unwrap_or_else(|| {
            panic!(
                "docker-registry is not installed (it is needed by the registry tests); \
                 install it with `apt-get install docker-registry`"
            )
        });
        // A port picked by binding to :0 can be taken again before the registry binds
        // it; retry a few times when the process dies at start.
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(&program, &auth) {
                Ok(registry) => return registry,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry did not start; its log:\n{last_log}");
    }

    fn try_start(program: &Path, auth: &RegistryAuth) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("pybuild-registry-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create the registry storage directory");
        let port = free_port();
        let mut token_server = None;
        let auth_section = match auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Basic { user, password } => {
                // The lowest cost bcrypt allows keeps start-up fast.
                let hash = bcrypt::hash(password, 4).expect("bcrypt the test password");
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: pybuild-test-registry\n    path: {}\n",
                    htpasswd.display()
                )
            }
            RegistryAuth::Token { user, password } => {
                let server = TokenServer::start(user, password);
                let bundle = dir.path().join("token-ca.pem");
                fs::write(&bundle, certificate_pem()).expect("write the token certificate");
                let section = format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    \
                     issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
                    realm = server.realm(),
                    bundle = bundle.display()
                );
                token_server = Some(server);
                section
            }
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: pybuild-test-secret\n\
             {auth_section}",
            storage = storage.display(),
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write the registry configuration");
        let log_path = dir.path().join("registry.log");
        let log = File::create(&log_path).expect("create the registry log");
        let child = Command::new(program)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let mut registry = Registry {
            child,
            port,
            dir,
            storage,
            log_path,
            token_server,
        };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Polls `GET /v2/` until it answers 200 or 401; on failure returns the log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("(exited with {status})\n{}", self.log()));
            }
            let answered = crate::http::get(&self.host(), "/v2/", &[])
                .is_ok_and(|response| matches!(response.status, 200 | 401));
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "docker-registry on {} did not answer GET /v2/ within {:?}; its log:\n{}",
                    self.host(),
                    START_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The registry's address, `"127.0.0.1:PORT"`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the registry logged so far (application log and access log).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// How many requests with this method and a path containing `path_contains` the
    /// access log shows so far (e.g. `requests("PATCH", "/blobs/uploads/")`).
    pub fn requests(&self, method: &str, path_contains: &str) -> usize {
        access_log_requests(&self.log())
            .filter(|(m, p)| *m == method && p.contains(path_contains))
            .count()
    }

    /// Waits up to `timeout` until [`requests`](Self::requests) reaches `at_least`, and
    /// returns the count then. The access log line of a request is written when its
    /// handler finishes, which a client can observe slightly after the response.
    pub fn wait_requests(
        &self,
        method: &str,
        path_contains: &str,
        at_least: usize,
        timeout: Duration,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.requests(method, path_contains);
            if count >= at_least || Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The token server, for a registry started with [`RegistryAuth::Token`].
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// The temporary directory holding the configuration, log and storage.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `(method, target)` of each access-log line (combined log format:
/// `... "GET /v2/ HTTP/1.1" 200 ...`).
fn access_log_requests(log: &str) -> impl Iterator<Item = (&str, &str)> {
    log.lines().filter_map(|line| {
        let start = line.find('"')? + 1;
        let rest = &line[start..];
        let request = &rest[..rest.find('"')?];
        let mut parts = request.split(' ');
        let method = parts.next()?;
        let target = parts.next()?;
        let version = parts.next()?;
        version.starts_with("HTTP/").then_some((method, target))
    })
}

/// `name` found on `PATH`, if any.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
