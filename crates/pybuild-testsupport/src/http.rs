//! A deliberately small blocking HTTP/1.1 client for tests, plus the message parsing
//! shared with the test servers (see `http_server` for their side).
//!
//! Every request is sent with `Connection: close` and the response is read to the end of
//! the stream, so no connection state is kept between calls. Chunked response bodies are
//! decoded; `HEAD` responses and `1xx`/`204`/`304` statuses carry no body.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. `200`.
    pub status: u16,
    /// The header fields in the order received (names as sent by the server).
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `host` (`"127.0.0.1:PORT"`) and reads the whole response.
///
/// `path` is the request target (path and query). `headers` are sent as given; `Host`,
/// `Connection: close` and (when `body` is not empty or the method usually has one)
/// `Content-Length` are added. Times out after 30 seconds of silence.
pub fn request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_response_head(&mut reader)?;
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw)?;
    let body = if method == "HEAD" || !response_has_body(status) {
        Vec::new()
    } else if is_chunked(&headers) {
        decode_chunked(&raw)?
    } else if let Some(len) = content_length(&headers) {
        raw.truncate(len.min(raw.len()));
        raw
    } else {
        raw
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET` with optional extra headers; a convenience over [`request`].
pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    request(host, "GET", path, headers, &[])
}

/// The first header named `name` (case-insensitive) in `headers`.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a response with this status may carry a body.
pub(crate) fn response_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

/// Whether the headers declare `Transfer-Encoding: chunked`.
pub(crate) fn is_chunked(headers: &[(String, String)]) -> bool {
    find_header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The declared `Content-Length`, if any and well-formed.
pub(crate) fn content_length(headers: &[(String, String)]) -> Option<usize> {
    find_header(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

/// Reads one CRLF- (or LF-) terminated line without the terminator; `None` at EOF.
pub(crate) fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// Reads header lines up to the blank line.
pub(crate) fn read_headers(reader: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof in headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
}

/// Reads a status line and headers, skipping interim `1xx` responses.
pub(crate) fn read_response_head(
    reader: &mut impl BufRead,
) -> io::Result<(u16, Vec<(String, String)>)> {
    let (_, status, headers) = read_status_head(reader)?;
    Ok((status, headers))
}

/// A response's final status line as received, its status code and its headers.
pub(crate) type StatusHead = (String, u16, Vec<(String, String)>);

/// [`read_response_head`], also returning the final status line as received (the
/// fault proxy passes it on unchanged).
pub(crate) fn read_status_head(reader: &mut impl BufRead) -> io::Result<StatusHead> {
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no status line"))?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad status: {line}"))
            })?;
        let headers = read_headers(reader)?;
        if !(100..200).contains(&status) {
            return Ok((line, status, headers));
        }
    }
}

/// Removes the chunked transfer coding from a complete body (trailers are dropped).
pub(crate) fn decode_chunked(raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut reader = BufReader::new(raw);
    read_chunked(&mut reader)
}

/// Reads a chunked body from `reader` up to and including its trailer section.
pub(crate) fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof in chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size: {line}"),
            )
        })?;
        if size == 0 {
            // Trailer fields, then the final blank line.
            while let Some(line) = read_line(reader)? {
                if line.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_line(reader)?;
    }
}
