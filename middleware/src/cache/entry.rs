//! What the cache keeps of an object, and its Redis encoding.
//!
//! A Redis value is `YTGC` + format version + times + headers + body + an
//! XXH3-64 checksum of everything before it, every length checked on decode:
//! a value another program wrote under our prefix, one cut short or one with
//! a flipped bit decodes to `None` and is treated as a miss.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::http::headers::{REQUEST_ID, X_CACHE};

const MAGIC: &[u8; 4] = b"YTGC";
const VERSION: u8 = 2;
const CHECKSUM_LEN: usize = 8;
const FIXED_LEN: usize = 4 + 1 + 8 + 8 + 2;
const MAX_HEADERS: usize = 256;

/// Response headers kept with a cached object (plus every `x-amz-meta-*`).
/// `Content-Length`, `Content-Range` and `Accept-Ranges` are derived on each answer.
pub const STORED_HEADERS: [HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::CONTENT_ENCODING,
    header::CONTENT_DISPOSITION,
    header::CONTENT_LANGUAGE,
];

/// A complete `200 OK` object: the headers a client needs and the body.
#[derive(Debug, Clone)]
pub struct CachedObject {
    headers: HeaderMap,
    /// The head of a whole-object answer, built once: the stored headers,
    /// `Content-Length` and `Accept-Ranges`.
    head: HeaderMap,
    body: Bytes,
    stored_at_ms: u64,
    fresh_until_ms: u64,
}

/// Milliseconds since the Unix epoch (wall clock: entries are shared between hosts).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CachedObject {
    /// An object stored now, fresh for `ttl`, keeping the [`STORED_HEADERS`]
    /// of `upstream`, their values copied into one buffer of their own (a
    /// slice of the buffer the response was read into would keep it whole).
    pub fn new(upstream: &HeaderMap, body: Bytes, ttl: Duration) -> Self {
        let mut headers = HeaderMap::new();
        for name in STORED_HEADERS.iter() {
            if let Some(v) = upstream.get(name) {
                headers.insert(name.clone(), v.clone());
            }
        }
        for (name, v) in upstream.iter() {
            if name.as_str().starts_with("x-amz-meta-") {
                headers.append(name.clone(), v.clone());
            }
        }
        let headers = compact(headers);
        let now = now_ms();
        Self {
            head: whole_head(&headers, body.len()),
            headers,
            body,
            stored_at_ms: now,
            fresh_until_ms: now.saturating_add(ttl.as_millis() as u64),
        }
    }

    /// The stored headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers of a `200` answer with the whole body (built once,
    /// cloned per hit): first [`X_CACHE`], `Age` and
    /// [`REQUEST_ID`](crate::http::headers::REQUEST_ID) with placeholder
    /// values that each answer overwrites in place (an insert into a clone
    /// would grow it), then the stored ones, `Content-Length` and
    /// `Accept-Ranges`.
    pub fn whole_head(&self) -> &HeaderMap {
        &self.head
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// When it was fetched, in ms since the epoch.
    pub fn stored_at_ms(&self) -> u64 {
        self.stored_at_ms
    }

    /// Until when it is fresh, in ms since the epoch.
    pub fn fresh_until_ms(&self) -> u64 {
        self.fresh_until_ms
    }

    /// Whether it is fresh at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// The same object with freshness capped at `until_ms` (a Redis copy
    /// filling memory keeps the shorter of both lifetimes).
    pub(crate) fn capped(&self, until_ms: u64) -> Self {
        let mut copy = self.clone();
        copy.fresh_until_ms = copy.fresh_until_ms.min(until_ms);
        copy
    }

    /// The same object with `body`, the same bytes held elsewhere.
    pub(crate) fn with_body(&self, body: Bytes) -> Self {
        debug_assert_eq!(body.len(), self.body.len());
        Self { body, ..self.clone() }
    }

    /// Makes it fresh for `ttl` from when it was stored.
    pub(crate) fn set_ttl(&mut self, ttl: Duration) {
        self.fresh_until_ms = self.stored_at_ms.saturating_add(ttl.as_millis() as u64);
    }

    /// Approximate bytes held (body plus headers), for the memory weigher.
    pub(crate) fn weight(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        let head: usize = self.head.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        (self.body.len() + headers + head + 64) as u64
    }

    /// The Redis value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(FIXED_LEN + 256 + 8 + self.body.len());
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_u64(self.stored_at_ms);
        out.put_u64(self.fresh_until_ms);
        let fits = |(n, v): &(&HeaderName, &HeaderValue)| n.as_str().len() <= 0xffff && v.len() <= 0xffff;
        let count = self.headers.iter().filter(fits).take(MAX_HEADERS).count();
        out.put_u16(count as u16);
        for (name, value) in self.headers.iter().filter(fits).take(count) {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u16(value.len() as u16);
            out.put_slice(value.as_bytes());
        }
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.put_u64(sum);
        out.to_vec()
    }

    /// Decodes a Redis value; `None` for anything this version did not write.
    pub fn decode(value: Bytes) -> Option<Self> {
        if value.len() < FIXED_LEN + CHECKSUM_LEN || &value[..4] != MAGIC {
            return None;
        }
        let (data, sum) = value.split_at(value.len() - CHECKSUM_LEN);
        let sum = u64::from_be_bytes(sum.try_into().ok()?);
        if xxhash_rust::xxh3::xxh3_64(data) != sum {
            return None;
        }
        let mut buf = value.slice(..value.len() - CHECKSUM_LEN);
        buf.advance(4);
        if buf.get_u8() != VERSION {
            return None;
        }
        let stored_at_ms = buf.get_u64();
        let fresh_until_ms = buf.get_u64();
        let count = buf.get_u16() as usize;
        if count > MAX_HEADERS {
            return None;
        }
        let mut headers = HeaderMap::with_capacity(count);
        for _ in 0..count {
            let name = take_prefixed(&mut buf)?;
            let value = take_prefixed(&mut buf)?;
            let name = HeaderName::from_bytes(&name).ok()?;
            let value = HeaderValue::from_maybe_shared(value).ok()?;
            headers.append(name, value);
        }
        if buf.remaining() < 8 {
            return None;
        }
        let body_len = buf.get_u64();
        if body_len != buf.remaining() as u64 {
            return None;
        }
        Some(Self {
            head: whole_head(&headers, buf.len()),
            headers,
            body: buf,
            stored_at_ms,
            fresh_until_ms,
        })
    }
}

/// `headers` with their values copied into one buffer of their own.
///
/// A value parsed from an upstream response is a slice of the connection's
/// read buffer (hyper's, 8 KiB or more), and any slice keeps the whole
/// buffer alive: cached as they came, 4,000 objects of 4 KiB took 14,542
/// bytes of RSS each, 6,473 with this copy (`bench/mem.sh`; issue 13).
fn compact(headers: HeaderMap) -> HeaderMap {
    let total: usize = headers.values().map(HeaderValue::len).sum();
    let mut buf = BytesMut::with_capacity(total);
    for value in headers.values() {
        buf.put_slice(value.as_bytes());
    }
    let mut buf = buf.freeze();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let copy = buf.split_to(value.len());
        // The bytes are a valid value's: this cannot fail, but if it did
        // the original (pinning its buffer) is still a correct answer.
        let mut copy = HeaderValue::from_maybe_shared(copy).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        out.append(name.clone(), copy);
    }
    out
}

/// Room a hit's head keeps for the headers added on the way out
/// (`X-Cache`, `Age`, `X-Request-Id`, CORS...): a clone keeps the index
/// table's size, so the answer adds them without rehashing it.
const HEAD_ROOM: usize = 8;

/// `headers` plus `Content-Length: len` and `Accept-Ranges: bytes`, in the
/// order a range-less answer has them, and slots the answer fills in place:
/// `X-Cache`, `Age` and `X-Request-Id` (an answer for a request without an
/// id removes that one). A clone of a `HeaderMap` holds exactly its entries,
/// so a header added to it moves them all to a larger allocation.
fn whole_head(headers: &HeaderMap, len: usize) -> HeaderMap {
    let mut head = HeaderMap::with_capacity(headers.len() + 2 + HEAD_ROOM);
    // The per-hit slots first, in this order: a hit fills them by position
    // (`cache::future::answer`).
    for (name, value) in HIT_SLOTS.iter().zip(["HIT-MEMORY", "0", "-"]) {
        head.insert(name.clone(), HeaderValue::from_static(value));
    }
    for (name, value) in headers.iter() {
        if !HIT_SLOTS.contains(name) {
            head.append(name.clone(), value.clone());
        }
    }
    head.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    head.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    head
}

/// The headers a hit sets on a whole object's prebuilt head: the first
/// three of [`CachedObject::whole_head`], in this order.
pub(crate) const HIT_SLOTS: [HeaderName; 3] = [X_CACHE, header::AGE, REQUEST_ID];

/// Ages below this get a static `Age` value ([`age_value`]): 2 h 46 min,
/// past the default one-hour TTL.
const STATIC_AGES: u64 = 10_000;

/// The decimal numbers `0..STATIC_AGES`, one after another (38,890 bytes).
static AGE_DIGITS: [u8; 38_890] = {
    let mut out = [0u8; 38_890];
    let (mut n, mut at) = (0u64, 0usize);
    while n < STATIC_AGES {
        let width = age_width(n);
        let (mut i, mut v) = (width, n);
        while i > 0 {
            out[at + i - 1] = b'0' + (v % 10) as u8;
            v /= 10;
            i -= 1;
        }
        at += width;
        n += 1;
    }
    out
};

const fn age_width(n: u64) -> usize {
    match n {
        0..10 => 1,
        10..100 => 2,
        100..1000 => 3,
        _ => 4,
    }
}

/// The `Age` header of an entry `age` seconds old. Below [`STATIC_AGES`] it
/// points into a static table: no allocation, and its clones and drop count
/// no references (issue 13: `HeaderValue::from(u64)` allocated on every hit).
pub(crate) fn age_value(age: u64) -> HeaderValue {
    if age >= STATIC_AGES {
        return HeaderValue::from(age);
    }
    let start = match age {
        0..10 => age,
        10..100 => 10 + (age - 10) * 2,
        100..1000 => 190 + (age - 100) * 3,
        _ => 2890 + (age - 1000) * 4,
    } as usize;
    match std::str::from_utf8(&AGE_DIGITS[start..start + age_width(age)]) {
        Ok(digits) => HeaderValue::from_static(digits),
        Err(_) => HeaderValue::from(age),
    }
}

fn take_prefixed(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_u16() as usize;
    if buf.remaining() < len {
        return None;
    }
    Some(buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedObject {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-amz-meta-owner", HeaderValue::from_static("me"));
        h.insert("x-yatagarasu-replica", HeaderValue::from_static("p"));
        CachedObject::new(&h, Bytes::from_static(b"hello"), Duration::from_secs(60))
    }

    /// Every age reads as its decimal number, from the table and past it.
    #[test]
    fn age_values_are_the_decimal_seconds() {
        for age in (0..STATIC_AGES + 3).chain([u64::MAX]) {
            assert_eq!(age_value(age).to_str().unwrap(), age.to_string(), "age {age}");
        }
    }

    #[test]
    fn round_trips_and_keeps_only_stored_headers() {
        let obj = sample();
        assert!(obj.headers().get("x-yatagarasu-replica").is_none());
        let back = CachedObject::decode(Bytes::from(obj.encode())).unwrap();
        assert_eq!(back.body(), &Bytes::from_static(b"hello"));
        assert_eq!(back.headers(), obj.headers());
        assert_eq!(back.fresh_until_ms(), obj.fresh_until_ms());
    }

    /// Stored values are copies: none points into the buffer the upstream
    /// response was read into, which would stay allocated (whole) as long
    /// as the entry lives.
    #[test]
    fn stored_values_do_not_keep_the_read_buffer() {
        let read = Bytes::from(
            b"text/plain\"v1\"Tue, 01 Dec 2026 00:00:00 GMTme, too"
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'x', 16 * 1024))
                .collect::<Vec<u8>>(),
        );
        let mut upstream = HeaderMap::new();
        upstream.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(read.slice(0..10)).unwrap(),
        );
        upstream.insert(
            header::ETAG,
            HeaderValue::from_maybe_shared(read.slice(10..14)).unwrap(),
        );
        let mut modified = HeaderValue::from_maybe_shared(read.slice(14..43)).unwrap();
        modified.set_sensitive(true);
        upstream.insert(header::LAST_MODIFIED, modified);
        upstream.append(
            "x-amz-meta-who",
            HeaderValue::from_maybe_shared(read.slice(43..45)).unwrap(),
        );
        upstream.append(
            "x-amz-meta-who",
            HeaderValue::from_maybe_shared(read.slice(45..50)).unwrap(),
        );
        let obj = CachedObject::new(&upstream, Bytes::from_static(b"body"), Duration::from_secs(60));
        let inside = |v: &HeaderValue| read.as_ptr_range().contains(&v.as_bytes().as_ptr());
        for head in [obj.headers(), obj.whole_head()] {
            for (name, value) in head.iter() {
                assert!(!inside(value), "{name} still points into the read buffer");
            }
        }
        // Same values, same order, sensitivity kept.
        let h = obj.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/plain");
        assert_eq!(h[header::ETAG], "\"v1\"");
        assert_eq!(h[header::LAST_MODIFIED], "Tue, 01 Dec 2026 00:00:00 GMT");
        assert!(h[header::LAST_MODIFIED].is_sensitive());
        assert!(!h[header::ETAG].is_sensitive());
        let who: Vec<&str> = h
            .get_all("x-amz-meta-who")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(who, ["me", ", too"]);
    }

    #[test]
    fn foreign_and_truncated_values_are_refused() {
        assert!(CachedObject::decode(Bytes::from_static(b"hello world, not ours")).is_none());
        assert!(CachedObject::decode(Bytes::new()).is_none());
        let enc = sample().encode();
        for cut in [5, FIXED_LEN, enc.len() - 1] {
            assert!(
                CachedObject::decode(Bytes::copy_from_slice(&enc[..cut])).is_none(),
                "{cut}"
            );
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(CachedObject::decode(Bytes::from(longer)).is_none());
        let mut other_version = enc;
        other_version[4] = 99;
        assert!(CachedObject::decode(Bytes::from(other_version)).is_none());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let enc = sample().encode();
        for i in 0..enc.len() {
            for bit in 0..8 {
                let mut bad = enc.clone();
                bad[i] ^= 1 << bit;
                assert!(CachedObject::decode(Bytes::from(bad)).is_none(), "byte {i} bit {bit}");
            }
        }
    }
}
