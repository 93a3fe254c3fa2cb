//! Rate limiting: one token bucket for the process and/or one per client IP.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use ipnet::IpNet;
use tower::{Layer, Service};

use super::{retry_after_secs, ResponseFuture};
use crate::error::S3Error;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Requests between two sweeps of idle per-IP buckets.
const SWEEP_EVERY: u64 = 4096;

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Quota::per_second(rate).allow_burst(burst)
}

/// Token buckets (GCRA, from `governor`): `requests_per_second` sustained,
/// `burst` at once. The per-IP bucket keys on the peer address of axum's
/// `ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info`); requests without one only count
/// against the global bucket. Behind load balancers listed with
/// [`with_trusted_proxies`](Self::with_trusted_proxies), the client is the
/// right-most `X-Forwarded-For` address that is not itself a trusted proxy.
/// An IPv6 client is keyed by its `/64` ([`bucket_key`]). Refusals are
/// `429 SlowDown` with `Retry-After`.
#[derive(Clone, Default)]
pub struct RateLimitLayer {
    global: Option<Arc<DefaultDirectRateLimiter>>,
    per_ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    trusted: Arc<[IpNet]>,
    calls: Arc<AtomicU64>,
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy (entries
/// left of it could be forged by the client).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed entry ends the chain of trust.
            Err(_) => break,
        }
    }
    client
}

/// The per-IP bucket `ip` counts against: an IPv4 address (also written
/// IPv4-mapped, `::ffff:a.b.c.d`, as a dual-stack listener or a load balancer
/// may), or the `/64` of an IPv6 one. A single IPv6 host is routinely given a
/// whole `/64` and can send from any of its 2^64 addresses: keyed by the
/// address, it would get a fresh bucket per request.
pub fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("global", &self.global.is_some())
            .field("per_ip", &self.per_ip.is_some())
            .finish()
    }
}

impl RateLimitLayer {
    /// No limit until [`with_global`](Self::with_global) or [`with_per_ip`](Self::with_per_ip).
    pub fn new() -> Self {
        Self::default()
    }

    /// One bucket for every request.
    pub fn with_global(mut self, requests_per_second: u32, burst: u32) -> Self {
        self.global = Some(Arc::new(DefaultDirectRateLimiter::direct(quota(
            requests_per_second,
            burst,
        ))));
        self
    }

    /// One bucket per client IP.
    pub fn with_per_ip(mut self, requests_per_second: u32, burst: u32) -> Self {
        self.per_ip = Some(Arc::new(DefaultKeyedRateLimiter::keyed(quota(
            requests_per_second,
            burst,
        ))));
        self
    }

    /// Takes the per-IP key from `X-Forwarded-For` when the peer is one of
    /// these proxies (load balancers in front of the proxy).
    pub fn with_trusted_proxies(mut self, trusted: Vec<IpNet>) -> Self {
        self.trusted = trusted.into();
        self
    }

    /// How long the caller must wait, when it is over a limit.
    fn check(&self, ip: Option<IpAddr>) -> Option<Duration> {
        // The limiter's own clock: building a clock per call costs a CPUID
        // instruction, slow on VMs (it was 40% of a cache hit's CPU).
        if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
            if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
            if let Err(not_until) = limiter.check_key(&ip) {
                return Some(not_until.wait_time_from(limiter.clock().now()));
            }
        }
        if let Some(limiter) = &self.global {
            if let Err(not_until) = limiter.check() {
                return Some(not_until.wait_time_from(limiter.clock().now()));
            }
        }
        None
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`]; clones share the buckets.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> RateLimit<S> {
    /// A shortcut for [`RateLimitLayer::new`].
    pub fn layer() -> RateLimitLayer {
        RateLimitLayer::new()
    }

    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| bucket_key(client_ip(c.0.ip(), req.headers(), &self.layer.trusted)));
        match self.layer.check(ip) {
            None => ResponseFuture::inner(self.inner.call(req), None),
            Some(wait) => ResponseFuture::refused(
                S3Error::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "SlowDown",
                    "Please reduce your request rate.",
                )
                .with_retry_after(retry_after_secs(wait))
                .with_request_id_of(req.headers())
                .into_response(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap());
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // Right-most untrusted hop; the forged left-most entry is ignored.
        assert_eq!(client_ip(peer, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        // An untrusted peer's header is not believed.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        // No trusted proxies configured: the peer.
        assert_eq!(client_ip(peer, &h, &[]), peer);
        // Garbage ends the chain at the last good hop.
        h.insert(X_FORWARDED_FOR, "nonsense, 10.9.9.9".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), "10.9.9.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |ip: &str| bucket_key(ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::a"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(key("2001:db8:1:2::a"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::a"), key("2001:db8:1:3::a"));
        assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.9"));
        assert_ne!(key("203.0.113.9"), key("203.0.113.10"));
        // Not every ::/64 address is mapped IPv4: ::1 stays IPv6.
        assert_eq!(key("::1"), key("::2"));
        assert_ne!(key("::1"), key("0.0.0.1"));
    }

    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn from(ip: [u8; 4]) -> Request<Body> {
        let mut req = Request::new(Body::empty());
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        req
    }

    #[tokio::test]
    async fn per_ip_buckets_are_separate_and_refusals_say_when() {
        let svc = RateLimitLayer::new()
            .with_per_ip(1, 2)
            .layer(service_fn(|_req: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }));
        for _ in 0..2 {
            let res = svc.clone().oneshot(from([10, 0, 0, 1])).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        let res = svc.clone().oneshot(from([10, 0, 0, 1])).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        let res = svc.oneshot(from([10, 0, 0, 2])).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn global_bucket_counts_everyone() {
        let svc = RateLimitLayer::new()
            .with_global(1, 1)
            .layer(service_fn(|_req: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }));
        assert_eq!(
            svc.clone().oneshot(from([10, 0, 0, 1])).await.unwrap().status(),
            StatusCode::OK
        );
        let res = svc.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
