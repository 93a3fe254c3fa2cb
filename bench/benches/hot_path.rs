//! Criterion micro-benchmarks of the proxy's hot-path pieces, through the
//! public API of `yatagarasu-middleware`: routing (`PrefixRouter::call`, and
//! on through `ObjectService`), SigV4 presigning, HS256 JWT verification, a
//! memory cache hit.
//!
//! `cargo bench -p yatagarasu-bench` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, Criterion};
use yatagarasu_bench::{CacheHit, Jwt, Presign, Routing};

fn hot_path(c: &mut Criterion) {
    let routing = Routing::new();
    c.bench_function("routing", |b| b.iter(|| routing.run()));
    c.bench_function("routing_to_object_service", |b| b.iter(|| routing.run_with_key()));

    let presign = Presign::new();
    c.bench_function("sigv4_presign", |b| b.iter(|| presign.run()));

    match Jwt::new() {
        Ok(jwt) => {
            c.bench_function("jwt_hs256_verify", |b| b.iter(|| jwt.run()));
        }
        Err(e) => eprintln!("jwt_hs256_verify: skipped ({e})"),
    }

    match CacheHit::new() {
        Ok(hit) => {
            let name = if hit.is_sync() {
                "cache_hit_memory"
            } else {
                "cache_hit_memory_block_on"
            };
            c.bench_function(name, |b| b.iter(|| hit.run()));
        }
        Err(e) => eprintln!("cache_hit_memory: skipped ({e})"),
    }
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
