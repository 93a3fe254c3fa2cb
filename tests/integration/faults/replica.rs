//! A replica that misbehaves for real: an HTTP/1 forwarder on a loopback
//! port in front of a real S3 server. Each request the proxy sends is read
//! (its head: `GET`s and `HEAD`s have no body) and shown to the test's
//! plan, which says what the replica does with it: forward it as it came or
//! changed, answer in S3's place, close the connection without answering,
//! or re-send the answer chunked and cut it part-way with a clean close
//! (FIN, not RST).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the replica received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The path and query.
    pub target: String,
    /// Lowercase names and their values, in order.
    pub headers: Vec<(String, String)>,
    /// 1 for the first request on its connection, 2 for the next (a
    /// pooled connection reused)...
    pub on_conn: u64,
}

impl Seen {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the replica does with one request.
pub enum Act {
    /// Forwards it as it came and passes the whole answer back.
    Forward,
    /// Forwards it with these headers set (`Some`) or removed (`None`).
    ForwardWith(Vec<(&'static str, Option<String>)>),
    /// Forwards it; passes back the answer re-sent chunked (no length), its
    /// first `n` body bytes, then closes cleanly without the last chunk.
    ChunkedCutAfter(u64),
    /// Answers with these bytes (a whole HTTP/1.1 response) in S3's place;
    /// the connection stays open.
    Answer(String),
    /// Closes the connection without answering: what a replica closing an
    /// idle kept-alive connection does to the request that crossed its FIN.
    Close,
}

/// The plan: what to do with each request.
pub type Plan = Arc<dyn Fn(&Seen) -> Act + Send + Sync>;

/// A running misbehaving replica.
pub struct Replica {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Replica {
    /// Forwards to `upstream` (a real S3 server) as `plan` says, on a free
    /// loopback port, until the test's runtime ends.
    pub async fn start(upstream: SocketAddr, plan: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan: Plan = Arc::new(plan);
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, upstream, plan.clone(), record.clone()));
            }
        });
        Self { addr, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one message head (up to the blank line) into a string; `buf` holds
/// what was read past it. `None` at a clean end of the stream.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The start line and the headers (lowercase names) of a head.
fn parse(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (start, headers)
}

fn render(start: &str, headers: &[(String, String)]) -> String {
    let mut out = format!("{start}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, plan: Plan, record: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut on_conn = 0;
    while let Some(head) = read_head(&mut client, &mut buf).await {
        on_conn += 1;
        let (start, mut headers) = parse(&head);
        let seen = Seen {
            method: start.split(' ').next().unwrap_or_default().to_owned(),
            target: start.split(' ').nth(1).unwrap_or_default().to_owned(),
            headers: headers.clone(),
            on_conn,
        };
        record.lock().unwrap().push(seen.clone());
        let act = plan(&seen);
        let cut = match act {
            Act::Close => return,
            Act::Answer(raw) => {
                if client.write_all(raw.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Act::Forward => None,
            Act::ForwardWith(changes) => {
                for (name, value) in changes {
                    headers.retain(|(n, _)| n != name);
                    if let Some(value) = value {
                        headers.push((name.to_owned(), value));
                    }
                }
                None
            }
            Act::ChunkedCutAfter(n) => Some(n),
        };
        let Ok(mut s3) = TcpStream::connect(upstream).await else {
            return;
        };
        if s3.write_all(render(&start, &headers).as_bytes()).await.is_err() {
            return;
        }
        let mut body = Vec::new();
        let Some(answer) = read_head(&mut s3, &mut body).await else {
            return;
        };
        let (status, mut answer_headers) = parse(&answer);
        let length: u64 = answer_headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let length = if seen.method == "HEAD" { 0 } else { length };
        // The whole body (the tests' objects are small enough).
        while (body.len() as u64) < length {
            let mut chunk = [0u8; 64 * 1024];
            match s3.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        body.truncate(length as usize);
        match cut {
            None => {
                let out = [render(&status, &answer_headers).into_bytes(), body].concat();
                if client.write_all(&out).await.is_err() {
                    return;
                }
            }
            Some(n) => {
                let n = (n as usize).min(body.len());
                answer_headers.retain(|(name, _)| name != "content-length");
                answer_headers.push(("transfer-encoding".into(), "chunked".into()));
                let mut out = render(&status, &answer_headers).into_bytes();
                for piece in body[..n].chunks(16 * 1024) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                let _ = client.write_all(&out).await;
                let _ = client.shutdown().await;
                // Read until the proxy closes too: a FIN, never a reset.
                let mut sink = [0u8; 1024];
                while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}
