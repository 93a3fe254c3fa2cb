//! The checks of one `buckets[].cors` block: origins a browser can send,
//! read-only methods, header names, and no credentials with a wildcard
//! (browsers refuse that answer, and the layer would not build).

use axum::http::HeaderName;

use crate::config::{is_wildcard, CorsConfig, CORS_METHODS};

/// The longest preflight lifetime any browser keeps (Firefox: a day).
const MAX_AGE: u64 = 86_400;

pub(super) fn cors(err: &mut impl FnMut(String, String), at: &str, cors: &CorsConfig) {
    let at = format!("{at}.cors");
    if cors.allowed_origins.is_empty() {
        err(
            format!("{at}.allowed_origins"),
            "is required: the origins allowed (https://app.example.com), or [\"*\"]".into(),
        );
    }
    for (key, list) in [
        ("allowed_origins", &cors.allowed_origins),
        ("allowed_headers", &cors.allowed_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        if list.len() > 1 && list.iter().any(|v| v.trim() == "*") {
            err(format!("{at}.{key}"), "'*' must be the only entry".into());
        }
    }
    if !is_wildcard(&cors.allowed_origins) {
        for (j, o) in cors.allowed_origins.iter().enumerate() {
            if o.trim() != "*" {
                if let Err(message) = origin(o) {
                    err(format!("{at}.allowed_origins[{j}]"), message);
                }
            }
        }
    }
    if cors.allowed_methods.is_empty() {
        err(format!("{at}.allowed_methods"), "must name at least GET".into());
    }
    for (j, m) in cors.allowed_methods.iter().enumerate() {
        if !CORS_METHODS.iter().any(|c| c.eq_ignore_ascii_case(m.trim())) {
            err(
                format!("{at}.allowed_methods[{j}]"),
                format!("'{m}' is not GET, HEAD or OPTIONS (the proxy only reads)"),
            );
        }
    }
    for (key, list) in [
        ("allowed_headers", &cors.allowed_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        if is_wildcard(list) {
            continue;
        }
        for (j, h) in list.iter().enumerate() {
            if h.trim() != "*" && HeaderName::from_bytes(h.trim().as_bytes()).is_err() {
                err(format!("{at}.{key}[{j}]"), format!("'{h}' is not a header name"));
            }
        }
    }
    if cors.max_age_seconds > MAX_AGE {
        err(
            format!("{at}.max_age_seconds"),
            format!("{} is out of range (0 to {MAX_AGE})", cors.max_age_seconds),
        );
    }
    if cors.allow_credentials {
        if is_wildcard(&cors.allowed_origins) {
            err(
                format!("{at}.allow_credentials"),
                "cannot be true with allowed_origins [\"*\"]: browsers refuse credentials with a wildcard origin; \
                 list the origins"
                    .into(),
            );
        }
        if is_wildcard(&cors.expose_headers) {
            err(
                format!("{at}.allow_credentials"),
                "cannot be true with expose_headers [\"*\"]: browsers read '*' as a header name then; list the headers"
                    .into(),
            );
        }
    }
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`,
/// lower case, without a default port, a path or a trailing `/`.
fn origin(o: &str) -> Result<(), String> {
    let bad = || format!("'{o}' is not an origin like https://app.example.com (scheme://host[:port])");
    let u = url::Url::parse(o).map_err(|_| bad())?;
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
        return Err(bad());
    }
    if !matches!(u.path(), "" | "/") {
        return Err(bad());
    }
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let canonical = format!("{}://{host}{port}", u.scheme());
    if canonical != o {
        return Err(format!(
            "'{o}' must be written as browsers send it: '{canonical}' (lower case, no default port, no path or '/')"
        ));
    }
    Ok(())
}
