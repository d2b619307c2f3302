//! A minimal Docker registry token server (the `auth.token` flow of distribution).
//!
//! It answers `GET /token?service=..&scope=type:name:actions` on its own loopback port.
//! Requests must carry HTTP Basic credentials of the one configured account; anonymous
//! or wrong credentials get `401`. The answer is `{"token", "access_token",
//! "expires_in", "issued_at"}` holding an RS256 JWT whose header carries the signing
//! certificate in `x5c`, and whose `access` claim grants every requested action of every
//! requested scope. The registry trusts the certificate through `rootcertbundle`.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use crate::http::find_header;
use crate::http_server::{Acceptor, Request, bind_loopback, read_request};

/// The `service` (JWT `aud`) the registry is configured with.
pub const SERVICE: &str = "pybuild-test-registry";
/// The `issuer` (JWT `iss`) the registry is configured with.
pub const ISSUER: &str = "pybuild-test-token-server";
/// How long issued tokens are valid, in seconds.
pub const TOKEN_LIFETIME_SECS: u64 = 300;

/// One resource and the actions granted on it (an entry of the JWT `access` claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The resource type, e.g. `repository`.
    pub kind: String,
    /// The resource name, e.g. `library/alpine`.
    pub name: String,
    /// The actions, e.g. `["pull", "push"]`.
    pub actions: Vec<String>,
}

impl Access {
    /// Parses a scope string `type:name:actions` (actions separated by commas).
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Access {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "type": self.kind, "name": self.name, "actions": self.actions })
    }
}

/// The process-wide signing key and its self-signed certificate (DER), made once: RSA
/// key generation is the slow part.
fn signing_material() -> &'static (RsaPrivateKey, Vec<u8>, String) {
    static MATERIAL: OnceLock<(RsaPrivateKey, Vec<u8>, String)> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        let mut rng = rsa::rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, 2048).expect("generate an RSA key");
        let signer = SigningKey::<Sha256>::new(key.clone());
        let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())
            .expect("encode the public key");
        let now = SystemTime::now();
        let validity = Validity {
            not_before: Time::try_from(now - Duration::from_secs(3600)).expect("time"),
            not_after: Time::try_from(now + Duration::from_secs(10 * 24 * 3600)).expect("time"),
        };
        let subject: Name = "CN=pybuild test token issuer"
            .parse()
            .expect("subject name");
        let builder = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(1u32),
            validity,
            subject,
            spki,
            &signer,
        )
        .expect("certificate builder");
        let certificate = builder.build::<Signature>().expect("sign the certificate");
        let der = certificate.to_der().expect("encode the certificate");
        let pem = certificate
            .to_pem(LineEnding::LF)
            .expect("encode the certificate as PEM");
        (key, der, pem)
    })
}

/// The PEM certificate the registry must trust (`auth.token.rootcertbundle`).
pub fn certificate_pem() -> &'static str {
    &signing_material().2
}

/// Signs a token for `subject` granting `access`, valid from now for
/// [`TOKEN_LIFETIME_SECS`]. Tests can also use it to forge tokens the registry accepts.
pub fn sign_token(subject: &str, access: &[Access]) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (key, der, _) = signing_material();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(der)] });
    let jti = format!(
        "{now:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + TOKEN_LIFETIME_SECS,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": jti,
        "access": access.iter().map(Access::to_json).collect::<Vec<_>>(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// A token server for one account, on its own `127.0.0.1` port; dropping it stops it.
#[derive(Debug)]
pub struct TokenServer {
    requests: Arc<Mutex<Vec<String>>>,
    acceptor: Acceptor,
}

impl TokenServer {
    /// Starts a token server that grants tokens to `user` with `password`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start(user: &str, password: &str) -> TokenServer {
        // Make the key before answering anything, so the first request is not slow.
        signing_material();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (user, password) = (user.to_owned(), password.to_owned());
        let acceptor = {
            let requests = Arc::clone(&requests);
            Acceptor::start(bind_loopback("token server"), move |stream| {
                let _ = serve(stream, &user, &password, &requests);
            })
        };
        TokenServer { requests, acceptor }
    }

    /// The server's address, `"127.0.0.1:PORT"`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.acceptor.port())
    }

    /// The realm URL the registry sends clients to: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.host())
    }

    /// `"METHOD target STATUS"` of every request answered so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Answers one request on `stream`.
fn serve(
    mut stream: TcpStream,
    user: &str,
    password: &str,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let Some(Request {
        method,
        target,
        headers,
        ..
    }) = read_request(&mut reader, &mut stream)?
    else {
        return Ok(());
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, extra, body) = if method != "GET" || path != "/token" {
        (404, "", r#"{"error":"not found"}"#.to_owned())
    } else if !credentials_match(find_header(&headers, "authorization"), user, password) {
        (
            401,
            "WWW-Authenticate: Basic realm=\"pybuild-test-token\"\r\n",
            r#"{"error":"unauthorized"}"#.to_owned(),
        )
    } else {
        let params = parse_query(query);
        let access: Vec<Access> = params
            .get("scope")
            .into_iter()
            .flatten()
            .flat_map(|s| s.split(' '))
            .filter_map(Access::parse_scope)
            .collect();
        let token = sign_token(user, &access);
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECS,
        });
        (200, "", body.to_string())
    };
    if let Ok(mut log) = log.lock() {
        log.push(format!("{method} {target} {status}"));
    }
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Whether an `Authorization` header carries Basic credentials for `user`/`password`.
fn credentials_match(header: Option<&str>, user: &str, password: &str) -> bool {
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{user}:{password}").as_bytes()
}

/// The query's parameters, percent-decoded, each name with all its values.
fn parse_query(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(percent_decode(name))
            .or_default()
            .push(percent_decode(value));
    }
    params
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_queries_parse() {
        let access = Access::parse_scope("repository:a/b:pull,push").unwrap();
        assert_eq!(access.kind, "repository");
        assert_eq!(access.name, "a/b");
        assert_eq!(access.actions, ["pull", "push"]);
        let params =
            parse_query("service=x&scope=repository%3Aa%2Fb%3Apull&scope=registry:catalog:*");
        assert_eq!(params["scope"].len(), 2);
        assert_eq!(params["scope"][0], "repository:a/b:pull");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
