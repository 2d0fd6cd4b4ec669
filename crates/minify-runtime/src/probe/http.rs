//! `--probe-http PATH`: an HTTP/1.1 GET on every exposed TCP port of the container.
//!
//! The client is a few lines written here rather than hyper, which is in the lockfile
//! (through bollard) and would fit the request itself: what the probe reports for a broken
//! answer is part of its contract (a non-HTTP answer quotes its first bytes; an answer cut
//! short after its status line still counts by that status, since the trace has seen the
//! server's work), and hyper reports both as its own errors. Switching is a behaviour
//! change to make on purpose, with the e2e probe tests' expectations checked.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ProbeOutcome, truncate_output};
use crate::Container;

impl Container {
    pub(super) async fn probe_http(&self, path: &str, timeout: Duration) -> (ProbeOutcome, String) {
        let ports = self.image().tcp_ports();
        if ports.is_empty() {
            return (
                ProbeOutcome::Error {
                    message: format!("image {} exposes no TCP port", self.image().reference),
                },
                String::new(),
            );
        }
        let Some(ip) = self.ip() else {
            return (
                ProbeOutcome::Error {
                    message: format!("container {} has no IP address", self.name()),
                },
                String::new(),
            );
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let deadline = Instant::now() + timeout;
        let mut statuses = Vec::new();
        let mut output = String::new();
        for port in ports {
            let left = deadline.saturating_duration_since(Instant::now());
            let res = tokio::time::timeout(left, http_get(ip, port, &path)).await;
            match res {
                Ok(Ok((status, line))) => {
                    let _ = writeln!(output, "port {port}: {line}");
                    statuses.push((port, status));
                }
                Ok(Err(e)) => {
                    return (
                        ProbeOutcome::Error {
                            message: format!("GET http://{ip}:{port}{path}: {e}"),
                        },
                        output,
                    );
                }
                Err(_) => {
                    let _ = writeln!(output, "port {port}: no answer");
                    return (
                        ProbeOutcome::TimedOut {
                            secs: timeout.as_secs(),
                        },
                        output,
                    );
                }
            }
        }
        (ProbeOutcome::Http { statuses }, output)
    }
}

/// GET `path` over plain HTTP/1.1 and read the whole answer (so the server finishes the work
/// the trace should see). Returns the status code and the status line.
async fn http_get(ip: std::net::IpAddr, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: minify-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        // Keep the head for parsing; the rest is read only so the server completes.
        if buf.len() < 64 * 1024 {
            buf.extend_from_slice(&chunk[..n]);
        }
        if response_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    let status = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    truncate_output(&buf[..buf.len().min(80)])
                ),
            )
        })?;
    Ok((status, line))
}

/// Whether a buffered response is complete by its own framing (Content-Length or the last
/// chunk), for servers that keep the connection open despite `Connection: close`.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = buf.len() - end - 4;
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return buf.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\n"));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        ));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"
        ));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        ));
    }
}
