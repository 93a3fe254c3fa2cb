//! Plain HTTP sent to a TLS listener (`http://` where `https://` was meant):
//! answered with a readable `400` in plain text instead of a TLS alert.
//!
//! A TLS client's first byte is a handshake record (`0x16`); an HTTP/1.x
//! request starts with its method, a letter. Left to the handshake, such a
//! request got a 7-byte TLS alert, which curl reports as "Received HTTP/0.9
//! when not allowed" and an S3 SDK as a connection or parse error that does
//! not say what is wrong. nginx answers it the same way ("The plain HTTP
//! request was sent to HTTPS port").

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// What a plain HTTP request to the TLS listener gets.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: 162\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code><Message>This port serves HTTPS: send the request over TLS (https://).</Message></Error>\n";

/// How a connection to the TLS listener began.
#[derive(Debug)]
pub enum Accepted {
    /// A TLS session, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
    /// A plain HTTP request: [`PLAIN_HTTP_ANSWER`] was written; the caller
    /// closes the connection (lingering, so that the unread request does not
    /// turn the close into a reset that drops the answer).
    PlainHttp,
}

/// Runs the TLS handshake on `tcp`, unless its first byte says the client
/// speaks plain HTTP: then it is answered [`PLAIN_HTTP_ANSWER`].
pub async fn accept(acceptor: &TlsAcceptor, mut tcp: TcpStream) -> std::io::Result<Accepted> {
    let mut first = [0u8; 1];
    // Waits for the client's first byte without taking it from the handshake.
    if tcp.peek(&mut first).await? == 1 && first[0].is_ascii_alphabetic() {
        tcp.write_all(PLAIN_HTTP_ANSWER).await?;
        return Ok(Accepted::PlainHttp);
    }
    Ok(Accepted::Tls(Box::new(acceptor.accept(tcp).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_declares_its_body_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.ends_with(&format!("\r\nContent-Length: {}", body.len())), "{head}");
    }
}
