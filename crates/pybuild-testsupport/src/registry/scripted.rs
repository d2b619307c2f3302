//! A scripted registry: canned answers for hostile-server tests.
//!
//! A real registry will not serve a 5 MiB manifest, a blob whose length lies or a
//! redirect loop; [`ScriptedRegistry`] does. Each request target is looked up in a
//! table of [`Canned`] answers (exact match on the path, query ignored); anything else
//! gets `404` with the registry's error body. `GET /v2/` answers `200 {}` unless
//! scripted otherwise. One request per connection.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http_server::{Acceptor, Request, bind_loopback, read_request};

/// One canned answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canned {
    /// A complete response. `Content-Length` is the body's length unless
    /// `content_length` overrides it (a lie); the connection closes after the body.
    Answer {
        /// Status code.
        status: u16,
        /// Extra header lines (`name`, `value`).
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
        /// A `Content-Length` to announce instead of the body's real length.
        content_length: Option<u64>,
    },
    /// `302` to `location` (a path on this server, or an absolute URL).
    Redirect {
        /// Where to.
        location: String,
    },
    /// Send the status line, then one header byte every `every_millis` for
    /// `total_millis` without ever finishing the headers (slow loris).
    SlowHeaders {
        /// Pause between bytes.
        every_millis: u64,
        /// How long to keep dribbling before closing.
        total_millis: u64,
    },
}

impl Canned {
    /// `200` with a body and a `Content-Type`.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Canned {
        Canned::Answer {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            content_length: None,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    routes: Mutex<HashMap<String, Canned>>,
    requests: Mutex<Vec<String>>,
}

/// A scripted HTTP/1.1 server on its own `127.0.0.1` port; dropping it stops it.
#[derive(Debug)]
pub struct ScriptedRegistry {
    shared: Arc<Shared>,
    acceptor: Acceptor,
}

impl ScriptedRegistry {
    /// Starts the server with no routes but `GET /v2/`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start() -> ScriptedRegistry {
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            Acceptor::start(bind_loopback("scripted registry"), move |stream| {
                let _ = serve(stream, &shared);
            })
        };
        ScriptedRegistry { shared, acceptor }
    }

    /// The server's address, `"127.0.0.1:PORT"`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.acceptor.port())
    }

    /// Answers requests for `path` (e.g. `/v2/x/manifests/latest`) with `canned`.
    pub fn route(&self, path: &str, canned: Canned) {
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.insert(path.to_owned(), canned);
        }
    }

    /// Forgets every route.
    pub fn clear(&self) {
        if let Ok(mut routes) = self.shared.routes.lock() {
            routes.clear();
        }
    }

    /// `"METHOD target"` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

fn serve(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(Request { method, target, .. }) = read_request(&mut reader, &mut client)? else {
        return Ok(());
    };
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(format!("{method} {target}"));
    }
    let path = target.split('?').next().unwrap_or_default();
    let canned = shared
        .routes
        .lock()
        .ok()
        .and_then(|routes| routes.get(path).cloned());
    let canned = match canned {
        Some(c) => c,
        None if path == "/v2/" => Canned::ok("application/json", "{}"),
        None => Canned::Answer {
            status: 404,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"errors":[{"code":"NOT_FOUND","message":"not scripted"}]}"#.to_vec(),
            content_length: None,
        },
    };
    match canned {
        Canned::Answer {
            status,
            headers,
            body,
            content_length,
        } => {
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            let length = content_length.unwrap_or(body.len() as u64);
            head.push_str(&format!(
                "Content-Length: {length}\r\nConnection: close\r\n\r\n"
            ));
            client.write_all(head.as_bytes())?;
            if method != "HEAD" {
                client.write_all(&body)?;
            }
        }
        Canned::Redirect { location } => {
            let location = if location.starts_with('/') {
                format!("http://127.0.0.1:{}{location}", local_port(&client))
            } else {
                location
            };
            client.write_all(
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )?;
        }
        Canned::SlowHeaders {
            every_millis,
            total_millis,
        } => {
            client.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ")?;
            let mut waited = 0;
            while waited < total_millis {
                std::thread::sleep(Duration::from_millis(every_millis));
                waited += every_millis;
                if client.write_all(b"a").is_err() {
                    return Ok(());
                }
            }
        }
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

fn local_port(stream: &TcpStream) -> u16 {
    stream.local_addr().map(|a| a.port()).unwrap_or_default()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}
