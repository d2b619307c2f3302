//! The HTTP side: endpoints, TLS, timeouts, retries, redirects and authentication.
//!
//! Retries (idempotent requests only: GET, HEAD, manifest PUT, upload start): a
//! dropped or refused connection, a timeout, 5xx or 429 is retried up to
//! [`ClientOptions::retries`] times with exponential backoff; a 429's or 503's
//! `Retry-After` (seconds) is honoured up to [`ClientOptions::max_retry_after`].
//! A 401 triggers authentication (see [`crate::auth`]) and exactly one more attempt.
//! Redirects are followed up to [`ClientOptions::max_redirects`]; blob GETs are often
//! redirected to object storage, and the HTTP library drops `Authorization` when a
//! redirect leaves the host, so registry tokens never reach the storage service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::Value;

use crate::auth::{Challenge, CredentialSource, Credentials, parse_challenges};
use crate::config::{Endpoint, RegistryConfig, is_loopback};
use crate::{Error, Event, Progress};

/// Tunables of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to establish a connection (30 s).
    pub connect_timeout: Duration,
    /// Time allowed for the response headers and for each read of a body (60 s):
    /// an idle connection fails after this; a slow but moving one does not.
    pub read_timeout: Duration,
    /// Extra attempts for idempotent requests (4).
    pub retries: u32,
    /// First backoff delay, doubled each attempt (500 ms).
    pub backoff: Duration,
    /// Longest `Retry-After` honoured (30 s); longer ones are cut to this.
    pub max_retry_after: Duration,
    /// Redirects followed per request (10).
    pub max_redirects: usize,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 4,
            backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(30),
            max_redirects: 10,
            user_agent: format!("pybuild/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl ClientOptions {
    /// The defaults, with overrides from the environment for tests and slow networks:
    /// `PYBUILD_REGISTRY_TIMEOUT` (seconds, for both the connect and the read timeout)
    /// and `PYBUILD_REGISTRY_RETRIES` (extra attempts). Unset, empty or unparsable
    /// values keep the defaults.
    pub fn from_env() -> Self {
        let mut options = Self::default();
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        if let Some(secs) = var("PYBUILD_REGISTRY_TIMEOUT").filter(|s| *s > 0.0) {
            let timeout = Duration::from_secs_f64(secs.min(86_400.0));
            options.connect_timeout = timeout;
            options.read_timeout = timeout;
        }
        if let Some(retries) = var("PYBUILD_REGISTRY_RETRIES") {
            options.retries = retries.min(100.0) as u32;
        }
        options
    }
}

/// A registry client: settings, credentials, HTTP connections and cached tokens.
/// Shareable across threads.
#[derive(Debug)]
pub struct Client {
    config: RegistryConfig,
    creds: Arc<dyn CredentialSource>,
    options: ClientOptions,
    http: Mutex<HashMap<String, reqwest::blocking::Client>>,
    // (endpoint host, scope key) → Authorization value; scope key "" holds a
    // host-wide Basic header.
    auth: Mutex<HashMap<(String, String), CachedAuth>>,
}

#[derive(Debug, Clone)]
struct CachedAuth {
    header: String,
    expires: Option<Instant>,
}

/// What a request is about: for error messages, credentials and token scopes.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The registry as named in the reference (`docker.io`).
    pub registry: String,
    /// The repository.
    pub repository: String,
    /// `repository:<name>:<actions>` scopes a token must cover.
    pub scopes: Vec<String>,
}

impl Ctx {
    pub(crate) fn new(registry: &str, repository: &str, push: bool) -> Ctx {
        let actions = if push { "pull,push" } else { "pull" };
        Ctx {
            registry: registry.to_string(),
            repository: repository.to_string(),
            scopes: vec![format!("repository:{repository}:{actions}")],
        }
    }

    pub(crate) fn transport(&self, operation: &str, e: &reqwest::Error) -> Error {
        Error::Transport {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            operation: operation.to_string(),
            reason: describe(e),
        }
    }

    pub(crate) fn protocol(&self, operation: &str, reason: impl Into<String>) -> Error {
        Error::Protocol {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            operation: operation.to_string(),
            reason: reason.into(),
        }
    }

    /// An error for an unexpected answer, with the registry's error codes.
    pub(crate) fn status_error(&self, operation: &str, resp: Response) -> Error {
        let status = resp.status();
        let message = error_message(resp);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                operation: operation.to_string(),
                message: if message.is_empty() {
                    status.to_string()
                } else {
                    message
                },
            },
            _ => Error::Status {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                operation: operation.to_string(),
                status: status.as_u16(),
                message,
            },
        }
    }
}

/// An error's text and its causes', without the URL (which may be a pre-signed
/// storage URL after a redirect).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The distribution spec's error body (`{"errors":[{"code","message"}]}`) as one
/// line, else the start of the body.
fn error_message(resp: Response) -> String {
    use std::io::Read;
    let mut body = Vec::new();
    let _ = resp.take(64 << 10).read_to_end(&mut body);
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(errors) = v.get("errors").and_then(Value::as_array) {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
                    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                    format!("{code}: {msg}")
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
    }
    let text = String::from_utf8_lossy(&body);
    text.trim().chars().take(200).collect()
}

/// Whether a failed request may be repeated: the connection broke or timed out.
fn retryable(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect() || e.is_decode() || e.is_status())
}

impl Client {
    /// A client with default options.
    pub fn new(config: RegistryConfig, creds: Arc<dyn CredentialSource>) -> Client {
        Client::with_options(config, creds, ClientOptions::default())
    }

    /// A client with explicit options.
    pub fn with_options(
        config: RegistryConfig,
        creds: Arc<dyn CredentialSource>,
        options: ClientOptions,
    ) -> Client {
        Client {
            config,
            creds,
            options,
            http: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The HTTP client for an endpoint (built once per distinct TLS setting).
    pub(crate) fn http(&self, ep: &Endpoint) -> Result<reqwest::blocking::Client, Error> {
        let key = format!("{}|{}|{}|{:?}", ep.host, ep.http, ep.insecure, ep.ca);
        let mut clients = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::blocking::Client::builder()
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(
                self.options.max_redirects,
            ))
            .user_agent(self.options.user_agent.clone());
        if is_loopback(&ep.host) {
            // A proxy from the environment must not capture a local registry.
            b = b.no_proxy();
        }
        if ep.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        // Extra trust: the host's CA files, and SSL_CERT_FILE (which the system
        // trust store loader also honours; adding it again is harmless).
        let mut cas = ep.ca.clone();
        if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
            cas.push(f.into());
        }
        for path in cas {
            let bad = |reason: String| Error::Config {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| Error::Transport {
            registry: ep.host.clone(),
            repository: String::new(),
            operation: "setting up HTTP".into(),
            reason: describe(&e),
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Endpoints for a registry: mirrors first for pulls.
    pub(crate) fn endpoints(&self, registry: &str, pull: bool) -> Vec<Endpoint> {
        self.config.endpoints(registry, pull)
    }

    /// Where credentials for an endpoint are looked up: the registry's name for the
    /// registry itself, the mirror's host for a mirror.
    fn cred_key<'a>(ep: &'a Endpoint, ctx: &'a Ctx) -> &'a str {
        if ep.mirror { &ep.host } else { &ctx.registry }
    }

    fn cached_auth(&self, ep: &Endpoint, ctx: &Ctx) -> Option<String> {
        let cache = self.auth.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let valid = |a: &CachedAuth| a.expires.is_none_or(|t| t > now);
        cache
            .get(&(ep.host.clone(), ctx.scopes.join(" ")))
            .filter(|a| valid(a))
            .or_else(|| cache.get(&(ep.host.clone(), String::new())))
            .map(|a| a.header.clone())
    }

    /// Send a request built by `build` (called again for every attempt, so bodies
    /// can be re-opened), authenticating on 401 and retrying per the options when
    /// `idempotent`. Returns any response that is not 401 (and not a retried 5xx or
    /// 429); the caller judges its status.
    pub(crate) fn send(
        &self,
        ep: &Endpoint,
        ctx: &Ctx,
        operation: &str,
        idempotent: bool,
        progress: &dyn Progress,
        build: &dyn Fn(&reqwest::blocking::Client) -> Result<RequestBuilder, Error>,
    ) -> Result<Response, Error> {
        let http = self.http(ep)?;
        let mut attempt = 0u32;
        let mut authenticated = false;
        loop {
            let mut rb = build(&http)?;
            if let Some(h) = self.cached_auth(ep, ctx) {
                rb = rb.header(AUTHORIZATION, h);
            }
            let retry_in = match rb.send() {
                Err(e) => {
                    // A refused or unroutable connection means nobody is there: one
                    // more try covers a restart, more only delay the error. Broken
                    // connections and timeouts get the full budget.
                    let budget = if e.is_connect() {
                        self.options.retries.min(1)
                    } else {
                        self.options.retries
                    };
                    if !(idempotent && attempt < budget && retryable(&e)) {
                        return Err(ctx.transport(operation, &e));
                    }
                    progress.event(&Event::Retry {
                        operation: operation.to_string(),
                        attempt: attempt + 2,
                        reason: describe(&e),
                    });
                    self.backoff(attempt)
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    if authenticated {
                        return Err(ctx.status_error(operation, resp));
                    }
                    let challenges = resp
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(parse_challenges)
                        .collect::<Vec<_>>();
                    if challenges.is_empty() {
                        return Err(ctx.status_error(operation, resp));
                    }
                    self.authenticate(ep, ctx, operation, &challenges, &http)?;
                    authenticated = true;
                    continue;
                }
                Ok(resp)
                    if idempotent
                        && attempt < self.options.retries
                        && (resp.status().is_server_error()
                            || resp.status() == StatusCode::TOO_MANY_REQUESTS) =>
                {
                    let wait = retry_after(resp.headers())
                        .map(|d| d.min(self.options.max_retry_after))
                        .unwrap_or_else(|| self.backoff(attempt));
                    progress.event(&Event::Retry {
                        operation: operation.to_string(),
                        attempt: attempt + 2,
                        reason: format!("HTTP {}", resp.status().as_u16()),
                    });
                    wait
                }
                Ok(resp) => return Ok(resp),
            };
            std::thread::sleep(retry_in);
            attempt += 1;
        }
    }

    /// The delay before retry number `attempt + 1`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.options
            .backoff
            .saturating_mul(1u32 << attempt.min(10))
            .min(Duration::from_secs(30))
    }

    /// Answer a 401's challenges: remember a Basic header, or fetch a Bearer token.
    fn authenticate(
        &self,
        ep: &Endpoint,
        ctx: &Ctx,
        operation: &str,
        challenges: &[Challenge],
        http: &reqwest::blocking::Client,
    ) -> Result<(), Error> {
        let creds = self.creds.get(Self::cred_key(ep, ctx))?;
        let unauthorized = |message: &str| Error::Unauthorized {
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            operation: operation.to_string(),
            message: message.to_string(),
        };
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let header = self.fetch_token(ctx, operation, bearer, creds.as_ref(), http)?;
            self.auth
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((ep.host.clone(), ctx.scopes.join(" ")), header);
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let header = creds
                .as_ref()
                .and_then(Credentials::basic_header)
                .ok_or_else(|| unauthorized("the registry wants a user name and password, and none are known for it (pybuild login)"))?;
            self.auth
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    (ep.host.clone(), String::new()),
                    CachedAuth {
                        header,
                        expires: None,
                    },
                );
            return Ok(());
        }
        Err(ctx.protocol(
            operation,
            format!(
                "unsupported authentication scheme(s): {}",
                challenges
                    .iter()
                    .map(|c| c.scheme.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// Docker's token protocol: GET (or, with an identity token, POST) the realm.
    fn fetch_token(
        &self,
        ctx: &Ctx,
        operation: &str,
        challenge: &Challenge,
        creds: Option<&Credentials>,
        http: &reqwest::blocking::Client,
    ) -> Result<CachedAuth, Error> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| ctx.protocol(operation, "Bearer challenge without realm"))?;
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| ctx.protocol(operation, format!("invalid token realm: {e}")))?;
        let service = challenge.params.get("service");
        let mut scopes = ctx.scopes.clone();
        if let Some(s) = challenge.params.get("scope") {
            for s in s.split(' ') {
                if !s.is_empty() && !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
        }
        let token_op = format!("{operation}: token from {}", url.host_str().unwrap_or(""));
        let rb = match creds {
            Some(Credentials::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant (docker's oauth.md).
                let mut form = reqwest::Url::parse("http://form.invalid/")
                    .map_err(|e| ctx.protocol(operation, format!("internal: {e}")))?;
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("refresh_token", refresh);
                    q.append_pair("client_id", "pybuild");
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scopes.join(" "));
                }
                let body = form.query().unwrap_or("").to_string();
                http.post(url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                }
                let mut rb = http.get(url);
                if let Some(h) = creds.and_then(Credentials::basic_header) {
                    rb = rb.header(AUTHORIZATION, h);
                }
                rb
            }
        };
        let resp = rb.send().map_err(|e| ctx.transport(&token_op, &e))?;
        if !resp.status().is_success() {
            return Err(ctx.status_error(&token_op, resp));
        }
        let value: Value = {
            use std::io::Read;
            let mut body = Vec::new();
            resp.take(1 << 20)
                .read_to_end(&mut body)
                .map_err(|e| ctx.protocol(&token_op, format!("reading the answer: {e}")))?;
            serde_json::from_slice(&body)
                .map_err(|e| ctx.protocol(&token_op, format!("answer is not JSON: {e}")))?
        };
        let token = value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ctx.protocol(&token_op, "answer has no token"))?;
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = value
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(60)
            .max(60);
        Ok(CachedAuth {
            header: format!("Bearer {token}"),
            expires: Some(Instant::now() + Duration::from_secs(lifetime.saturating_sub(10))),
        })
    }
}

/// `Retry-After` as delay seconds (the HTTP-date form is treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = Client::new(RegistryConfig::default(), Arc::new(crate::Anonymous));
        assert_eq!(c.backoff(0), Duration::from_millis(500));
        assert_eq!(c.backoff(2), Duration::from_secs(2));
        assert_eq!(c.backoff(20), Duration::from_secs(30));
    }
}
