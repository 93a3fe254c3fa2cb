//! The kit's own parts against real servers: the fault modes and the gate
//! of the local S3 server, and a redis-server restarted on its port.

use std::net::SocketAddr;
use std::time::Duration;

use yatagarasu_testkit::redis::Redis;
use yatagarasu_testkit::s3::{Fault, LocalS3};
use yatagarasu_testkit::util::{client, eventually};

const AK: &str = "kit-test-ak";
const SK: &str = "kit-test-sk-0123456789";

/// A presigned `GET` of `key` in `bkt` (signed with the server's key pair
/// unless `sk` says otherwise).
fn presigned_get(s3: &LocalS3, key: &str, sk: &str) -> url::Url {
    use rusty_s3::S3Action;
    let bucket = rusty_s3::Bucket::new(
        s3.endpoint().parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        "bkt".to_owned(),
        "us-east-1".to_owned(),
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(AK, sk);
    bucket.get_object(Some(&creds), key).sign(Duration::from_secs(60))
}

async fn server() -> (LocalS3, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let s3 = LocalS3::start(dir.path(), any, AK, SK).await.unwrap();
    (s3, dir)
}

async fn status(url: url::Url) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn slow_down_gets_replaces_successful_gets_only_and_signatures_come_first() {
    let (s3, _dir) = server().await;
    let etag = s3.put_object_with("bkt", "k", "v", &[]).await.unwrap();
    assert!(!etag.is_empty());
    s3.set_fault(Fault::SlowDownGets);
    assert_eq!(status(presigned_get(&s3, "k", SK)).await, 503);
    assert_eq!(status(presigned_get(&s3, "missing", SK)).await, 404);
    assert_eq!(status(presigned_get(&s3, "k", "a-wrong-secret")).await, 403);
    // Writes pass.
    s3.put_object_with("bkt", "k2", "v2", &[]).await.unwrap();
    s3.set_fault(Fault::None);
    assert_eq!(status(presigned_get(&s3, "k", SK)).await, 200);
    assert_eq!(s3.gets(), 4);
    assert_eq!(s3.requests(), 6);
}

#[tokio::test]
async fn fail_next_counts_down_then_serves() {
    let (s3, _dir) = server().await;
    s3.put_object("bkt", "k", b"v").unwrap();
    s3.set_fault(Fault::FailNext(2));
    assert_eq!(status(presigned_get(&s3, "k", SK)).await, 500);
    assert_eq!(status(presigned_get(&s3, "k", SK)).await, 500);
    assert_eq!(status(presigned_get(&s3, "k", SK)).await, 200);
}

#[tokio::test]
async fn held_gets_wait_at_the_gate_until_released() {
    let (s3, _dir) = server().await;
    s3.put_object("bkt", "k", b"held").unwrap();
    s3.hold();
    let url = presigned_get(&s3, "k", SK);
    let get = tokio::spawn(async move { client().get(url).send().await.unwrap().text().await.unwrap() });
    assert!(eventually(Duration::from_secs(10), || async { s3.waiting() == 1 }).await);
    assert!(!get.is_finished());
    s3.release();
    assert_eq!(get.await.unwrap(), "held");
    assert_eq!(s3.waiting(), 0);
}

#[tokio::test]
async fn a_stopped_server_refuses_and_restarts_on_its_port() {
    let (mut s3, _dir) = server().await;
    s3.put_object("bkt", "k", b"v").unwrap();
    let addr = s3.addr();
    s3.stop().await;
    assert!(!s3.is_running());
    assert!(client().get(presigned_get(&s3, "k", SK)).send().await.is_err());
    s3.restart().await.unwrap();
    assert_eq!(s3.addr(), addr);
    assert_eq!(status(presigned_get(&s3, "k", SK)).await, 200);
}

#[tokio::test]
async fn set_etag_is_served_and_body_bytes_are_counted() {
    let (s3, _dir) = server().await;
    s3.put_object("bkt", "k", &[5u8; 3000]).unwrap();
    s3.set_etag("bkt", "k", "0123456789abcdef0123456789abcdef").unwrap();
    assert_eq!(s3.body_bytes_sent(), 0);
    let res = client().get(presigned_get(&s3, "k", SK)).send().await.unwrap();
    assert_eq!(res.headers()["etag"], "\"0123456789abcdef0123456789abcdef\"");
    assert_eq!(
        res.content_length(),
        Some(3000),
        "the counting body keeps Content-Length"
    );
    assert_eq!(res.bytes().await.unwrap().len(), 3000);
    assert_eq!(s3.body_bytes_sent(), 3000);
}

#[test]
fn redis_restarts_on_the_same_port_with_its_data_gone() {
    let mut redis = Redis::start();
    assert_eq!(redis.cli(&["SET", "k", "v"]).trim(), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
    let port = redis.port;
    redis.kill();
    assert!(!redis.is_running());
    assert_eq!(redis.cli(&["PING"]), "");
    redis.restart();
    assert_eq!(redis.port, port);
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "");
}
