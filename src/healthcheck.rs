//! `yatagarasu healthcheck`: the binary asks a running proxy whether it is
//! healthy, for the container image's `HEALTHCHECK`, compose `healthcheck:`
//! and exec probes (the runtime image has no curl or wget).
//!
//! Where it asks comes from the same config as `serve`: the metrics listener
//! when it is enabled (it answers `/health` and `/ready` too, and never asks
//! for a client certificate), else the proxy's listener; on loopback when
//! the listener binds every address (`0.0.0.0` -> `127.0.0.1`, `[::]` ->
//! `[::1]`), else on the address it binds. HTTPS when that listener has TLS,
//! without verifying the certificate: this is a self-check of the local
//! process, as the kubelet's HTTPS probes do, not a check of its identity.
//!
//! Exit codes follow Docker's `HEALTHCHECK`: 0 when the answer is `200`, 1
//! for anything else (never 2, which Docker reserves).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use url::Url;

use crate::config::{self, Config, ConfigErrors, Format, TlsConfig};

/// The default time to wait for an answer, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a non-200 body quoted in the failure line.
const EXCERPT_CHARS: usize = 200;

/// The most of a non-200 body read.
const BODY_READ_LIMIT: usize = 4096;

/// What stands in for a variable the healthcheck's environment lacks (see
/// [`load_config`]): long enough for the keys with a minimum length.
const PLACEHOLDER: &str = "unset-in-the-healthcheck-environment";

/// The keys that say where the healthcheck connects: a `${VAR}` in them
/// must be resolvable, a placeholder would send it elsewhere.
const LISTENER_KEYS: [&str; 3] = ["server.address", "server.tls", "metrics"];

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/health`: the process answers.
    Health,
    /// `/ready`: every bucket has a usable replica and no drain is under way.
    Ready,
}

impl Endpoint {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Health => "/health",
            Self::Ready => "/ready",
        }
    }
}

/// Why the healthcheck failed: one line each.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The config could not be read, so where to ask is unknown.
    #[error("cannot read the config to find the listener to ask: {}", one_line(.0))]
    Config(ConfigErrors),
    /// The config names no listener the healthcheck can ask.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The listener did not answer 200.
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// The config names no listener the healthcheck can reach.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The address does not parse (a config that was not validated).
    #[error("{key}: '{value}' is not an address")]
    Address {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// Port 0: the port is picked at start and logged, not known from the config.
    #[error("{key} is 0 (a port picked at start): the healthcheck cannot know it; pass --url")]
    PortPickedAtStart {
        /// The key naming the port.
        key: &'static str,
    },
    /// The listener asks every client for a certificate the healthcheck does not have.
    #[error("{key}.client_ca_file is set (mutual TLS) and the healthcheck has no client certificate to present{hint}")]
    ClientCertificateRequired {
        /// `server.tls` or `metrics.tls`.
        key: &'static str,
        /// What to do instead, if anything.
        hint: &'static str,
    },
}

/// The listener did not answer 200.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens there.
    #[error("{url}: connection refused (is the proxy running, listening there?)")]
    Refused {
        /// The URL asked.
        url: Url,
    },
    /// No answer in time.
    #[error("{url}: no answer within {} s", .timeout.as_secs_f64())]
    Timeout {
        /// The URL asked.
        url: Url,
        /// The time allowed.
        timeout: Duration,
    },
    /// Connecting failed otherwise (TLS handshake, unreachable address).
    #[error("{url}: cannot connect: {reason}")]
    Connect {
        /// The URL asked.
        url: Url,
        /// The innermost cause.
        reason: String,
    },
    /// An answer other than 200.
    #[error("{url} answered {status}: {excerpt}")]
    Status {
        /// The URL asked.
        url: Url,
        /// The status.
        status: reqwest::StatusCode,
        /// The start of the body, on one line.
        excerpt: String,
    },
    /// The request failed after connecting.
    #[error("{url}: {reason}")]
    Request {
        /// The URL asked.
        url: Url,
        /// The innermost cause.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Reads the config as `serve` does (`${VAR}` substitution, `YATAGARASU__*`
/// overrides, validation). When the only problems are `${VAR}`s this
/// environment lacks, in keys other than the listeners' (credentials,
/// tokens, passwords), it is read again with a placeholder for each: the
/// healthcheck needs the listeners, not the secrets. A `${VAR}` missing
/// from a listener key is an error naming it.
pub fn load_config(path: &Path) -> Result<Config, HealthcheckError> {
    let errors = match config::load_file(path) {
        Ok(config) => return Ok(config),
        Err(errors) => errors,
    };
    let Some(unset) = unset_variables_outside_listeners(&errors) else {
        return Err(HealthcheckError::Config(errors));
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Err(HealthcheckError::Config(errors));
    };
    let overrides: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(config::ENV_PREFIX))
        .collect();
    let lookup = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| unset.iter().any(|u| u == name).then(|| PLACEHOLDER.to_owned()))
    };
    config::load(&text, Format::from_path(path), &errors.source_name, &lookup, &overrides)
        .map_err(|_| HealthcheckError::Config(errors))
}

/// The variables named by "environment variable X is not set" errors, when
/// every error is one and none is in a listener key.
fn unset_variables_outside_listeners(errors: &ConfigErrors) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for e in &errors.errors {
        let name = e
            .message
            .strip_prefix("environment variable ")?
            .split_once(" is not set")?
            .0;
        let in_listener = LISTENER_KEYS
            .iter()
            .any(|k| e.path == *k || e.path.strip_prefix(k).is_some_and(|rest| rest.starts_with('.')));
        if in_listener {
            return None;
        }
        names.push(name.to_owned());
    }
    Some(names)
}

/// The URL to ask: `endpoint` on the metrics listener when it is enabled,
/// else on the proxy's listener.
pub fn target(config: &Config, endpoint: Endpoint) -> Result<Url, TargetError> {
    let (key, addr, tls, tls_key) = if config.metrics.enabled {
        let addr = config.metrics_socket_addr().ok_or_else(|| TargetError::Address {
            key: "metrics.address",
            value: config.metrics.address.clone(),
        })?;
        ("metrics.port", addr, config.metrics.tls.as_ref(), "metrics.tls")
    } else {
        let addr: SocketAddr = config.server.address.parse().map_err(|_| TargetError::Address {
            key: "server.address",
            value: config.server.address.clone(),
        })?;
        ("server.address", addr, config.server.tls.as_ref(), "server.tls")
    };
    if addr.port() == 0 {
        return Err(TargetError::PortPickedAtStart { key });
    }
    if tls.is_some_and(|t: &TlsConfig| t.client_ca_file.is_some()) {
        let hint = if config.metrics.enabled {
            ""
        } else {
            ": enable the metrics listener (metrics.enabled, without client_ca_file), which it asks instead"
        };
        return Err(TargetError::ClientCertificateRequired { key: tls_key, hint });
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}{}", SocketAddr::new(ip, addr.port()), endpoint.path());
    Ok(Url::parse(&url).expect("an IP, a port and a path make a URL"))
}

/// `GET url`: `Ok` on 200. Redirects are not followed, proxies from the
/// environment not used, certificates not verified (a self-check of the
/// local process; see the module docs).
pub async fn probe(url: &Url, timeout: Duration) -> Result<(), ProbeError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| ProbeError::Client(innermost(&e)))?;
    let mut res = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| request_error(url, timeout, &e))?;
    let status = res.status();
    if status == reqwest::StatusCode::OK {
        return Ok(());
    }
    let mut body = Vec::new();
    while body.len() < BODY_READ_LIMIT {
        match res.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            // The status says enough; a body cut short is quoted as far as it came.
            Ok(None) | Err(_) => break,
        }
    }
    Err(ProbeError::Status {
        url: url.clone(),
        status,
        excerpt: excerpt(&body),
    })
}

fn request_error(url: &Url, timeout: Duration, e: &reqwest::Error) -> ProbeError {
    let url = url.clone();
    if e.is_timeout() {
        return ProbeError::Timeout { url, timeout };
    }
    if e.is_connect() {
        let refused = std::iter::successors(std::error::Error::source(e), |s| s.source()).any(|s| {
            s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if refused {
            return ProbeError::Refused { url };
        }
        return ProbeError::Connect {
            url,
            reason: innermost(e),
        };
    }
    ProbeError::Request {
        url,
        reason: innermost(e),
    }
}

/// The last cause of `e` (reqwest's own message repeats the URL).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |s| s.source())
        .last()
        .map_or_else(String::new, ToString::to_string)
}

/// The start of a body on one line: whitespace runs become one space.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "(empty body)".to_owned();
    }
    match line.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// A config's errors on one line.
fn one_line(errors: &ConfigErrors) -> String {
    let list: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    format!("{}: {}", errors.source_name, list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let base = "buckets: [{ name: a, path_prefix: /a, s3: { bucket: b, region: us-east-1 } }]\n";
        config::load_str(&format!("{base}{yaml}"), "<test>", &|_| None).unwrap()
    }

    #[test]
    fn asks_the_metrics_listener_on_loopback_when_it_is_enabled() {
        let c = config("server: { address: \"0.0.0.0:8080\" }\nmetrics: { port: 9191 }\n");
        assert_eq!(
            target(&c, Endpoint::Health).unwrap().as_str(),
            "http://127.0.0.1:9191/health"
        );
        let c = config("server: { address: \"[::]:8080\" }\nmetrics: { port: 9191 }\n");
        assert_eq!(target(&c, Endpoint::Ready).unwrap().as_str(), "http://[::1]:9191/ready");
        let c = config("server: { address: \"0.0.0.0:8080\" }\nmetrics: { address: \"10.1.2.3\", port: 9191 }\n");
        assert_eq!(
            target(&c, Endpoint::Health).unwrap().as_str(),
            "http://10.1.2.3:9191/health"
        );
    }

    #[test]
    fn asks_the_proxy_listener_without_metrics() {
        let c = config("server: { address: \"0.0.0.0:8081\" }\nmetrics: { enabled: false }\n");
        assert_eq!(
            target(&c, Endpoint::Ready).unwrap().as_str(),
            "http://127.0.0.1:8081/ready"
        );
    }

    #[test]
    fn refuses_a_port_picked_at_start() {
        let c = config("server: { address: \"127.0.0.1:0\" }\nmetrics: { enabled: false }\n");
        let e = target(&c, Endpoint::Health).unwrap_err().to_string();
        assert!(e.contains("server.address is 0") && e.contains("--url"), "{e}");
    }

    #[test]
    fn the_excerpt_is_one_bounded_line() {
        assert_eq!(
            excerpt(b"{\"status\":\n  \"not_ready\"}\n"),
            "{\"status\": \"not_ready\"}"
        );
        assert_eq!(excerpt(b""), "(empty body)");
        let long = "é".repeat(500);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn only_unset_variables_outside_the_listeners_get_placeholders() {
        let yaml =
            "buckets: [{ name: a, path_prefix: /a, s3: { bucket: b, region: us-east-1, access_key: k, secret_key: \"${S}\" } }]\n\
                    metrics: { port: \"${P}\" }\n";
        let errors = config::load_str(yaml, "<test>", &|_| None).unwrap_err();
        assert_eq!(unset_variables_outside_listeners(&errors), None);
        let errors = config::load_str(yaml, "<test>", &|n| (n == "P").then(|| "9191".to_owned())).unwrap_err();
        assert_eq!(
            unset_variables_outside_listeners(&errors),
            Some(vec!["S".to_owned()]),
            "{errors}"
        );
    }
}
