//! The local S3 server answers reads as S3 does where s3s-fs alone would not
//! (`src/s3/fidelity.rs`): `encoding-type=url` listings decode to the real
//! keys with rusty-s3 and boto3, and paginate to the end; keys naming a
//! directory or starting with `/` are `404 NoSuchKey`; a suffix range longer
//! than the object is the whole object.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use yatagarasu_testkit::s3::LocalS3;
use yatagarasu_testkit::util::client;

const AK: &str = "fidelity-ak";
const SK: &str = "fidelity-sk-0123456789";
const HOUR: Duration = Duration::from_secs(3600);

/// Keys a client decodes wrongly unless the server encodes them.
const KEYS: [&str; 9] = [
    "100%.txt",
    "100%25.txt",
    "a+b.txt",
    "ctl\u{1}.txt",
    "sp ace.txt",
    "tab\there.txt",
    "uni-\u{e9}.txt",
    "x&y<z>.txt",
    "z dir/p+q.txt",
];

async fn server() -> (LocalS3, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let s3 = LocalS3::start(dir.path(), any, AK, SK).await.unwrap();
    (s3, dir)
}

fn bucket(s3: &LocalS3) -> Bucket {
    Bucket::new(s3.endpoint().parse().unwrap(), UrlStyle::Path, "bkt", "us-east-1").unwrap()
}

fn creds() -> Credentials {
    Credentials::new(AK, SK)
}

/// Every key of `KEYS` written to `bkt`.
async fn server_with_keys() -> (LocalS3, tempfile::TempDir) {
    let (s3, dir) = server().await;
    for key in KEYS {
        s3.put_object("bkt", key, key.as_bytes()).unwrap();
    }
    (s3, dir)
}

async fn list(action: ListObjectsV2<'_>) -> String {
    let res = client().get(action.sign(HOUR)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn url_encoded_listings_decode_to_the_real_keys() {
    let (s3, _dir) = server_with_keys().await;
    let (bkt, creds) = (bucket(&s3), creds());

    let xml = list(bkt.list_objects_v2(Some(&creds))).await;
    assert!(xml.contains("<Key>a%2Bb.txt</Key>"), "{xml}");
    assert!(xml.contains("<Key>sp+ace.txt</Key>"), "{xml}");
    let page = ListObjectsV2::parse_response(&xml).unwrap();
    let keys: Vec<String> = page.contents.into_iter().map(|c| c.key).collect();
    assert_eq!(keys, sorted(&KEYS));

    // Prefix, delimiter, start-after and common prefixes too.
    let mut action = bkt.list_objects_v2(Some(&creds));
    action.with_prefix("z dir");
    action.with_delimiter("+");
    action.with_start_after("z dir/");
    let xml = list(action).await;
    assert!(xml.contains("<Prefix>z+dir</Prefix>"), "{xml}");
    assert!(xml.contains("<Delimiter>%2B</Delimiter>"), "{xml}");
    assert!(xml.contains("<StartAfter>z+dir/</StartAfter>"), "{xml}");
    let page = ListObjectsV2::parse_response(&xml).unwrap();
    let prefixes: Vec<&str> = page.common_prefixes.iter().map(|p| p.prefix.as_str()).collect();
    assert_eq!(prefixes, ["z dir/p+"]);
    assert_eq!(page.start_after.as_deref(), Some("z dir/"));

    // Without encoding-type the keys are sent as they are.
    let mut action = bkt.list_objects_v2(Some(&creds));
    action.query_mut().remove("encoding-type");
    action.with_prefix("a+");
    let xml = list(action).await;
    assert!(
        xml.contains("<Key>a+b.txt</Key>") && !xml.contains("EncodingType"),
        "{xml}"
    );
}

#[tokio::test]
async fn listing_one_key_a_page_ends_with_every_key_once() {
    let (s3, _dir) = server_with_keys().await;
    let (bkt, creds) = (bucket(&s3), creds());

    // From the last decoded key, as the proxy pages (start-after).
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..=KEYS.len() {
        let mut action = bkt.list_objects_v2(Some(&creds));
        action.with_max_keys(1);
        if let Some(after) = &after {
            action.with_start_after(after.clone());
        }
        let page = ListObjectsV2::parse_response(&list(action).await).unwrap();
        seen.extend(page.contents.iter().map(|c| c.key.clone()));
        if page.next_continuation_token.is_none() {
            break;
        }
        after = seen.last().cloned();
    }
    assert_eq!(seen, sorted(&KEYS), "start-after pages");

    // With the server's continuation tokens.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..=KEYS.len() {
        let mut action = bkt.list_objects_v2(Some(&creds));
        action.with_max_keys(1);
        if let Some(token) = &token {
            action.with_continuation_token(token.clone());
        }
        let page = ListObjectsV2::parse_response(&list(action).await).unwrap();
        seen.extend(page.contents.iter().map(|c| c.key.clone()));
        token = page.next_continuation_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, sorted(&KEYS), "continuation-token pages");

    // A token the server did not give is refused, as S3 does.
    let mut action = bkt.list_objects_v2(Some(&creds));
    action.with_continuation_token("forged");
    let res = client().get(action.sign(HOUR)).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("<Code>InvalidArgument</Code>"));
}

#[tokio::test]
async fn url_encoded_v1_listings_encode_keys_and_markers() {
    let (s3, _dir) = server_with_keys().await;
    let (bkt, creds) = (bucket(&s3), creds());
    // ListObjects (V1): rusty-s3's V2 action without `list-type`.
    let mut action = bkt.list_objects_v2(Some(&creds));
    action.query_mut().remove("list-type");
    action.query_mut().insert("marker", "a+b.txt");
    action.query_mut().insert("max-keys", "1");
    let xml = list(action).await;
    assert!(xml.contains("<Marker>a%2Bb.txt</Marker>"), "{xml}");
    assert!(xml.contains("<Key>ctl%01.txt</Key>"), "{xml}");
    assert!(xml.contains("<NextMarker>ctl%01.txt</NextMarker>"), "{xml}");
    assert!(!xml.contains('\u{1}'), "{xml}");
}

async fn get(s3: &LocalS3, key: &str, range: Option<&str>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = bucket(s3).get_object(Some(&creds()), key).sign(HOUR);
    let mut req = client().get(url);
    if let Some(range) = range {
        req = req.header("range", range);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

async fn head(s3: &LocalS3, key: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = bucket(s3).head_object(Some(&creds()), key).sign(HOUR);
    let res = client().head(url).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

fn code(body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    let start = body.find("<Code>").map(|i| i + 6).unwrap_or(0);
    let end = body.find("</Code>").unwrap_or(start);
    body[start..end].to_owned()
}

#[tokio::test]
async fn keys_naming_a_directory_or_starting_with_a_slash_are_no_such_key() {
    let (s3, _dir) = server().await;
    s3.put_object("bkt", "dir1/inner/obj.txt", b"inside").unwrap();
    s3.put_object("bkt", "hello.txt", b"hello").unwrap();
    let (status, missing, _) = head(&s3, "missing").await;
    assert_eq!(status, 404);

    for key in ["dir1", "dir1/", "dir1/inner", "/hello.txt", "dir1//inner/obj.txt"] {
        let (status, _, body) = get(&s3, key, None).await;
        assert_eq!((status, code(&body).as_str()), (404, "NoSuchKey"), "GET {key:?}");
        // As for a key that is simply missing: 404, no body (the error
        // document's length as Content-Length, as s3s answers HEAD errors).
        let (status, headers, body) = head(&s3, key).await;
        assert_eq!(status, 404, "HEAD {key:?}");
        assert!(body.is_empty(), "HEAD {key:?}");
        assert_eq!(
            headers.get("content-length"),
            missing.get("content-length"),
            "HEAD {key:?}"
        );
    }
    // The objects themselves are served; a missing bucket is NoSuchBucket.
    assert_eq!(get(&s3, "dir1/inner/obj.txt", None).await.2, b"inside");
    assert_eq!(get(&s3, "hello.txt", None).await.2, b"hello");
    let url = Bucket::new(s3.endpoint().parse().unwrap(), UrlStyle::Path, "nobkt", "us-east-1")
        .unwrap()
        .get_object(Some(&creds()), "/hello.txt")
        .sign(HOUR);
    let res = client().get(url).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(code(&res.bytes().await.unwrap()), "NoSuchBucket");

    // The signature first: a wrongly signed request is refused.
    let wrong = Credentials::new(AK, "a-wrong-secret");
    let url = bucket(&s3).get_object(Some(&wrong), "dir1").sign(HOUR);
    assert_eq!(client().get(url).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn a_suffix_range_longer_than_the_object_is_the_whole_object() {
    let (s3, _dir) = server().await;
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    s3.put_object("bkt", "obj", &data).unwrap();
    s3.put_object("bkt", "empty", b"").unwrap();

    for range in ["bytes=-5000", "bytes=-3000"] {
        let (status, headers, body) = get(&s3, "obj", Some(range)).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(headers["content-range"], "bytes 0-2999/3000", "{range}");
        assert_eq!(body, data, "{range}");
    }
    let (status, headers, body) = get(&s3, "obj", Some("bytes=-10")).await;
    assert_eq!(
        (status, &headers["content-range"]),
        (206, &"bytes 2990-2999/3000".parse().unwrap())
    );
    assert_eq!(body, &data[2990..]);

    // An empty object has no byte to serve: any range is unsatisfiable.
    for range in ["bytes=-1", "bytes=0-"] {
        let (status, _, body) = get(&s3, "empty", Some(range)).await;
        assert_eq!((status, code(&body).as_str()), (416, "InvalidRange"), "{range}");
    }
    assert_eq!(get(&s3, "empty", None).await.0, 200);
}

/// The aws-cli/boto3 venv: `$YATAGARASU_TOOLS_VENV`, else the workspace's
/// `.venv-tools/`. Missing: a failure in CI, a loud skip elsewhere.
fn tools() -> Option<PathBuf> {
    let venv = std::env::var_os("YATAGARASU_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tools"));
    if venv.join("bin/python").exists() {
        return Some(venv);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("no boto3 venv at {}: scripts/test.sh creates it", venv.display());
    }
    eprintln!(
        "\n!!!!! SKIPPED: no boto3 venv at {} (run scripts/test.sh once to create it) !!!!!\n",
        venv.display()
    );
    None
}

/// boto3's paginators (one key a page): each operation's keys, in order.
const PAGINATE: &str = r#"
import os, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
    aws_access_key_id=os.environ["KEY"], aws_secret_access_key=os.environ["SECRET"],
    config=Config(s3={"addressing_style": "path"}))
for op in ("list_objects_v2", "list_objects"):
    pages = s3.get_paginator(op).paginate(Bucket="bkt", PaginationConfig={"PageSize": 1})
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    print(op, *[k.encode().hex() for k in keys])
"#;

fn unhex(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn boto3_paginators_return_the_exact_keys() {
    let Some(venv) = tools() else { return };
    let (s3, _dir) = server_with_keys().await;
    let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["-c", PAGINATE])
        .env("ENDPOINT", s3.endpoint())
        .env("KEY", AK)
        .env("SECRET", SK)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        let mut words = line.split(' ');
        let op = words.next().unwrap();
        let keys: Vec<String> = words.map(unhex).collect();
        assert_eq!(keys, sorted(&KEYS), "{op}");
    }
}

#[tokio::test]
async fn listed_objects_carry_the_etag_a_head_answers() {
    let (s3, _dir) = server_with_keys().await;
    let (bkt, creds) = (bucket(&s3), creds());
    let page = ListObjectsV2::parse_response(&list(bkt.list_objects_v2(Some(&creds))).await).unwrap();
    assert_eq!(page.contents.len(), KEYS.len());
    for object in page.contents {
        let url = bkt.head_object(Some(&creds), &object.key).sign(HOUR);
        let res = client().head(url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", object.key);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(object.etag.as_deref(), Some(etag.as_str()), "{}", object.key);
    }
    // ListObjects (V1) too: rusty-s3's V2 action without `list-type`.
    let mut action = bkt.list_objects_v2(Some(&creds));
    action.query_mut().remove("list-type");
    let xml = list(action).await;
    assert_eq!(xml.matches("<ETag>").count(), KEYS.len(), "{xml}");
}
