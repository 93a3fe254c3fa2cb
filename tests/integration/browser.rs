//! CORS as a browser enforces it: a real headless Chromium loads a page from
//! the test's own loopback server (origin A) whose script `fetch()`es objects
//! from the real binary on another loopback port (origin B), and writes what
//! the app could read into the page: the status, `ETag`, `Content-Range`,
//! `X-Cache`, `X-Request-Id`, `Retry-After`, the body's length, or the
//! `TypeError` of a blocked request. The browser's console says why it
//! blocked one ("... has been blocked by CORS policy"), which tells a CORS
//! refusal from a proxy that was never reached.
//!
//! `chromium --dump-dom` with a virtual-time budget prints the page once the
//! script is idle: virtual time does not pass while a fetch is in flight, so
//! the dump waits for every answer (the real-time bound only catches a
//! browser that hangs). Missing chromium: a failure in CI, a loud skip
//! elsewhere (`scripts/test.sh` installs it).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "browser-test-secret-0123456789abcdef";
const CLIENT_KEY: &str = "AKIABROWSERCLIENT001";
const CLIENT_SECRET: &str = "browser-client/secret+7";
const SMALL: &[u8] = b"{\"hello\":\"browser\"}";
const BIG: usize = 200_000;

fn token() -> String {
    hs256_token(SECRET, serde_json::json!({ "sub": "web" }))
}

/// One `fetch(url, init)` of the page, named for its result. With `until`,
/// sent again (up to 20 times) until that status comes back; with `sigv4`,
/// signed in the page first (its `sigv4`, see [`sdk_get`]).
struct Fetch {
    name: &'static str,
    url: String,
    init: Value,
    until: Option<u16>,
    sigv4: Option<Value>,
}

fn fetch(name: &'static str, url: String, init: Value) -> Fetch {
    Fetch {
        name,
        url,
        init,
        until: None,
        sigv4: None,
    }
}

/// A `GetObject` as the AWS SDK for JavaScript v3 sends it from a browser
/// (path style, the proxy as endpoint): `?x-id=GetObject`, the SDK's own
/// headers (`amz-sdk-*`, `x-amz-user-agent`, and `x-amz-checksum-mode`,
/// set on every `GetObject` since 3.729 by default), signed in the page
/// with SigV4 (WebCrypto) with a key the proxy issued.
fn sdk_get(name: &'static str, url: String, extra: Value) -> Fetch {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut headers = json!({
        "amz-sdk-invocation-id": "2f1c7a8e-4b7d-4c43-9a55-5b8f0f5b1c11",
        "amz-sdk-request": "attempt=1; max=3",
        "x-amz-user-agent": "aws-sdk-js/3.758.0 ua/2.1 os/Linux lang/js md/browser#Chrome_156 api/s3#3.758.0",
        "x-amz-checksum-mode": "ENABLED",
    });
    if let (Some(h), Some(more)) = (headers.as_object_mut(), extra.as_object()) {
        h.extend(more.clone());
    }
    Fetch {
        sigv4: Some(json!({ "key": CLIENT_KEY, "secret": CLIENT_SECRET, "region": "us-east-1", "now": now })),
        ..fetch(
            name,
            format!("{url}?x-id=GetObject"),
            json!({ "cache": "no-store", "headers": headers }),
        )
    }
}

/// The page: runs `fetches` one after the other and writes their results,
/// as JSON, into `<pre id="out">`, then `DONE`.
fn page(fetches: &[Fetch]) -> String {
    let list: Vec<Value> = fetches
        .iter()
        .map(|f| json!({ "name": f.name, "url": f.url, "init": f.init, "until": f.until, "sigv4": f.sigv4 }))
        .collect();
    let list = serde_json::to_string(&list).unwrap().replace("</", "<\\/");
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head><body><pre id="out">running</pre>
<script>
const FETCHES = {list};
const HEADERS = ["etag", "content-range", "x-cache", "x-request-id", "retry-after"];
const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const te = new TextEncoder();
const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
const sha = async (text) => hex(await crypto.subtle.digest("SHA-256", te.encode(text)));
async function hmac(key, text) {{
  const k = await crypto.subtle.importKey(
    "raw", typeof key === "string" ? te.encode(key) : key, {{ name: "HMAC", hash: "SHA-256" }}, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, te.encode(text)));
}}
// SigV4 of a GET without a body, as the SDK signs it: host and the x-amz-*
// headers signed, the payload hash of an empty body.
async function sigv4(f) {{
  const s = f.sigv4, u = new URL(f.url);
  const date = new Date(s.now).toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
  const day = date.slice(0, 8);
  const headers = {{ ...f.init.headers, "x-amz-content-sha256": EMPTY, "x-amz-date": date }};
  const signed = Object.keys(headers).filter((h) => h.startsWith("x-amz-") && h !== "x-amz-user-agent");
  signed.push("host");
  signed.sort();
  const value = (h) => (h === "host" ? u.host : headers[h]);
  const canonical = ["GET", u.pathname, u.search.slice(1), signed.map((h) => h + ":" + value(h) + "\n").join(""),
    signed.join(";"), EMPTY].join("\n");
  const scope = day + "/" + s.region + "/s3/aws4_request";
  const toSign = ["AWS4-HMAC-SHA256", date, scope, await sha(canonical)].join("\n");
  let key = await hmac("AWS4" + s.secret, day);
  for (const part of [s.region, "s3", "aws4_request"]) key = await hmac(key, part);
  headers["authorization"] = "AWS4-HMAC-SHA256 Credential=" + s.key + "/" + scope + ", SignedHeaders=" +
    signed.join(";") + ", Signature=" + hex(await hmac(key, toSign));
  return {{ ...f.init, headers }};
}}
const results = [];
// One fetch; with `until`, sent again (a blocked answer too) until that
// status is read, at most 20 times.
async function one(f) {{
  const r = {{ name: f.name }};
  const init = f.sigv4 ? await sigv4(f) : structuredClone(f.init);
  // "ETAG_OF name": the ETag an earlier fetch read.
  for (const [h, v] of Object.entries(init.headers || {{}}))
    if (v.startsWith("ETAG_OF ")) init.headers[h] = results.find((r) => r.name === v.slice(8)).etag;
  let res = null, error = null;
  for (let i = 0; i < (f.until ? 20 : 1); i++) {{
    r.tries = i + 1;
    try {{
      res = await fetch(f.url, init);
      error = null;
    }} catch (e) {{
      error = e;
      continue;
    }}
    if (!f.until || res.status === f.until) break;
    await res.arrayBuffer();
  }}
  try {{
    if (error) throw error;
    r.type = res.type;
    r.status = res.status;
    for (const h of HEADERS) r[h] = res.headers.get(h);
    r.length = (await res.arrayBuffer()).byteLength;
  }} catch (e) {{
    r.error = e.name;
    r.message = String(e.message);
  }}
  return r;
}}
(async () => {{
  for (const f of FETCHES) results.push(await one(f));
  document.getElementById("out").textContent = "RESULTS" + JSON.stringify(results) + "DONE";
}})();
</script></body></html>
"#
    )
}

/// Origin A: a loopback HTTP server whose `/` is the page. Bound first, so
/// the proxy's config can name its origin.
struct Origin {
    listener: tokio::net::TcpListener,
    origin: String,
}

impl Origin {
    async fn bind() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        Self { listener, origin }
    }
}

/// What the app saw, by fetch name, and the browser's console.
struct Seen {
    results: HashMap<String, Value>,
    console: String,
    origin: String,
}

impl Seen {
    fn get(&self, name: &str) -> &Value {
        self.results
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}: {:?}", self.results))
    }

    /// The fetch was answered and readable: its status.
    fn status(&self, name: &str) -> u64 {
        let r = self.get(name);
        assert!(r.get("error").is_none(), "{name} was blocked: {r}\n{}", self.console);
        r["status"].as_u64().unwrap()
    }

    /// A response header as the app reads it (`None`: absent or hidden).
    fn header(&self, name: &str, header: &str) -> Option<String> {
        self.get(name)[header].as_str().map(str::to_owned)
    }

    fn length(&self, name: &str) -> u64 {
        self.get(name)["length"].as_u64().unwrap()
    }

    /// The fetch of `url` failed with a `TypeError` and the console says
    /// CORS blocked it (the proxy answered; the browser hid the answer).
    fn blocked(&self, name: &str, url: &str, why: &str) {
        let r = self.get(name);
        assert_eq!(r["error"], "TypeError", "{name} was not blocked: {r}");
        let line = self
            .console
            .lines()
            .find(|l| l.contains(&format!("Access to fetch at '{url}' from origin '{}'", self.origin)))
            .unwrap_or_else(|| panic!("{name}: no CORS message for {url} in\n{}", self.console));
        assert!(line.contains("blocked by CORS policy"), "{name}: {line}");
        assert!(line.contains(why), "{name}: expected {why:?} in {line}");
    }
}

/// Serves [`page`]`(fetches)` from `origin`, loads it in a headless Chromium
/// (a fresh profile, names resolving nowhere, loopback only) and reads back
/// what the page wrote.
async fn browse(origin: Origin, fetches: &[Fetch]) -> Seen {
    let html = page(fetches);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(html) }),
    );
    let server = tokio::spawn(async move { axum::serve(origin.listener, app).await });
    let profile = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=60000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{}/", origin.origin))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("chromium printed the page within 180 s")
        .unwrap();
    server.abort();
    let dom = String::from_utf8_lossy(&out.stdout);
    let console = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = dom
        .split_once("RESULTS")
        .and_then(|(_, rest)| rest.split_once("DONE"))
        .map(|(json, _)| json.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("the page never finished: {dom}\n{console}"));
    eprintln!("the page saw: {text}");
    for line in console.lines().filter(|l| l.contains(":CONSOLE")) {
        eprintln!("{line}");
    }
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let results = list
        .into_iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r))
        .collect();
    Seen {
        results,
        console,
        origin: origin.origin,
    }
}

/// The replica's objects: `app.json`, `big.bin` (a memfd hit, sent with
/// sendfile(2)) and one object per blocked fetch (so each console message
/// names its own URL).
async fn replica() -> S3 {
    let s3 = s3().await;
    for key in [
        "app.json",
        "range.json",
        "cred.json",
        "no-cred.json",
        "stranger.json",
        "plain.json",
    ] {
        s3.put_object("web-bkt", key, SMALL).unwrap();
    }
    s3.put_object("web-bkt", "big.bin", &pattern(BIG, 3)).unwrap();
    // Modified years ago: a browser keeps it fresh for a while by heuristic
    // (a tenth of its age), with no `Cache-Control`, like a static asset.
    s3.put_object("web-bkt", "old.json", SMALL).unwrap();
    let years_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 365 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(s3.root().join("web-bkt/old.json"))
        .unwrap()
        .set_modified(years_ago)
        .unwrap();
    s3.put_object("web-bkt", "limited.json", SMALL).unwrap();
    s3.put_object("web-bkt", "other-limited.json", SMALL).unwrap();
    s3
}

/// `/web`: CORS for `origin`; `/private`: the same with JWT; `/cred`: with
/// `allow_credentials`; `/stranger`: CORS for another origin only;
/// `/plain`: no `cors` block. A memory cache. `server` is YAML under
/// `server:`.
fn config(endpoint: &str, origin: &str, server: &str) -> String {
    let s3 = format!(
        r#"{{ bucket: web-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 5 }}"#
    );
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 2
{server}
jwt: {{ algorithm: HS256, secret: "{SECRET}" }}
buckets:
  - name: web
    path_prefix: /web
    s3: {s3}
    cors: {{ allowed_origins: ["{origin}"] }}
  - name: private
    path_prefix: /private
    s3: {s3}
    auth: {{ enabled: true }}
    cors: {{ allowed_origins: ["{origin}"] }}
  - name: cred
    path_prefix: /cred
    s3: {s3}
    cors: {{ allowed_origins: ["{origin}"], allow_credentials: true }}
  - name: stranger
    path_prefix: /stranger
    s3: {s3}
    cors: {{ allowed_origins: ["https://app.example.com"] }}
  - name: signed
    path_prefix: /signed
    s3: {s3}
    auth:
      enabled: true
      sigv4:
        credentials:
          - {{ access_key_id: "{CLIENT_KEY}", secret_access_key: "{CLIENT_SECRET}" }}
    cors: {{ allowed_origins: ["{origin}"] }}
  - name: tokened
    path_prefix: /tokened
    s3: {s3}
    auth:
      enabled: true
      jwt:
        algorithm: HS256
        secret: "{SECRET}"
        token_sources: [{{ type: header, name: X-Api-Token }}, {{ type: query, name: token }}]
    cors: {{ allowed_origins: ["{origin}"] }}
  - name: plain
    path_prefix: /plain
    s3: {s3}
health_check: {{ enabled: false }}
cache:
  memory: {{ max_capacity: 16777216, ttl_seconds: 60 }}
metrics: {{ enabled: false }}
"#
    )
}

/// What a web app on an allowed origin reads: a miss, then a memory hit
/// (`X-Cache` readable; a large hit's whole body, sent with sendfile(2)), a
/// conditional read with the `ETag` it read (a preflight for
/// `If-None-Match`; the 304 readable), a `HEAD`, a range of a hit (206 and
/// `Content-Range`), an unsatisfiable range (416), a 404, and an object the
/// browser keeps in its cache after an `<img>` loaded it without CORS.
#[tokio::test]
async fn browser_reads_an_allowed_bucket() {
    if !tool_present("chromium") {
        return;
    }
    let s3 = replica().await;
    let origin = Origin::bind().await;
    let proxy = Proxy::start(&config(&s3.endpoint(), &origin.origin, ""));
    let url = proxy.url("/web/app.json");
    let no_store = |headers: Value| json!({ "cache": "no-store", "headers": headers });
    let fetches = [
        fetch("miss", url.clone(), no_store(json!({}))),
        fetch("hit", url.clone(), no_store(json!({}))),
        fetch("big miss", proxy.url("/web/big.bin"), no_store(json!({}))),
        fetch("big hit", proxy.url("/web/big.bin"), no_store(json!({}))),
        fetch(
            "not modified",
            url.clone(),
            no_store(json!({ "If-None-Match": "ETAG_OF miss" })),
        ),
        fetch("head", url.clone(), json!({ "cache": "no-store", "method": "HEAD" })),
        fetch("range", url.clone(), no_store(json!({ "Range": "bytes=0-3" }))),
        fetch(
            "unsatisfiable",
            url.clone(),
            no_store(json!({ "Range": "bytes=100-200" })),
        ),
        fetch("missing", proxy.url("/web/missing.json"), no_store(json!({}))),
        // An `<img>` shows the object first (no `Origin`: the browser keeps a
        // copy without `Access-Control-Allow-Origin`), then the app reads
        // it: `Vary: Origin` keeps the browser from answering the read
        // with that copy, which it would block.
        fetch("image", proxy.url("/web/old.json"), json!({ "mode": "no-cors" })),
        fetch("after image", proxy.url("/web/old.json"), json!({})),
        fetch("after image again", proxy.url("/web/old.json"), json!({})),
    ];
    let seen = browse(origin, &fetches).await;

    for (miss, hit, len) in [("miss", "hit", SMALL.len()), ("big miss", "big hit", BIG)] {
        assert_eq!(seen.status(miss), 200);
        assert_eq!(
            seen.header(miss, "x-cache").as_deref(),
            Some("MISS"),
            "{}",
            seen.get(miss)
        );
        assert_eq!(seen.status(hit), 200);
        assert_eq!(
            seen.header(hit, "x-cache").as_deref(),
            Some("HIT-MEMORY"),
            "{}",
            seen.get(hit)
        );
        for name in [miss, hit] {
            assert_eq!(seen.length(name), len as u64, "{}", seen.get(name));
            assert!(
                seen.header(name, "etag").is_some_and(|e| e.starts_with('"')),
                "{}",
                seen.get(name)
            );
            assert!(seen.header(name, "x-request-id").is_some(), "{}", seen.get(name));
        }
        assert_eq!(seen.header(miss, "etag"), seen.header(hit, "etag"));
    }
    let etag = seen.header("miss", "etag");
    assert_eq!(seen.status("not modified"), 304);
    assert_eq!(seen.header("not modified", "etag"), etag);
    assert_eq!(seen.status("head"), 200);
    assert_eq!(seen.header("head", "etag"), etag);
    assert_eq!(seen.length("head"), 0);
    assert_eq!(seen.status("range"), 206);
    assert_eq!(
        seen.header("range", "content-range"),
        Some(format!("bytes 0-3/{}", SMALL.len())),
        "{}",
        seen.get("range")
    );
    assert_eq!(seen.header("range", "x-cache").as_deref(), Some("HIT-MEMORY"));
    assert_eq!(seen.length("range"), 4);
    assert_eq!(seen.status("unsatisfiable"), 416);
    assert_eq!(
        seen.header("unsatisfiable", "content-range"),
        Some(format!("bytes */{}", SMALL.len()))
    );
    assert_eq!(seen.status("missing"), 404);
    assert!(seen.length("missing") > 0);
    assert_eq!(seen.get("image")["type"], "opaque");
    for name in ["after image", "after image again"] {
        assert_eq!(seen.status(name), 200);
        assert_eq!(seen.length(name), SMALL.len() as u64);
    }
    // The second read was the browser's copy of the first (the same id):
    // a browser cache was in play.
    assert_eq!(
        seen.header("after image", "x-request-id"),
        seen.header("after image again", "x-request-id")
    );
}

/// Preflighted reads with credentials the app's code sets: a bearer token
/// and a `Range` on a JWT bucket (the preflight passes before auth, the 206
/// and its `Content-Range` are readable; without the token, the 401 is); a
/// token in the bucket's own header (`token_sources: [{type: header}]`: its
/// preflight asks for that header) or in the query; and `GetObject` as the
/// AWS SDK for JavaScript v3 sends it, signed with SigV4 in the page (its
/// preflight asks for `x-amz-checksum-mode`).
#[tokio::test]
async fn browser_reads_with_a_token_or_a_signature() {
    if !tool_present("chromium") {
        return;
    }
    let s3 = replica().await;
    let origin = Origin::bind().await;
    let proxy = Proxy::start(&config(&s3.endpoint(), &origin.origin, ""));
    let bearer = format!("Bearer {}", token());
    let with = |headers: Value| json!({ "cache": "no-store", "headers": headers });
    let fetches = [
        fetch(
            "range",
            proxy.url("/private/range.json"),
            with(json!({ "Authorization": bearer, "Range": "bytes=0-3" })),
        ),
        fetch(
            "range again",
            proxy.url("/private/range.json"),
            with(json!({ "Authorization": bearer, "Range": "bytes=2-5" })),
        ),
        fetch("no token", proxy.url("/private/app.json"), with(json!({}))),
        fetch(
            "token header",
            proxy.url("/tokened/app.json"),
            with(json!({ "X-Api-Token": token(), "Range": "bytes=0-3" })),
        ),
        fetch(
            "token query",
            proxy.url(&format!("/tokened/range.json?token={}", token())),
            with(json!({})),
        ),
        sdk_get("sdk", proxy.url("/signed/app.json"), json!({})),
        sdk_get("sdk again", proxy.url("/signed/app.json"), json!({})),
        sdk_get(
            "sdk range",
            proxy.url("/signed/range.json"),
            json!({ "range": "bytes=2-5" }),
        ),
    ];
    let seen = browse(origin, &fetches).await;

    let total = SMALL.len();
    for (name, range) in [("range", "0-3"), ("range again", "2-5"), ("sdk range", "2-5")] {
        assert_eq!(seen.status(name), 206, "{}", seen.get(name));
        assert_eq!(
            seen.header(name, "content-range"),
            Some(format!("bytes {range}/{total}")),
            "{}",
            seen.get(name)
        );
        assert_eq!(seen.length(name), 4);
        assert!(seen.header(name, "etag").is_some(), "{}", seen.get(name));
    }
    assert_eq!(seen.status("no token"), 401);
    assert!(seen.header("no token", "x-request-id").is_some());
    assert!(seen.length("no token") > 0);

    assert_eq!(seen.status("token header"), 206, "{}", seen.get("token header"));
    assert_eq!(seen.length("token header"), 4);
    assert_eq!(seen.status("token query"), 200, "{}", seen.get("token query"));
    assert_eq!(seen.length("token query"), total as u64);

    for (name, cache) in [("sdk", "MISS"), ("sdk again", "HIT-MEMORY")] {
        assert_eq!(seen.status(name), 200, "{}", seen.get(name));
        assert_eq!(seen.length(name), total as u64);
        assert_eq!(
            seen.header(name, "x-cache").as_deref(),
            Some(cache),
            "{}",
            seen.get(name)
        );
        assert!(seen.header(name, "etag").is_some(), "{}", seen.get(name));
    }
}

/// What the browser hides: a bucket that allows another origin (a plain
/// read and a preflighted one), a bucket without `cors`, and a credentialed
/// read (`credentials: 'include'`) from a bucket without `allow_credentials`;
/// the same credentialed read from a bucket with it is readable.
#[tokio::test]
async fn browser_blocks_what_the_bucket_does_not_allow() {
    if !tool_present("chromium") {
        return;
    }
    let s3 = replica().await;
    let origin = Origin::bind().await;
    let proxy = Proxy::start(&config(&s3.endpoint(), &origin.origin, ""));
    let bearer = format!("Bearer {}", token());
    let include = json!({ "cache": "no-store", "credentials": "include" });
    let fetches = [
        fetch("stranger", proxy.url("/stranger/stranger.json"), json!({})),
        fetch(
            "stranger preflighted",
            proxy.url("/stranger/app.json"),
            json!({ "headers": { "Authorization": bearer, "Range": "bytes=0-3" } }),
        ),
        fetch("plain", proxy.url("/plain/plain.json"), json!({})),
        fetch(
            "plain preflighted",
            proxy.url("/plain/app.json"),
            json!({ "headers": { "Range": "bytes=0-3", "If-None-Match": "\"x\"" } }),
        ),
        fetch("credentials", proxy.url("/cred/cred.json"), include.clone()),
        fetch("credentials refused", proxy.url("/web/no-cred.json"), include.clone()),
        // The proxy answered the blocked reads: the same without CORS
        // (`no-cors`) is an opaque answer, not a network error.
        fetch(
            "plain opaque",
            proxy.url("/plain/plain.json"),
            json!({ "mode": "no-cors" }),
        ),
        fetch(
            "stranger opaque",
            proxy.url("/stranger/stranger.json"),
            json!({ "mode": "no-cors" }),
        ),
    ];
    let seen = browse(origin, &fetches).await;

    let no_origin = "No 'Access-Control-Allow-Origin' header is present";
    seen.blocked("stranger", &proxy.url("/stranger/stranger.json"), no_origin);
    seen.blocked(
        "stranger preflighted",
        &proxy.url("/stranger/app.json"),
        "Response to preflight request doesn't pass access control check",
    );
    seen.blocked("plain", &proxy.url("/plain/plain.json"), no_origin);
    seen.blocked(
        "plain preflighted",
        &proxy.url("/plain/app.json"),
        "Response to preflight request doesn't pass access control check",
    );
    seen.blocked(
        "credentials refused",
        &proxy.url("/web/no-cred.json"),
        "Access-Control-Allow-Credentials",
    );
    for name in ["plain opaque", "stranger opaque"] {
        assert_eq!(seen.get(name)["type"], "opaque", "{}", seen.get(name));
    }

    assert_eq!(seen.status("credentials"), 200);
    assert_eq!(seen.length("credentials"), SMALL.len() as u64);
    assert!(
        seen.header("credentials", "etag").is_some(),
        "{}",
        seen.get("credentials")
    );
    assert!(
        seen.header("credentials", "x-cache").is_some(),
        "{}",
        seen.get("credentials")
    );
}

/// Under `server.rate_limit` (1/s, burst 1) the app reads the 429 and its
/// `Retry-After`, on a plain read, a preflighted one and a credentialed one
/// (the edge's own answer carries the bucket's CORS headers; the preflight
/// is not limited); a bucket without `cors` keeps its 429 hidden.
#[tokio::test]
async fn browser_reads_a_rate_limited_answer() {
    if !tool_present("chromium") {
        return;
    }
    let s3 = replica().await;
    let origin = Origin::bind().await;
    let server = "  rate_limit: { enabled: true, requests_per_second: 1, burst: 1 }";
    let proxy = Proxy::start(&config(&s3.endpoint(), &origin.origin, server));
    let limited = |name, url| Fetch {
        until: Some(429),
        ..fetch(name, url, json!({ "cache": "no-store" }))
    };
    let bearer = format!("Bearer {}", token());
    let fetches = [
        limited("limited", proxy.url("/web/limited.json")),
        Fetch {
            init: json!({ "cache": "no-store", "headers": { "Authorization": bearer, "Range": "bytes=0-3" } }),
            ..limited("limited preflighted", proxy.url("/private/limited.json"))
        },
        Fetch {
            init: json!({ "cache": "no-store", "credentials": "include" }),
            ..limited("limited credentials", proxy.url("/cred/limited.json"))
        },
        limited("plain", proxy.url("/plain/other-limited.json")),
    ];
    let seen = browse(origin, &fetches).await;

    for name in ["limited", "limited preflighted", "limited credentials"] {
        assert_eq!(seen.status(name), 429, "{}", seen.get(name));
        let retry: u64 = seen
            .header(name, "retry-after")
            .unwrap_or_else(|| panic!("{name}: Retry-After hidden: {}", seen.get(name)))
            .parse()
            .unwrap();
        assert!(retry >= 1, "{}", seen.get(name));
        assert!(seen.header(name, "x-request-id").is_some(), "{}", seen.get(name));
        assert!(seen.length(name) > 0, "{}", seen.get(name));
    }
    seen.blocked(
        "plain",
        &proxy.url("/plain/other-limited.json"),
        "No 'Access-Control-Allow-Origin' header is present",
    );
    // It was the 429 the browser hid: the proxy logged it.
    let logs = proxy.settled_logs().await;
    assert!(
        logs.lines()
            .any(|l| l.contains("path=/plain/other-limited.json") && l.contains("status=429")),
        "{logs}"
    );
}
