//! An HTTP/1.1 forwarding proxy that injects faults in front of a registry.
//!
//! Each client connection carries one request: the proxy reads it (request bodies with
//! `Content-Length` or chunked framing), forwards it upstream with `Connection: close`,
//! reads the whole answer and returns it to the client with `Connection: close` and an
//! explicit `Content-Length`. Everything else passes through untouched (`Range` requests
//! included), except `Location` headers naming the upstream host, which are rewritten to
//! the proxy so that follow-up requests (upload sessions) also pass through it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::{content_length, is_chunked, read_chunked, read_status_head, response_has_body};
use crate::http_server::{Acceptor, Request, bind_loopback, read_request};

/// A fault the proxy injects into matching requests (those whose request target contains
/// `path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    None,
    /// Answer 500 this many times for requests whose path contains `path`, then forward.
    ServerError {
        /// The substring of the request target to match.
        path: String,
        /// How many matching requests get a 500.
        times: usize,
    },
    /// Forward, but flip a byte of the response body (digest mismatch) for matching paths.
    CorruptBody {
        /// The substring of the request target to match.
        path: String,
    },
    /// Send only the first `after` bytes of the matching response body, then close the
    /// connection (once).
    CutAfter {
        /// The substring of the request target to match.
        path: String,
        /// How many body bytes to send before closing.
        after: usize,
    },
    /// Answer 429 with `Retry-After: secs` this many times.
    TooManyRequests {
        /// The substring of the request target to match.
        path: String,
        /// How many matching requests get a 429.
        times: usize,
        /// The `Retry-After` value, in seconds.
        secs: u64,
    },
    /// Delay the response headers by this long (slow-loris / timeout tests).
    Delay {
        /// The substring of the request target to match.
        path: String,
        /// The delay, in milliseconds.
        millis: u64,
    },
    /// Send the matching response body one byte every `millis` (a slow but never
    /// silent server: no single read ever times out).
    Trickle {
        /// The substring of the request target to match.
        path: String,
        /// The pause between bytes, in milliseconds.
        millis: u64,
    },
}

impl Fault {
    fn path(&self) -> Option<&str> {
        match self {
            Fault::None => None,
            Fault::ServerError { path, .. }
            | Fault::CorruptBody { path }
            | Fault::CutAfter { path, .. }
            | Fault::TooManyRequests { path, .. }
            | Fault::Delay { path, .. }
            | Fault::Trickle { path, .. } => Some(path),
        }
    }
}

/// What to do with one request, decided (and counted down) under the lock.
enum Action {
    Forward,
    Answer500,
    Answer429(u64),
    Corrupt,
    Cut(usize),
    Delay(Duration),
    Trickle(Duration),
}

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    requests: Mutex<Vec<String>>,
    upstream: String,
    host: String,
}

impl Shared {
    fn action_for(&self, target: &str) -> Action {
        let Ok(mut fault) = self.fault.lock() else {
            return Action::Forward;
        };
        if !fault.path().is_some_and(|p| target.contains(p)) {
            return Action::Forward;
        }
        match &mut *fault {
            Fault::None => Action::Forward,
            Fault::ServerError { times, .. } if *times > 0 => {
                *times -= 1;
                Action::Answer500
            }
            Fault::TooManyRequests { times, secs, .. } if *times > 0 => {
                *times -= 1;
                Action::Answer429(*secs)
            }
            Fault::ServerError { .. } | Fault::TooManyRequests { .. } => Action::Forward,
            Fault::CorruptBody { .. } => Action::Corrupt,
            Fault::CutAfter { after, .. } => {
                let after = *after;
                *fault = Fault::None;
                Action::Cut(after)
            }
            Fault::Delay { millis, .. } => Action::Delay(Duration::from_millis(*millis)),
            Fault::Trickle { millis, .. } => Action::Trickle(Duration::from_millis(*millis)),
        }
    }
}

/// A fault-injecting proxy on its own `127.0.0.1` port; dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    shared: Arc<Shared>,
    _acceptor: Acceptor,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`"host:port"`), with no fault set.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = bind_loopback("fault proxy");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            requests: Mutex::new(Vec::new()),
            upstream: upstream.to_owned(),
            host: format!("127.0.0.1:{port}"),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            Acceptor::start(listener, move |stream| {
                let _ = handle(stream, &shared);
            })
        };
        FaultProxy {
            shared,
            _acceptor: acceptor,
        }
    }

    /// The proxy's address, `"127.0.0.1:PORT"`.
    pub fn host(&self) -> String {
        self.shared.host.clone()
    }

    /// The upstream address requests are forwarded to.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Replaces the current fault; it applies to the next matching request(s).
    pub fn set(&self, fault: Fault) {
        if let Ok(mut current) = self.shared.fault.lock() {
            *current = fault;
        }
    }

    /// `"METHOD target"` of every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// Headers that describe a connection or a message's framing, which the proxy redoes.
fn is_hop_header(name: &str) -> bool {
    [
        "connection",
        "proxy-connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "expect",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Serves the one request of a client connection.
fn handle(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    // Clients that try HTTPS first (skopeo with --tls-verify=false does) must get a quick
    // plain-HTTP answer to their TLS handshake record, as Go's servers give, so that they
    // fall back to HTTP instead of waiting for a timeout.
    if reader.fill_buf()?.first() == Some(&0x16) {
        client.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )?;
        return client.shutdown(Shutdown::Both);
    }
    let Some(Request {
        method,
        target,
        headers,
        body,
    }) = read_request(&mut reader, &mut client)?
    else {
        return Ok(());
    };
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(format!("{method} {target}"));
    }
    let has_body = body.is_some();
    let body = body.unwrap_or_default();

    let action = shared.action_for(&target);
    match action {
        Action::Answer500 => {
            return answer_error(
                &mut client,
                "500 Internal Server Error",
                "",
                r#"{"errors":[{"code":"UNKNOWN","message":"fault injected by the test proxy"}]}"#,
            );
        }
        Action::Answer429(secs) => {
            return answer_error(
                &mut client,
                "429 Too Many Requests",
                &format!("Retry-After: {secs}\r\n"),
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limit injected by the test proxy"}]}"#,
            );
        }
        _ => {}
    }

    // Forward upstream, one request per connection.
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers.iter().filter(|(n, _)| !is_hop_header(n)) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if has_body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&body)?;
    upstream.flush()?;

    let mut upstream_reader = BufReader::new(upstream);
    let (status_line, status, response_headers) = read_status_head(&mut upstream_reader)?;
    let bodyless = method == "HEAD" || !response_has_body(status);
    let mut response_body = if bodyless {
        Vec::new()
    } else if is_chunked(&response_headers) {
        read_chunked(&mut upstream_reader)?
    } else if let Some(len) = content_length(&response_headers) {
        let mut body = vec![0; len];
        upstream_reader.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        upstream_reader.read_to_end(&mut body)?;
        body
    };

    let mut out = format!("{status_line}\r\n");
    for (name, value) in &response_headers {
        let keep_length = bodyless && name.eq_ignore_ascii_case("content-length");
        if is_hop_header(name) && !keep_length {
            continue;
        }
        if name.eq_ignore_ascii_case("location") {
            let value = value.replace(&shared.upstream, &shared.host);
            out.push_str(&format!("{name}: {value}\r\n"));
        } else {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !bodyless {
        out.push_str(&format!("Content-Length: {}\r\n", response_body.len()));
    }
    out.push_str("Connection: close\r\n\r\n");

    match action {
        Action::Delay(delay) => std::thread::sleep(delay),
        Action::Corrupt if !response_body.is_empty() => {
            let middle = response_body.len() / 2;
            response_body[middle] ^= 0x01;
        }
        Action::Trickle(pause) => {
            client.write_all(out.as_bytes())?;
            for byte in &response_body {
                if client.write_all(std::slice::from_ref(byte)).is_err() {
                    // The client gave up: that is what the test waits for.
                    return Ok(());
                }
                let _ = client.flush();
                std::thread::sleep(pause);
            }
            let _ = client.shutdown(Shutdown::Write);
            return Ok(());
        }
        Action::Cut(after) => {
            response_body.truncate(after);
            client.write_all(out.as_bytes())?;
            client.write_all(&response_body)?;
            client.flush()?;
            return client.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    client.write_all(out.as_bytes())?;
    client.write_all(&response_body)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// Answers with an error status and a small JSON body in the registry's error format.
fn answer_error(client: &mut TcpStream, status: &str, extra: &str, body: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes())?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
