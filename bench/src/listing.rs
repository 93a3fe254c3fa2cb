//! The `listing` scenario: a paginated `ListObjectsV2` of 10,000 keys through
//! the proxy (its own continuation tokens, `start-after` upstream) vs
//! straight to the S3 server (presigned by rusty-s3), in one run.

use std::time::{Duration, Instant};

use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::data::BUCKET;
use crate::measure::client;
use crate::servers::{bucket_block, config, Proxy, S3Server, ACCESS_KEY, SECRET_KEY};
use crate::suite::{Env, Outcome, Scenario};

/// A paginated ListObjectsV2 of 10,000 keys through the proxy vs direct.
pub const SCENARIO: Scenario = Scenario {
    name: "listing",
    about: "a paginated ListObjectsV2 of 10,000 keys through the proxy vs direct to the S3 server",
    needs_bin: true,
    run: scenario_listing,
};

const KEYS: usize = 10_000;
const PREFIX: &str = "list/";

fn write_keys(env: &Env) -> Result<(), String> {
    let dir = env.root.join(BUCKET).join(PREFIX);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for i in 0..KEYS {
        std::fs::write(dir.join(format!("key-{i:05}")), b"x").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every `<tag>value</tag>` of an XML text.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|s| s.split(close.as_str()).next())
        .collect()
}

/// One full listing through the proxy: (keys, pages).
async fn through_proxy(http: &reqwest::Client, proxy: &Proxy) -> Result<(usize, usize), String> {
    let (mut keys, mut pages, mut token) = (0, 0, None::<String>);
    loop {
        let mut url = reqwest::Url::parse(&format!("{}/{BUCKET}", proxy.base)).map_err(|e| e.to_string())?;
        url.query_pairs_mut()
            .append_pair("list-type", "2")
            .append_pair("prefix", PREFIX);
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("continuation-token", t);
        }
        let res = http.get(url).send().await.map_err(|e| e.to_string())?;
        if res.status() != 200 {
            return Err(format!("proxy listing: status {}", res.status()));
        }
        let xml = res.text().await.map_err(|e| e.to_string())?;
        keys += elements(&xml, "Key").len();
        pages += 1;
        token = elements(&xml, "NextContinuationToken").first().map(|s| s.to_string());
        if token.is_none() {
            return Ok((keys, pages));
        }
    }
}

/// One full listing straight from the S3 server.
async fn direct(http: &reqwest::Client, s3: &S3Server) -> Result<(usize, usize), String> {
    let bucket = Bucket::new(
        s3.endpoint.parse().map_err(|e| format!("{e}"))?,
        UrlStyle::Path,
        BUCKET.to_owned(),
        "us-east-1".to_owned(),
    )
    .map_err(|e| e.to_string())?;
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
    let (mut keys, mut pages, mut token) = (0, 0, None::<String>);
    loop {
        let mut action = bucket.list_objects_v2(Some(&creds));
        action.with_prefix(PREFIX);
        if let Some(t) = &token {
            action.with_continuation_token(t.clone());
        }
        let url = action.sign(Duration::from_secs(600));
        let res = http.get(url).send().await.map_err(|e| e.to_string())?;
        if res.status() != 200 {
            return Err(format!("direct listing: status {}", res.status()));
        }
        let page =
            ListObjectsV2::parse_response(&res.text().await.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        keys += page.contents.len();
        pages += 1;
        token = page.next_continuation_token;
        if token.is_none() {
            return Ok((keys, pages));
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Full listings, alternating proxy and direct; compares the median times.
pub(crate) fn scenario_listing(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    write_keys(env)?;
    let s3 = S3Server::start(&opts, "s3-list", &env.root, &env.logs)?;
    let cfg = config(&bucket_block(&s3.endpoint, "    cache:\n      enabled: false\n"), "");
    let proxy = Proxy::start(&opts, "proxy-list", &cfg, &env.logs)?;
    let http = client();
    let rounds = if opts.quick { 3 } else { 7 };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut pages = 0;
    env.rt.block_on(async {
        // Warm-up: connections and the file system cache.
        through_proxy(&http, &proxy).await?;
        direct(&http, &s3).await?;
        for _ in 0..rounds {
            let t = Instant::now();
            let (n, p) = through_proxy(&http, &proxy).await?;
            ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let (m, _) = direct(&http, &s3).await?;
            theirs.push(t.elapsed().as_secs_f64());
            if n != KEYS || m != KEYS {
                return Err(format!(
                    "listed {n} keys through the proxy, {m} direct; expected {KEYS}"
                ));
            }
            pages = p;
        }
        Ok::<_, String>(())
    })?;
    let (y, d) = (median(ours), median(theirs));
    let ratio = d / y;
    env.row([
        "listing 10,000 keys",
        "full paginated listing",
        &format!("{:.0} ms", y * 1000.0),
        &format!("{:.0} ms (direct to S3)", d * 1000.0),
        &format!("{ratio:.2}"),
        ">= 0.9",
    ]);
    Ok(Outcome::Done(format!(
        "{KEYS} keys in {pages} pages: proxy {:.0} ms, direct {:.0} ms, ratio {ratio:.2} (goal >= 0.9) [median of {rounds}]",
        y * 1000.0,
        d * 1000.0
    )))
}
