//! The server side shared by the test servers (token server, fault proxy, scripted
//! registry): a loopback accept loop that serves each connection on its own thread,
//! and reading one HTTP/1.1 request.

use std::io::{self, BufRead, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::http::{content_length, find_header, is_chunked, read_chunked, read_headers, read_line};

/// A loopback listener bound to a free port.
///
/// # Panics
///
/// When no loopback port can be bound; `what` names the server in the message.
pub(crate) fn bind_loopback(what: &str) -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("{what}: cannot bind a loopback port: {e}"))
}

/// An accept loop on its own thread; dropping it stops the loop (connections being
/// served finish on their own).
#[derive(Debug)]
pub(crate) struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Accepts connections on `listener`, each handed to `serve` on a new thread.
    pub(crate) fn start(
        listener: TcpListener,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> Acceptor {
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let serve = Arc::clone(&serve);
                    std::thread::spawn(move || serve(stream));
                }
            })
        };
        Acceptor {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request as a test server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// `GET`, `PUT`, ...
    pub(crate) method: String,
    /// The request target (path and query).
    pub(crate) target: String,
    /// The header fields in the order received.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, chunked coding removed; `None` when the request declared none
    /// (neither `Content-Length` nor chunked).
    pub(crate) body: Option<Vec<u8>>,
}

/// Reads one request from `reader`; `None` when the client closed before sending one.
///
/// A client sending `Expect: 100-continue` waits for the interim answer before its
/// body, so that answer is written to `client` first.
pub(crate) fn read_request(
    reader: &mut impl BufRead,
    client: &mut impl Write,
) -> io::Result<Option<Request>> {
    let Some(request_line) = read_line(reader)? else {
        return Ok(None);
    };
    let headers = read_headers(reader)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    if find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        client.flush()?;
    }
    let body = if is_chunked(&headers) {
        Some(read_chunked(reader)?)
    } else if let Some(len) = content_length(&headers) {
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        Some(body)
    } else {
        None
    };
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    fn read(raw: &[u8]) -> (Option<Request>, Vec<u8>) {
        let mut answered = Vec::new();
        let request = read_request(&mut BufReader::new(raw), &mut answered).unwrap();
        (request, answered)
    }

    #[test]
    fn reads_line_headers_and_framed_bodies() {
        let (request, answered) =
            read(b"PUT /v2/x?d=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcNEXT");
        let request = request.unwrap();
        assert_eq!(
            (request.method.as_str(), request.target.as_str()),
            ("PUT", "/v2/x?d=1")
        );
        assert_eq!(request.headers, [("Content-Length".into(), "3".into())]);
        assert_eq!(request.body.as_deref(), Some(&b"abc"[..]));
        assert!(answered.is_empty());

        let (request, _) = read(
            b"PATCH / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        );
        assert_eq!(request.unwrap().body.as_deref(), Some(&b"abc"[..]));

        let (request, _) = read(b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(request.unwrap().body, None);
        assert_eq!(read(b"").0, None);
    }

    #[test]
    fn answers_expect_continue_before_the_body() {
        let (request, answered) =
            read(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(request.unwrap().body.as_deref(), Some(&b"x"[..]));
        assert_eq!(answered, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn acceptor_serves_until_dropped() {
        let listener = bind_loopback("test");
        let acceptor = Acceptor::start(listener, |mut stream| {
            let _ = stream.write_all(b"hello");
        });
        let mut got = String::new();
        TcpStream::connect(("127.0.0.1", acceptor.port()))
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "hello");
    }
}
