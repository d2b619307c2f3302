//! Credentials and registry authentication.
//!
//! **Where credentials come from**: docker's `config.json` (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`), read the way the docker CLI reads it: a
//! `credHelpers` entry for the registry, else `credsStore`, names a
//! `docker-credential-<name>` program spoken to with `get` (server on stdin, JSON
//! `{"ServerURL","Username","Secret"}` out; `Username` `<token>` marks an identity
//! token); otherwise `auths` holds `auth` (base64 `user:password`) or
//! `identitytoken`. Docker Hub's key there is `https://index.docker.io/v1/`.
//!
//! **How they are used**: a registry answers 401 with `WWW-Authenticate` (RFC 7235).
//! `Basic` gets the credentials directly; `Bearer realm=..,service=..,scope=..` is
//! docker's token protocol: GET the realm with `service` and each `scope` (Basic
//! credentials when known), or, for an identity token, POST an OAuth2
//! `grant_type=refresh_token` form; the answer's `token` (or `access_token`) is then
//! sent as `Authorization: Bearer`. Tokens are cached per (registry, scope) until
//! shortly before `expires_in` (60 s when absent, as the spec says).
//!
//! Secrets never reach an error message or a `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::Error;
use crate::reference::DOCKER_HUB;

/// The key docker uses for Docker Hub in `config.json` and with helpers.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry. `Debug` shows the user name only.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password (or personal access token).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An OAuth2 refresh token from an earlier login (`identitytoken`).
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// `user`/`password` credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization` value for Basic authentication, when these are Basic.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                B64.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }
}

/// Something that knows credentials by registry host.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// Credentials for `registry` (`docker.io`, `127.0.0.1:5000`), if any.
    fn get(&self, registry: &str) -> Result<Option<Credentials>, Error>;
}

/// No credentials at all (anonymous access).
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl CredentialSource for Anonymous {
    fn get(&self, _registry: &str) -> Result<Option<Credentials>, Error> {
        Ok(None)
    }
}

/// Fixed credentials per registry host (tests, or credentials given on the command line).
#[derive(Debug, Clone, Default)]
pub struct StaticCredentials(pub BTreeMap<String, Credentials>);

impl StaticCredentials {
    /// One registry's credentials.
    pub fn single(registry: &str, creds: Credentials) -> Self {
        StaticCredentials(BTreeMap::from([(registry.to_string(), creds)]))
    }
}

impl CredentialSource for StaticCredentials {
    fn get(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        Ok(self.0.get(registry).cloned())
    }
}

/// Docker's `config.json`, read (and written, for login/logout) as the docker CLI does.
#[derive(Debug, Clone)]
pub struct DockerAuth {
    path: PathBuf,
    // Where `docker-credential-*` programs are looked for; `PATH` when `None`.
    helper_dir: Option<PathBuf>,
}

impl DockerAuth {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_location() -> DockerAuth {
        let dir = match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".docker"),
        };
        DockerAuth {
            path: dir.join("config.json"),
            helper_dir: None,
        }
    }

    /// A specific `config.json`.
    pub fn at(path: &Path) -> DockerAuth {
        DockerAuth {
            path: path.to_path_buf(),
            helper_dir: None,
        }
    }

    /// Look for `docker-credential-*` helpers in `dir` instead of on `PATH`.
    pub fn with_helper_dir(mut self, dir: &Path) -> DockerAuth {
        self.helper_dir = Some(dir.to_path_buf());
        self
    }

    fn helper(&self, name: String) -> Helper<'_> {
        Helper {
            name,
            dir: self.helper_dir.as_deref(),
        }
    }

    /// The file this reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_err(&self, reason: impl Into<String>) -> Error {
        Error::CredentialsFile {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The file as a JSON object (empty when missing).
    fn read(&self) -> Result<Map<String, Value>, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(e) => return Err(self.file_err(e.to_string())),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(self.file_err("not a JSON object")),
            // The decoder's message has a position, never content.
            Err(e) => Err(self.file_err(format!("invalid JSON: {e}"))),
        }
    }

    /// Write the file atomically (temp file in the same directory, mode 0600, rename).
    fn write(&self, map: &Map<String, Value>) -> Result<(), Error> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.file_err(e.to_string()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| self.file_err(e.to_string()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| self.file_err(e.to_string()))?;
        }
        let text = serde_json::to_vec_pretty(map).map_err(|e| self.file_err(e.to_string()))?;
        tmp.write_all(&text)
            .and_then(|()| tmp.write_all(b"\n"))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| self.file_err(e.to_string()))?;
        tmp.persist(&self.path)
            .map_err(|e| self.file_err(e.error.to_string()))?;
        Ok(())
    }

    /// The helper responsible for `registry`, if any (`credHelpers` first, then
    /// `credsStore`).
    fn helper_for(map: &Map<String, Value>, registry: &str) -> Option<String> {
        let helpers = map.get("credHelpers").and_then(Value::as_object);
        for key in auth_keys(registry) {
            if let Some(h) = helpers.and_then(|h| h.get(&key)).and_then(Value::as_str) {
                return Some(h.to_string());
            }
        }
        map.get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Save credentials for `registry` (`pybuild login`): through the configured
    /// helper when there is one, else into `auths` (unknown fields kept).
    pub fn store_credentials(&self, registry: &str, creds: &Credentials) -> Result<(), Error> {
        let mut map = self.read()?;
        let key = server_key(registry);
        if let Some(helper) = Self::helper_for(&map, registry) {
            let (user, secret) = match creds {
                Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
                Credentials::IdentityToken(t) => ("<token>", t.as_str()),
            };
            let input = serde_json::json!({"ServerURL": key, "Username": user, "Secret": secret});
            self.helper(helper)
                .run("store", registry, input.to_string().as_bytes())?;
            return Ok(());
        }
        let auths = map
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        let Some(auths) = auths.as_object_mut() else {
            return Err(self.file_err("auths is not an object"));
        };
        // Drop other spellings of the same registry so only one entry answers.
        for k in auth_keys(registry) {
            auths.remove(&k);
        }
        let mut entry = Map::new();
        match creds {
            Credentials::Basic { username, password } => {
                entry.insert(
                    "auth".into(),
                    Value::String(B64.encode(format!("{username}:{password}"))),
                );
            }
            Credentials::IdentityToken(t) => {
                entry.insert("identitytoken".into(), Value::String(t.clone()));
            }
        }
        auths.insert(key, Value::Object(entry));
        self.write(&map)
    }

    /// Forget `registry`'s credentials (`pybuild logout`). Returns whether any were
    /// stored in the file (a helper is asked to erase regardless).
    pub fn remove_credentials(&self, registry: &str) -> Result<bool, Error> {
        let mut map = self.read()?;
        if let Some(helper) = Self::helper_for(&map, registry) {
            self.helper(helper)
                .run("erase", registry, server_key(registry).as_bytes())?;
        }
        let mut removed = false;
        if let Some(auths) = map.get_mut("auths").and_then(Value::as_object_mut) {
            for k in auth_keys(registry) {
                removed |= auths.remove(&k).is_some();
            }
        }
        if removed {
            self.write(&map)?;
        }
        Ok(removed)
    }
}

impl CredentialSource for DockerAuth {
    fn get(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        let map = self.read()?;
        if let Some(helper) = Self::helper_for(&map, registry) {
            return self.helper(helper).get(registry);
        }
        let Some(auths) = map.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        // Exact keys first, then any key whose host part matches (docker's
        // ConvertToHostname: `https://host/v1/` → `host`).
        let wanted = auth_keys(registry);
        let entry = wanted.iter().find_map(|k| auths.get(k)).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| wanted.contains(&hostname_of(k).to_string()))
                .map(|(_, v)| v)
        });
        let Some(entry) = entry.and_then(Value::as_object) else {
            return Ok(None);
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credentials::IdentityToken(token.to_string())));
        }
        if let Some(auth) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let decoded = B64
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    self.file_err(format!(
                        "auths entry for {registry}: auth is not base64 text"
                    ))
                })?;
            let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                self.file_err(format!(
                    "auths entry for {registry}: auth is not user:password"
                ))
            })?;
            return Ok(Some(Credentials::basic(user, pass)));
        }
        // Older files keep username/password in clear.
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Some(Credentials::basic(u, p)));
        }
        Ok(None)
    }
}

/// The key a registry is stored under.
fn server_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Every spelling under which `registry`'s credentials may be found.
fn auth_keys(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB {
        [
            DOCKER_HUB_AUTH_KEY,
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ]
        .map(str::to_string)
        .to_vec()
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

/// `https://host/path` → `host`.
fn hostname_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// A `docker-credential-<name>` program.
struct Helper<'a> {
    name: String,
    dir: Option<&'a Path>,
}

impl Helper<'_> {
    /// Run `docker-credential-<name> <action>` with `input` on stdin; its stdout.
    fn run(&self, action: &str, registry: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let helper = self.name.as_str();
        let fail = |reason: String| Error::CredentialHelper {
            helper: helper.to_string(),
            registry: registry.to_string(),
            reason,
        };
        if !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(fail("invalid helper name".into()));
        }
        let program = format!("docker-credential-{helper}");
        let program = match self.dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut child = Command::new(program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| fail(format!("writing to it: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for it: {e}")))?;
        if !out.status.success() {
            // Helpers print their error on stdout (credentials-not-found) or stderr;
            // neither carries the secret.
            let text = String::from_utf8_lossy(if out.stdout.is_empty() {
                &out.stderr
            } else {
                &out.stdout
            })
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
            return Err(fail(format!("{action} failed ({}): {text}", out.status)));
        }
        Ok(out.stdout)
    }

    fn get(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        let helper = self.name.as_str();
        let out = match self.run("get", registry, server_key(registry).as_bytes()) {
            Ok(out) => out,
            // The helpers' protocol: this message means "nothing stored".
            Err(Error::CredentialHelper { reason, .. })
                if reason.contains("credentials not found") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let value: Value = serde_json::from_slice(&out).map_err(|e| Error::CredentialHelper {
            helper: helper.to_string(),
            registry: registry.to_string(),
            reason: format!("get: invalid JSON answer: {e}"),
        })?;
        let user = value.get("Username").and_then(Value::as_str).unwrap_or("");
        let secret = value.get("Secret").and_then(Value::as_str).unwrap_or("");
        if secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if user == "<token>" {
            Credentials::IdentityToken(secret.to_string())
        } else {
            Credentials::basic(user, secret)
        }))
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters, names lower-cased (`realm`, `service`, `scope`).
    pub params: BTreeMap<String, String>,
}

/// Parse a `WWW-Authenticate` value (RFC 7235 `challenge` list; quoted strings with
/// backslash escapes). Malformed parts are skipped rather than fatal: the caller
/// only needs the scheme and the few parameters it knows.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let s = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t' || s[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && !matches!(s[*i], b' ' | b'\t' | b',' | b'=' | b'"') {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= s.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            i += 1;
            continue;
        }
        // `name=` continues the current challenge; a bare word starts a new one.
        let mut j = i;
        while j < s.len() && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < s.len() && s[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
                i += 1;
            }
            let value = if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch_len = header[i..].chars().next().map_or(1, char::len_utf8);
                    v.push_str(&header[i..i + ch_len]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            if let Some(last) = out.last_mut() {
                last.params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::basic("alice", "s3cret-pass");
        let text = format!("{c:?}");
        assert!(text.contains("alice") && !text.contains("s3cret"), "{text}");
        let t = Credentials::IdentityToken("tok-123".into());
        assert!(!format!("{t:?}").contains("tok-123"));
    }

    #[test]
    fn challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");
        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry Realm");
        let c =
            parse_challenges(r#"Basic realm="a\"b", Bearer realm=x, error="insufficient_scope""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params["realm"], "a\"b");
        assert_eq!(c[1].params["realm"], "x");
        assert_eq!(c[1].params["error"], "insufficient_scope");
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn docker_config_reading_and_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"https://reg.example/v1/":{"identitytoken":"idt"}},"psFormat":"x"}"#,
        )
        .expect("write");
        let a = DockerAuth::at(&path);
        assert_eq!(
            a.get("docker.io").expect("get"),
            Some(Credentials::basic("u", "p"))
        );
        assert_eq!(
            a.get("reg.example").expect("get"),
            Some(Credentials::IdentityToken("idt".into()))
        );
        assert_eq!(a.get("other:5000").expect("get"), None);

        a.store_credentials(
            "127.0.0.1:5000",
            &Credentials::basic("bob", "pw:with:colons"),
        )
        .expect("store");
        assert_eq!(
            a.get("127.0.0.1:5000").expect("get"),
            Some(Credentials::basic("bob", "pw:with:colons"))
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("psFormat"), "unknown fields kept: {text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        assert!(a.remove_credentials("127.0.0.1:5000").expect("remove"));
        assert!(!a.remove_credentials("127.0.0.1:5000").expect("remove"));
        assert_eq!(a.get("127.0.0.1:5000").expect("get"), None);
        assert_eq!(
            a.get("docker.io").expect("get"),
            Some(Credentials::basic("u", "p"))
        );
    }

    #[test]
    fn bad_file_errors_name_the_file_not_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"!!!secretish"}}}"#).expect("write");
        let err = DockerAuth::at(&path)
            .get("h")
            .expect_err("bad base64")
            .to_string();
        assert!(
            err.contains("config.json") && !err.contains("secretish"),
            "{err}"
        );
        // A missing file is simply empty.
        let none = DockerAuth::at(&dir.path().join("nope.json"));
        assert_eq!(none.get("h").expect("get"), None);
    }

    #[test]
    fn credential_helpers_are_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let helper = bin.join("docker-credential-pbtest");
        // Answers `get` for one server; anything else is "not found".
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = h.example ]; then\n  echo '{\"ServerURL\":\"h.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        )
        .expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credHelpers":{"h.example":"pbtest","g.example":"pbtest"}}"#,
        )
        .expect("write");
        let a = DockerAuth::at(&path).with_helper_dir(&bin);
        assert_eq!(
            a.get("h.example").expect("get"),
            Some(Credentials::basic("hu", "hs"))
        );
        // "credentials not found" is no credentials, not an error.
        assert_eq!(a.get("g.example").expect("get"), None);
        // A registry without a helper entry falls back to auths (none here).
        assert_eq!(a.get("z.example").expect("get"), None);
        // A missing helper program is a clear error naming it.
        std::fs::write(&path, r#"{"credsStore":"absent"}"#).expect("write");
        let err = a.get("q.example").expect_err("missing helper").to_string();
        assert!(
            err.contains("docker-credential-absent") && err.contains("q.example"),
            "{err}"
        );
    }
}
