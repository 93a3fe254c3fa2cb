//! The upstream HTTP clients (one pool per event loop, shared by the
//! replicas; one set per private CA) and each replica's [`S3Upstream`].

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream, UpstreamClients};

use super::BuildError;
use crate::config::{Config, ResolvedReplica};

/// The upstream HTTP clients every replica shares: one connection pool for
/// the shared runtime (lane 0) and one per connection thread (lanes 1..=N,
/// `server.connection_threads`), so that a connection thread's upstream
/// connections stay on it.
///
/// With no HTTP proxy in the environment, replicas are sent to over
/// hyper's HTTP/1 connections instead of reqwest, over TLS for `https://`
/// ones with the roots reqwest trusts ([`direct`]; issue 13).
pub fn http_client(config: &Config) -> Result<UpstreamClients, BuildError> {
    let clients = clients(config, || http_client_builder(config)).map_err(BuildError::Client)?;
    direct(config, clients, None).map_err(BuildError::Config)
}

/// `clients`, sending without reqwest when no HTTP proxy is set: TLS
/// trusting only `cas` when given, else the platform's roots through
/// rustls-platform-verifier, as reqwest's `rustls` feature does.
fn direct(
    config: &Config,
    clients: UpstreamClients,
    cas: Option<Vec<CertificateDer<'static>>>,
) -> Result<UpstreamClients, String> {
    if names_a_proxy(|name| std::env::var_os(name)) {
        return Ok(clients);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS to replicas: {e}"))?;
    let mut tls = match cas {
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots
                    .add(ca)
                    .map_err(|e| format!("a CA of ca_file cannot be used: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("cannot load the platform's TLS roots: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    // These connections speak HTTP/1.1 only.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(clients
        .with_direct_http(Some(read_timeout(config)))
        .with_direct_tls(Arc::new(tls)))
}

/// `server.upstream_read_timeout_seconds`: the longest wait for more of an
/// upstream answer.
fn read_timeout(config: &Config) -> Duration {
    Duration::from_secs(config.server.upstream_read_timeout_seconds.max(1))
}

/// One client from `builder` per lane.
fn clients(config: &Config, builder: impl Fn() -> reqwest::ClientBuilder) -> Result<UpstreamClients, reqwest::Error> {
    let first = builder().build()?;
    let rest = (0..config.server.connection_threads.threads())
        .map(|_| builder().build())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpstreamClients::new(first, rest))
}

fn http_client_builder(config: &Config) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .read_timeout(read_timeout(config))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    if names_a_proxy(|name| std::env::var_os(name)) {
        builder
    } else {
        // What reqwest's system proxy would do here, without asking it twice
        // per request (~1.5% of a pass-through's instructions; issue 13).
        builder.no_proxy()
    }
}

/// The variables reqwest (hyper-util) reads its system proxy from on
/// Linux; `NO_PROXY` only narrows them.
const PROXY_VARIABLES: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
];

/// Whether the environment (`var`) may give reqwest a proxy: a proxy
/// variable set and not empty, or a platform whose system settings reqwest
/// also reads (macOS, Windows).
fn names_a_proxy(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    cfg!(any(target_os = "macos", windows))
        || PROXY_VARIABLES
            .iter()
            .any(|name| var(name).is_some_and(|value| !value.is_empty()))
}

pub(super) async fn upstream(
    config: &Config,
    client: &UpstreamClients,
    bucket: usize,
    r: &ResolvedReplica,
) -> Result<S3Upstream, BuildError> {
    let replica_err = |message: String| BuildError::Replica {
        bucket,
        replica: r.name.clone(),
        message,
    };
    let s3 = s3_bucket(r.endpoint.as_ref(), &r.bucket, &r.region).map_err(|e| replica_err(e.to_string()))?;
    // A private CA (issue 14): this replica gets a client trusting only it.
    let client = match &r.ca_file {
        Some(path) => http_client_with_ca(config, path).map_err(replica_err)?,
        None => client.clone(),
    };
    let credentials = crate::credentials::for_replica(&config.buckets[bucket].name, r).await;
    Ok(S3Upstream::new(r.name.clone(), s3, client)
        .with_timeout(Duration::from_secs(r.timeout_seconds))
        .with_replica_credentials(credentials))
}

/// [`http_client`] trusting only the CAs of the PEM bundle at `path`.
fn http_client_with_ca(config: &Config, path: &str) -> Result<UpstreamClients, String> {
    let ders = crate::tls::read_ca_bundle(path)?;
    let cas = ders
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file '{path}': {e}"))?;
    let clients = clients(config, || http_client_builder(config).tls_certs_only(cas.clone()))
        .map_err(|e| format!("cannot create the HTTP client for ca_file '{path}': {e}"))?;
    direct(config, clients, Some(ders)).map_err(|e| format!("ca_file '{path}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_asked_for_only_when_a_variable_names_one() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(!names_a_proxy(env(&[])));
        assert!(!names_a_proxy(env(&[("HTTPS_PROXY", ""), ("NO_PROXY", "example.com")])));
        for name in PROXY_VARIABLES {
            let set: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(name, "http://10.0.0.1:3128")]));
            assert!(names_a_proxy(env(set)), "{name}");
        }
    }
}
