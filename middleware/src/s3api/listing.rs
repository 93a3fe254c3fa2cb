//! `ListObjectsV2` and `ListObjects` (V1): the client's parameters, the
//! upstream request they become, and S3's XML answer built from the
//! replica's page.

use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rusty_s3::actions::ListObjectsV2Response;

use super::token::TokenKey;
use crate::error::{escape_into, S3Error};
use crate::object::ObjectRequest;

/// S3's page size limit (and default).
pub const MAX_KEYS: u32 = 1000;

/// Which listing API the client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListVersion {
    /// `ListObjects` (`marker`, `NextMarker`).
    V1,
    /// `ListObjectsV2` (`list-type=2`, continuation tokens).
    V2,
}

/// The parameters of one listing call, as the client sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListParams {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up to common prefixes at this string.
    pub delimiter: Option<String>,
    /// Page size, at most [`MAX_KEYS`].
    pub max_keys: u32,
    /// V2 `start-after`.
    pub start_after: Option<String>,
    /// V2 `continuation-token` (the proxy's own).
    pub continuation_token: Option<String>,
    /// V1 `marker`.
    pub marker: Option<String>,
    /// V2 `fetch-owner` (V1 always lists owners).
    pub fetch_owner: bool,
    /// `encoding-type=url`.
    pub url_encoded: bool,
}

/// The listing parameters that carry keys or tokens (checked for UTF-8).
const TEXT_PARAMS: [&str; 5] = ["prefix", "delimiter", "start-after", "continuation-token", "marker"];

fn invalid_argument(message: &'static str) -> S3Error {
    S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
}

impl ListParams {
    /// Reads a client's query string.
    #[allow(clippy::result_large_err)] // mapped to a response at once
    pub fn parse(query: Option<&str>) -> Result<Self, S3Error> {
        let mut p = ListParams {
            max_keys: MAX_KEYS,
            ..Default::default()
        };
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            // The parser replaces bytes that are not UTF-8: listing another
            // prefix than the one asked for. Refused instead, as S3 does.
            if TEXT_PARAMS.contains(&name.as_ref())
                && value.contains(char::REPLACEMENT_CHARACTER)
                && !decodes_strictly(query.unwrap_or_default(), &name)
            {
                return Err(S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    format!("The {name} parameter is not valid UTF-8"),
                ));
            }
            let value = value.into_owned();
            match name.as_ref() {
                "prefix" => p.prefix = value,
                "delimiter" if !value.is_empty() => p.delimiter = Some(value),
                "max-keys" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| invalid_argument("Provided max-keys not an integer or within integer range"))?;
                    if n < 0 {
                        return Err(invalid_argument(
                            "Argument maxKeys must be an integer between 0 and 2147483647",
                        ));
                    }
                    p.max_keys = n.min(i64::from(MAX_KEYS)) as u32;
                }
                "start-after" if !value.is_empty() => p.start_after = Some(value),
                "continuation-token" => p.continuation_token = Some(value),
                "marker" if !value.is_empty() => p.marker = Some(value),
                "fetch-owner" => p.fetch_owner = value.eq_ignore_ascii_case("true"),
                "encoding-type" => {
                    if !value.eq_ignore_ascii_case("url") {
                        return Err(invalid_argument("Invalid Encoding Method specified in Request"));
                    }
                    p.url_encoded = true;
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// The upstream `ListObjectsV2` call for this page: continuation tokens and
    /// markers become `start-after`, so any replica can serve it.
    #[allow(clippy::result_large_err)] // mapped to a response at once
    pub fn upstream(&self, version: ListVersion, bucket: &str, tokens: &TokenKey) -> Result<ObjectRequest, S3Error> {
        let after = match version {
            ListVersion::V1 => self.marker.clone(),
            ListVersion::V2 => match &self.continuation_token {
                Some(token) => Some(
                    tokens
                        .open(bucket, token)
                        .ok_or_else(|| invalid_argument("The continuation token provided is incorrect"))?,
                ),
                None => self.start_after.clone(),
            },
        };
        let mut query = vec![("max-keys".to_owned(), self.max_keys.to_string())];
        if !self.prefix.is_empty() {
            query.push(("prefix".to_owned(), self.prefix.clone()));
        }
        if let Some(d) = &self.delimiter {
            query.push(("delimiter".to_owned(), d.clone()));
        }
        if let Some(after) = after {
            query.push(("start-after".to_owned(), after));
        }
        if self.fetch_owner || version == ListVersion::V1 {
            query.push(("fetch-owner".to_owned(), "true".to_owned()));
        }
        Ok(ObjectRequest::list_objects_v2(query))
    }
}

/// Characters kept as they are in `encoding-type=url` values: S3's
/// unreserved set (a space is `%20`, never `+`, so both decoders agree).
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

struct Xml {
    out: String,
    url_encoded: bool,
}

impl Xml {
    fn text(&mut self, tag: &str, value: &str) {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        escape_into(&mut self.out, value);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }

    /// A key-like value: URL-encoded when the client asked for it.
    fn key(&mut self, tag: &str, value: &str) {
        if self.url_encoded {
            let encoded = utf8_percent_encode(value, URL_VALUE).to_string();
            self.text(tag, &encoded);
        } else {
            self.text(tag, value);
        }
    }
}

/// The client's XML for one page read from a replica. `name` is the
/// client-visible bucket; the next-page token or marker is the proxy's own.
pub fn render(
    version: ListVersion,
    name: &str,
    params: &ListParams,
    page: &ListObjectsV2Response,
    tokens: &TokenKey,
) -> String {
    let truncated = page.next_continuation_token.is_some();
    let last_key = page.contents.last().map(|c| c.key.as_str());
    let last_prefix = page.common_prefixes.last().map(|p| p.prefix.as_str());
    let last = match (last_key, last_prefix) {
        (Some(k), Some(p)) => Some(k.max(p)),
        (k, p) => k.or(p),
    };
    let mut x = Xml {
        out: String::with_capacity(256 + page.contents.len() * 256),
        url_encoded: params.url_encoded,
    };
    x.out.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    x.text("Name", name);
    x.key("Prefix", &params.prefix);
    match version {
        ListVersion::V1 => {
            x.key("Marker", params.marker.as_deref().unwrap_or_default());
            if let (true, Some(last)) = (truncated, last) {
                x.key("NextMarker", last);
            }
        }
        ListVersion::V2 => {
            if let Some(token) = &params.continuation_token {
                x.text("ContinuationToken", token);
            }
            if let (true, Some(last)) = (truncated, last) {
                x.text("NextContinuationToken", &tokens.mint(name, last));
            }
            if let Some(after) = &params.start_after {
                x.key("StartAfter", after);
            }
            let count = page.contents.len() + page.common_prefixes.len();
            x.text("KeyCount", &count.to_string());
        }
    }
    x.text("MaxKeys", &params.max_keys.to_string());
    if let Some(d) = &params.delimiter {
        x.key("Delimiter", d);
    }
    if params.url_encoded {
        x.text("EncodingType", "url");
    }
    x.text("IsTruncated", if truncated { "true" } else { "false" });
    let owners = version == ListVersion::V1 || params.fetch_owner;
    for c in &page.contents {
        x.out.push_str("<Contents>");
        x.key("Key", &c.key);
        if let Some(v) = &c.last_modified {
            x.text("LastModified", v);
        }
        if let Some(v) = &c.etag {
            x.text("ETag", v);
        }
        x.text("Size", &c.size.unwrap_or(0).to_string());
        if let (true, Some(owner)) = (owners, &c.owner) {
            x.out.push_str("<Owner>");
            x.text("ID", &owner.id);
            if let Some(d) = &owner.display_name {
                x.text("DisplayName", d);
            }
            x.out.push_str("</Owner>");
        }
        x.text("StorageClass", c.storage_class.as_deref().unwrap_or("STANDARD"));
        x.out.push_str("</Contents>");
    }
    for p in &page.common_prefixes {
        x.out.push_str("<CommonPrefixes>");
        x.key("Prefix", &p.prefix);
        x.out.push_str("</CommonPrefixes>");
    }
    x.out.push_str("</ListBucketResult>");
    x.out
}

/// Whether every value of `name` in `query` decodes to UTF-8 (form
/// encoding: `+` is a space). A value may hold U+FFFD sent as such.
fn decodes_strictly(query: &str, name: &str) -> bool {
    query.split('&').all(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
        };
        match decode(n) {
            Ok(n) if n == name => decode(v).is_ok(),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use rusty_s3::actions::ListObjectsV2;

    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>replica-bkt</Name><Prefix></Prefix>
<KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>
<NextContinuationToken>replica-token</NextContinuationToken>
<Contents><Key>a+b%26c.txt</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;e1&quot;</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>z.txt</Key><Size>1</Size></Contents>
<CommonPrefixes><Prefix>dir%2F</Prefix></CommonPrefixes>
</ListBucketResult>"#;

    #[test]
    fn parameters_that_are_not_utf8_are_refused() {
        for q in [
            "list-type=2&prefix=%ff%fe",
            "marker=%ff",
            "start-after=a%c3",
            "delimiter=%80",
        ] {
            assert_eq!(ListParams::parse(Some(q)).unwrap_err().code(), "InvalidArgument", "{q}");
        }
        // U+FFFD itself is a valid prefix, sent raw or encoded; unknown
        // parameters are not read at all.
        for q in ["prefix=%EF%BF%BD", "prefix=\u{FFFD}", "x-other=%ff&prefix=a"] {
            assert!(ListParams::parse(Some(q)).is_ok(), "{q}");
        }
        assert_eq!(ListParams::parse(Some("prefix=%EF%BF%BD")).unwrap().prefix, "\u{FFFD}");
    }

    #[test]
    fn parses_client_parameters() {
        let p = ListParams::parse(Some(
            "list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=5000&fetch-owner=true",
        ))
        .unwrap();
        assert_eq!(p.prefix, "a/b");
        assert_eq!(p.delimiter.as_deref(), Some("/"));
        assert_eq!(p.max_keys, 1000);
        assert!(p.fetch_owner);
        assert_eq!(
            ListParams::parse(Some("max-keys=x")).unwrap_err().code(),
            "InvalidArgument"
        );
        assert_eq!(
            ListParams::parse(Some("max-keys=-1")).unwrap_err().code(),
            "InvalidArgument"
        );
        assert_eq!(
            ListParams::parse(Some("encoding-type=b64")).unwrap_err().code(),
            "InvalidArgument"
        );
    }

    #[test]
    fn tokens_and_markers_become_start_after() {
        let tokens = TokenKey::new(b"t");
        let mut p = ListParams::parse(Some("list-type=2&start-after=x")).unwrap();
        p.continuation_token = Some(tokens.mint("data", "k/0500"));
        let req = p.upstream(ListVersion::V2, "data", &tokens).unwrap();
        assert!(req.query().contains(&("start-after".to_owned(), "k/0500".to_owned())));
        p.continuation_token = Some("forged".into());
        assert!(p.upstream(ListVersion::V2, "data", &tokens).is_err());
        let p = ListParams::parse(Some("marker=m1")).unwrap();
        let req = p.upstream(ListVersion::V1, "data", &tokens).unwrap();
        assert!(req.query().contains(&("start-after".to_owned(), "m1".to_owned())));
    }

    #[test]
    fn renders_the_client_bucket_and_the_proxy_token() {
        let page = ListObjectsV2::parse_response(PAGE).unwrap();
        let tokens = TokenKey::new(b"t");
        let params = ListParams::parse(Some("list-type=2&max-keys=3")).unwrap();
        let xml = render(ListVersion::V2, "data", &params, &page, &tokens);
        assert!(xml.contains("<Name>data</Name>"), "{xml}");
        assert!(!xml.contains("replica"), "{xml}");
        assert!(xml.contains("<Key>a b&amp;c.txt</Key>"), "{xml}");
        assert!(xml.contains("<ETag>&quot;e1&quot;</ETag>"), "{xml}");
        assert!(xml.contains("<KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>"), "{xml}");
        let token = xml
            .split("<NextContinuationToken>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        assert_eq!(tokens.open("data", token).as_deref(), Some("z.txt"));
        let encoded = ListParams::parse(Some("encoding-type=url")).unwrap();
        let xml = render(ListVersion::V1, "data", &encoded, &page, &tokens);
        assert!(xml.contains("<Key>a%20b%26c.txt</Key>"), "{xml}");
        assert!(xml.contains("<NextMarker>z.txt</NextMarker>"), "{xml}");
        assert!(xml.contains("<Prefix>dir/</Prefix>"), "{xml}");
    }
}
