//! The signed request: a signature's parts read from the `Authorization`
//! header or the presigned query, and the canonical request they sign.

use http::{HeaderMap, Method};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{SigV4Error, ALGORITHM, EMPTY_SHA256, MAX_EXPIRES_SECONDS};

/// The parts of a signature, from the header or the query.
pub(super) struct Signed<'a> {
    pub(super) access_key: &'a str,
    pub(super) date: &'a str,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
    pub(super) signed_headers: &'a str,
    pub(super) signature: &'a str,
    pub(super) amz_date: &'a str,
    pub(super) presigned_expires: Option<u64>,
    pub(super) payload: String,
}

pub(super) fn parse_credential(credential: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = credential.rsplitn(5, '/');
    let terminator = parts.next()?;
    let service = parts.next()?;
    let region = parts.next()?;
    let date = parts.next()?;
    let key = parts.next()?;
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    (terminator == "aws4_request" && date_ok && !key.is_empty()).then_some((key, date, region, service))
}

pub(super) fn parse_header<'a>(value: &'a str, headers: &'a HeaderMap) -> Result<Signed<'a>, SigV4Error> {
    let rest = value[ALGORITHM.len()..].trim_start();
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(SigV4Error::MalformedHeader("unexpected component")),
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(SigV4Error::MalformedHeader(
            "Credential, SignedHeaders and Signature are required",
        ));
    };
    let (access_key, date, region, service) = parse_credential(credential).ok_or(SigV4Error::MalformedHeader(
        "the Credential is not KEY/DATE/REGION/s3/aws4_request",
    ))?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(SigV4Error::MalformedHeader("the x-amz-date header is required"))?;
    let payload = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(EMPTY_SHA256)
        .to_owned();
    Ok(Signed {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
        amz_date,
        presigned_expires: None,
        payload,
    })
}

pub(super) fn parse_query(query: &[(String, String)]) -> Result<Signed<'_>, SigV4Error> {
    let get = |name: &'static str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(SigV4Error::MalformedQuery(
                "X-Amz-Credential, -Date, -Expires, -SignedHeaders and -Signature are required",
            ))
    };
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(SigV4Error::MalformedQuery("X-Amz-Algorithm must be AWS4-HMAC-SHA256"));
    }
    let (access_key, date, region, service) = parse_credential(get("X-Amz-Credential")?).ok_or(
        SigV4Error::MalformedQuery("the X-Amz-Credential is not KEY/DATE/REGION/s3/aws4_request"),
    )?;
    let expires: u64 = get("X-Amz-Expires")?
        .parse()
        .map_err(|_| SigV4Error::MalformedQuery("X-Amz-Expires must be a number of seconds"))?;
    if expires == 0 || expires > MAX_EXPIRES_SECONDS {
        return Err(SigV4Error::MalformedQuery(
            "X-Amz-Expires must be between 1 and 604800 seconds",
        ));
    }
    let payload = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Content-Sha256"))
        .map_or_else(|| "UNSIGNED-PAYLOAD".to_owned(), |(_, v)| v.clone());
    Ok(Signed {
        access_key,
        date,
        region,
        service,
        signed_headers: get("X-Amz-SignedHeaders")?,
        signature: get("X-Amz-Signature")?,
        amz_date: get("X-Amz-Date")?,
        presigned_expires: Some(expires),
        payload,
    })
}

/// Seconds since the epoch of an ISO 8601 basic UTC time (`20130524T000000Z`).
pub(super) fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// SigV4's URI encoding: everything but `A-Za-z0-9-_.~` (and `/` in paths).
const SIGV4_QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
const SIGV4_PATH: &AsciiSet = &SIGV4_QUERY.remove(b'/');

/// The canonical request of `s`. `authority` is the request URI's authority:
/// an HTTP/2 request carries its host there (`:authority`), not in a `Host`
/// header, and it is what the client signed as `host`.
pub(super) fn canonical_request(
    method: &Method,
    path: &str,
    authority: Option<&str>,
    query: &[(String, String)],
    headers: &HeaderMap,
    s: &Signed<'_>,
) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut uri = utf8_percent_encode(&decoded, SIGV4_PATH).to_string();
    if uri.is_empty() {
        uri.push('/');
    }
    let mut params: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(s.presigned_expires.is_some() && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                utf8_percent_encode(k, SIGV4_QUERY).to_string(),
                utf8_percent_encode(v, SIGV4_QUERY).to_string(),
            )
        })
        .collect();
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in s.signed_headers.split(';') {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let values = match authority {
            Some(authority) if values.is_empty() && name == "host" => vec![authority.to_owned()],
            _ => values,
        };
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{}",
        s.signed_headers, s.payload
    )
}
