//! Plain HTTP(S) downloads for `ADD https://...`: the same TLS trust, per-host CA files
//! and proxy rules as registry traffic, streamed to the caller's writer and hashed on
//! the way.

use std::io::{self, Read, Write};

use pybuild_oci::Digest;
use sha2::{Digest as _, Sha256};

use crate::client::Client;
use crate::error::Error;

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// sha256 of the body.
    pub digest: Digest,
    /// Bytes written.
    pub size: u64,
    /// The `Last-Modified` header, in seconds since the epoch (BuildKit uses it as
    /// the file's mtime).
    pub last_modified: Option<i64>,
    /// The `ETag` header, as sent (quotes and `W/` included).
    pub etag: Option<String>,
}

/// The largest download accepted (ADD is for files, not for streams without end).
pub const DOWNLOAD_LIMIT: u64 = 16 << 30;

/// GET `url` (http or https), writing the body to `out`. With an earlier download's
/// `ETag` and `Last-Modified` (`etag`, `last_modified`), the request is conditional
/// (`If-None-Match`, `If-Modified-Since`: RFC 9110, 13.1.2 and 13.1.3) and `Ok(None)`
/// means `304 Not Modified`: the earlier body is current and nothing was written.
pub fn download_if_changed(
    client: &Client,
    url: &str,
    etag: Option<&str>,
    last_modified: Option<i64>,
    out: &mut dyn Write,
) -> Result<Option<Download>, Error> {
    let bad = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(bad("no host in the URL".into())),
    };
    let http = client.http(&client.config().endpoint(&host))?;
    let mut request = http.get(parsed);
    if let Some(etag) = etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let since = last_modified
        .and_then(|secs| u64::try_from(secs).ok())
        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    if let Some(since) = since {
        request = request.header(
            reqwest::header::IF_MODIFIED_SINCE,
            httpdate::fmt_http_date(since),
        );
    }
    let conditional = etag.is_some() || since.is_some();
    let mut response = request.send().map_err(|e| bad(e.to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED {
        if conditional {
            return Ok(None);
        }
        return Err(bad(
            "the server answered 304 Not Modified to an unconditional GET".into(),
        ));
    }
    if !response.status().is_success() {
        return Err(bad(format!("the server answered {}", response.status())));
    }
    let last_modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(format!("reading the body: {e}"))),
        };
        size += n as u64;
        if size > DOWNLOAD_LIMIT {
            return Err(bad(format!("larger than {DOWNLOAD_LIMIT} bytes")));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| bad(format!("writing the file: {e}")))?;
    }
    Ok(Some(Download {
        digest: Digest::from_sha256(hasher.finalize().into()),
        size,
        last_modified,
        etag,
    }))
}
