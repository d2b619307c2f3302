//! Loopback helpers: a free port, a child process that dies with its owner, and a
//! static file server.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::tool;
use crate::http;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed (and reaped) on drop, also when the test fails.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A static file server on `127.0.0.1` (`python3 -m http.server`), stopped on drop.
#[derive(Debug)]
pub struct FileServer {
    _child: KillOnDrop,
    port: u16,
}

impl FileServer {
    /// Serves `dir`, discarding the server's log; returns once it answers.
    #[track_caller]
    pub fn start(dir: &Path) -> FileServer {
        Self::serve(dir, None)
    }

    /// Serves `dir`, writing the server's log (one line per request) to `log`.
    #[track_caller]
    pub fn start_logged(dir: &Path, log: &Path) -> FileServer {
        Self::serve(dir, Some(log))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address, `"127.0.0.1:PORT"`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    #[track_caller]
    fn serve(dir: &Path, log: Option<&Path>) -> FileServer {
        // The port is free when picked but may be taken before python binds it.
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = tool("python3");
            cmd.args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir);
            match log {
                Some(log) => {
                    let file = fs::File::create(log)
                        .unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
                    cmd.stdout(file.try_clone().expect("clone the log file"))
                        .stderr(file)
                }
                None => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
            };
            let child = cmd.spawn().expect("start python3 -m http.server");
            let mut server = KillOnDrop(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(http::get(&format!("127.0.0.1:{port}"), "/", &[]), Ok(r) if r.status == 200)
                {
                    return FileServer {
                        _child: server,
                        port,
                    };
                }
                if server.0.try_wait().expect("poll http.server").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "python3 -m http.server did not start serving {}",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_server_serves_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("hello.txt"), "hello\n").unwrap();
        let server = FileServer::start(dir.path());
        let got = http::get(&server.host(), "/hello.txt", &[]).unwrap();
        assert_eq!((got.status, got.text().as_str()), (200, "hello\n"));
        let port = server.port();
        drop(server);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
