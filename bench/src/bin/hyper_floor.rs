//! `hyper-floor`: the least a hyper server does per request, as a reference
//! for the cache-hit scenario. It answers every `GET` (and `HEAD`) with one
//! file held in memory and a response head built once, cloned per response
//! (as the proxy's memory-tier hit does): no routing, cache lookup, request
//! id, metrics or access log. One current-thread runtime per CPU, each with
//! its own `SO_REUSEPORT` listener on the same port (nginx's worker shape).
//!
//!   hyper-floor FILE    # prints `floor listening on 127.0.0.1:PORT`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use http::{HeaderMap, Method, Response};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

/// The answer: the file and its head.
#[derive(Clone)]
struct Object {
    body: Bytes,
    head: HeaderMap,
}

fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseport(true)?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: hyper-floor FILE");
        std::process::exit(2);
    };
    let body = Bytes::from(std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2);
    }));
    let mut head = HeaderMap::new();
    head.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    head.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    head.insert(ETAG, HeaderValue::from_static("\"0123456789abcdef0123456789abcdef\""));
    head.insert(LAST_MODIFIED, HeaderValue::from_static("Sun, 29 Nov 2026 09:00:00 GMT"));
    head.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let object = Object { body, head };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The first listener picks the port; the others share it.
    let first = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime")
    };
    let first_rt = rt();
    let first_listener = first_rt.block_on(async { listener(first) }).expect("listen");
    let addr = first_listener.local_addr().expect("local addr");
    let mut handles = Vec::new();
    for _ in 1..threads {
        let object = object.clone();
        handles.push(std::thread::spawn(move || {
            let rt = rt();
            let l = rt.block_on(async { listener(addr) }).expect("listen");
            rt.block_on(serve(l, object));
        }));
    }
    println!("floor listening on {addr}");
    first_rt.block_on(serve(first_listener, object));
    for h in handles {
        let _ = h.join();
    }
}

async fn serve(listener: TcpListener, object: Object) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let object = object.clone();
        tokio::task::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let mut res = if req.method() == Method::HEAD {
                    Response::new(http_body_util::Either::Right(Empty::new()))
                } else {
                    Response::new(http_body_util::Either::Left(Full::new(object.body.clone())))
                };
                *res.headers_mut() = object.head.clone();
                std::future::ready(Ok::<_, Infallible>(res))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
