//! Micro-benchmarks of hot-path pieces, timed in-process (the fixtures of
//! the `yatagarasu_bench` library; `cargo bench -p yatagarasu-bench` runs the
//! criterion version with confidence intervals).

use std::time::Duration;

use yatagarasu_bench as fixtures;

use crate::measure::{fmt_ns, fmt_ratio};
use crate::suite::{Env, Outcome, Scenario};

/// The micro-benchmark scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "micro",
    about: "PrefixRouter (and ObjectService) call, SigV4 presign, HS256 JWT, memory cache hit; in-binary timing",
    needs_bin: false,
    run,
};

fn run(env: &mut Env) -> Result<Outcome, String> {
    let budget = Duration::from_millis(if env.opts.quick { 400 } else { 2000 });
    let mut parts = Vec::new();
    let mut record = |env: &mut Env, name: &str, ns: Result<f64, String>, upstream: f64| {
        let upstream_cell = if upstream.is_nan() {
            String::new()
        } else {
            format!("{} (upstream Yatagarasu)", fmt_ns(upstream))
        };
        match ns {
            Ok(ns) => {
                let ratio = ns / upstream;
                env.row_with_logs(["micro", name, &fmt_ns(ns), &upstream_cell, &fmt_ratio(ratio), ""], "–");
                parts.push(format!("{name} {}", fmt_ns(ns)));
            }
            Err(e) => {
                env.row_with_logs(["micro", name, "skipped", "", "", ""], "–");
                parts.push(format!("{name} SKIPPED ({e})"));
            }
        }
    };
    let routing = fixtures::Routing::new();
    if (routing.run(), routing.run_with_key()) != (200, 200) {
        return Err("the routing fixture does not answer 200".into());
    }
    record(
        env,
        "routing (PrefixRouter::call)",
        Ok(fixtures::time_per_call(budget, || routing.run())),
        fixtures::UPSTREAM_ROUTING_NS,
    );
    record(
        env,
        "routing + ObjectService",
        Ok(fixtures::time_per_call(budget, || routing.run_with_key())),
        f64::NAN,
    );
    let presign = fixtures::Presign::new();
    record(
        env,
        "sigv4-presign",
        Ok(fixtures::time_per_call(budget, || presign.run())),
        fixtures::UPSTREAM_SIGV4_NS,
    );
    let jwt = fixtures::Jwt::new().map(|j| fixtures::time_per_call(budget, || j.run()));
    record(env, "jwt-hs256", jwt, fixtures::UPSTREAM_JWT_NS);
    let cache = fixtures::CacheHit::new().map(|c| fixtures::time_per_call(budget, || c.run()));
    record(env, "cache-hit (Cache::call)", cache, fixtures::UPSTREAM_CACHE_HIT_NS);
    Ok(Outcome::Done(format!(
        "{} [in-binary loop, {} ms each; ratio = ours / upstream's figure (lower is faster); criterion: cargo bench -p yatagarasu-bench]",
        parts.join(", "),
        budget.as_millis()
    )))
}
