//! A minimal HTTP/1.1 client over one keep-alive connection, for tests
//! against a real socket (no client library needed).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One connection.
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one request; returns the status and the body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|value| ("Authorization", value.as_str()))
            .collect();
        self.request_with(method, path, &headers, body).await
    }

    /// Sends one request with extra `headers`; returns the status and the body.
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let stream = self.stream.get_mut();
        stream
            .write_all(head(method, path, headers, body.len()).as_bytes())
            .await?;
        stream.write_all(body.as_bytes()).await?;
        self.response().await
    }

    /// Sends one request with `token`, its body in `pieces` parts with
    /// `pause` before each; returns the status and the body.
    pub async fn request_slowly(
        &mut self,
        path: &str,
        token: &str,
        body: &str,
        pieces: usize,
        pause: Duration,
    ) -> std::io::Result<(u16, String)> {
        let bearer = format!("Bearer {token}");
        let head = head("POST", path, &[("Authorization", &bearer)], body.len());
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        for piece in body
            .as_bytes()
            .chunks(body.len().div_ceil(pieces.max(1)).max(1))
        {
            tokio::time::sleep(pause).await;
            stream.write_all(piece).await?;
        }
        self.response().await
    }

    /// Reads one response: its status and its body.
    async fn response(&mut self) -> std::io::Result<(u16, String)> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A request's head: a JSON body of `length` bytes, and `headers`.
fn head(method: &str, path: &str, headers: &[(&str, &str)], length: usize) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}
