//! A minimal HTTP/1.x server for `GET /metrics`, enough for a Prometheus
//! scrape: one connection at a time, a bounded request (a scrape sends a
//! few hundred bytes of headers), a read deadline so a client that sends
//! nothing cannot hold the only slot, and `Connection: close` after each
//! answer. Anything else is answered 404, 405 or 400.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use thiserror::Error;

/// The most a request may send before its headers end.
const REQUEST_MAX: usize = 8192;
/// How long a client has to send its request.
const READ_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr}: {source}; choose another address or port (--listen ADDR:PORT)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting a connection on {addr}: {source}")]
    Accept {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What one request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    Bad,
}

/// Parses the request line of `head` (the bytes up to the blank line).
pub fn parse(head: &[u8]) -> Request {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Request::MethodNotAllowed;
    }
    // A query string (`?name[]=...`, which some scrapers add) is ignored.
    match target.split('?').next() {
        Some("/metrics") => Request::Metrics,
        _ => Request::NotFound,
    }
}

/// Listens on `addr` and answers each `GET /metrics` with `body()`, one
/// connection after the other, until the process is stopped. `ready` is
/// called once the socket listens (with the address it got, for port 0).
pub fn serve(
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
    mut body: impl FnMut() -> Result<String, String>,
) -> Result<(), HttpError> {
    let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    ready(listener.local_addr().unwrap_or(addr));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // A client gone before it was accepted costs nothing.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(source) => return Err(HttpError::Accept { addr, source }),
        };
        // A client that misbehaves costs its own connection, never the
        // server: errors writing to it are dropped with it.
        let _ = answer(stream, &mut body);
    }
}

fn answer(
    mut stream: TcpStream,
    body: &mut impl FnMut() -> Result<String, String>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_DEADLINE))?;
    stream.set_write_timeout(Some(READ_DEADLINE))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() >= REQUEST_MAX {
            break false;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (status, content_type, text) = if !complete {
        (
            "400 Bad Request",
            "text/plain",
            "request too large or incomplete\n".into(),
        )
    } else {
        match parse(&head) {
            Request::Metrics => match body() {
                Ok(t) => ("200 OK", super::metrics::CONTENT_TYPE, t),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            },
            Request::NotFound => ("404 Not Found", "text/plain", "try /metrics\n".into()),
            Request::MethodNotAllowed => {
                ("405 Method Not Allowed", "text/plain", "only GET\n".into())
            }
            Request::Bad => ("400 Bad Request", "text/plain", "bad request line\n".into()),
        }
    };
    let head_only = head.starts_with(b"HEAD ");
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    )?;
    if !head_only {
        stream.write_all(text.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_of_metrics_is_served() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"\xff\xfe\r\n\r\n"), Request::Bad);
    }
}
