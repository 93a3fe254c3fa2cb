//! HTTPS listeners (rustls) whose certificate is reloaded without a restart.
//!
//! [`TlsListener`] wraps a listener (the metrics one caps its connections,
//! handshakes included): connections are accepted and their handshakes run
//! concurrently (a slow client never holds up another), and the finished
//! TLS streams are handed to `axum::serve`. ALPN offers `h2`
//! and `http/1.1`; the lowest version is TLS 1.2 or 1.3 (`min_version`);
//! with `client_ca_file` every client must present a certificate signed by
//! that CA (mTLS). A plain HTTP request sent to the proxy's TLS listener is
//! answered with a plain-text `400` saying so ([`accept`]).
//!
//! [`TlsReloader`] holds the current `rustls::ServerConfig`. Each new
//! connection takes the config current when it arrives, so connections
//! already open keep their session. The files are read again on SIGHUP, on
//! `POST /admin/reload` ([`request_reload`]) and when their content changes
//! (checked every `reload_interval_seconds`, which covers cert-manager
//! rewriting a mounted Secret in place). A new certificate that does not load
//! (unreadable, not PEM, key not matching) is refused with a log line and the
//! old one stays: one line per distinct content of the files, and a file
//! check warns only when the next check still finds the same files (a
//! certificate copied before its key is not a refusal); SIGHUP and the admin
//! reload are always answered. A certificate loaded expired, or within 14 days of it, is
//! warned about, and [`certificate_expiry`] feeds the
//! `yatagarasu_tls_certificate_expiry_timestamp_seconds` gauge.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsConfig;

mod expiry;
mod listener;
mod plain;
mod reload;

pub use expiry::certificate_expiry;
pub use listener::TlsListener;
pub use plain::{accept, Accepted, PLAIN_HTTP_ANSWER};
pub use reload::{reloaders, request_reload, Reload, Reloaders, TlsReloader, Trigger};

/// Why a TLS block cannot be used; `key` is the offending key under the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// `cert_file`, `key_file`, `min_version` or `client_ca_file`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// The crypto provider every TLS config of the process uses (the one reqwest
/// already links), so no process-wide default has to be installed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every problem of a TLS block, as `(key, message)`: used by config validation.
pub fn check(config: &TlsConfig) -> Vec<(String, String)> {
    match load(config) {
        Ok(_) => Vec::new(),
        Err(e) => vec![(e.key.to_owned(), e.message)],
    }
}

/// The certificates of a PEM CA bundle (at least one), or why not.
pub fn read_ca_bundle(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read '{path}': {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("'{path}' is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("'{path}' holds no PEM certificate"));
    }
    Ok(certs)
}

/// The files of a TLS block, read at one moment.
#[derive(Clone, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read_files(config: &TlsConfig) -> Result<Files, TlsError> {
    let read = |key: &'static str, path: &str| {
        if path.trim().is_empty() {
            return Err(TlsError::new(key, "is required"));
        }
        std::fs::read(Path::new(path)).map_err(|e| TlsError::new(key, format!("cannot read '{path}': {e}")))
    };
    Ok(Files {
        cert: read("cert_file", &config.cert_file)?,
        key: read("key_file", &config.key_file)?,
        client_ca: match &config.client_ca_file {
            Some(path) => Some(read("client_ca_file", path)?),
            None => None,
        },
    })
}

fn load(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let files = read_files(config)?;
    build(config, &files)
}

fn build(config: &TlsConfig, files: &Files) -> Result<ServerConfig, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version.trim() {
        "1.2" | "" => &[&rustls::version::TLS13, &rustls::version::TLS12],
        "1.3" => &[&rustls::version::TLS13],
        other => {
            return Err(TlsError::new(
                "min_version",
                format!("'{other}' is not supported (use \"1.2\" or \"1.3\")"),
            ))
        }
    };
    let certs = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new("cert_file", format!("'{}' is not PEM: {e}", config.cert_file)))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            "cert_file",
            format!("'{}' holds no PEM certificate", config.cert_file),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| {
        let text = String::from_utf8_lossy(&files.key);
        let why = if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            "the key is encrypted (decrypt it: openssl pkey -in KEY -out PLAIN.key)".to_owned()
        } else if text.contains("-----BEGIN CERTIFICATE-----") {
            "it holds a certificate, not a private key".to_owned()
        } else {
            e.to_string()
        };
        TlsError::new(
            "key_file",
            format!("'{}' holds no usable private key: {why}", config.key_file),
        )
    })?;
    let provider = crypto_provider();
    let leaf_first = leaf_position(&provider, &certs, &key);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new("min_version", e.to_string()))?;
    let builder = match &files.client_ca {
        Some(pem) => {
            let path = config.client_ca_file.as_deref().unwrap_or_default();
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::new("client_ca_file", format!("'{path}' is not PEM: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(cas);
            if added == 0 {
                return Err(TlsError::new("client_ca_file", format!("'{path}' holds no usable CA")));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new("client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| match leaf_first {
        // The key is that of a later certificate: the chain is out of order.
        Some(i) if i > 0 => TlsError::new(
            "cert_file",
            format!(
                "'{}' does not start with the server's own certificate: the key matches certificate {} of \
                 the file (put the server's certificate first, then its intermediates)",
                config.cert_file,
                i + 1
            ),
        ),
        _ => TlsError::new("key_file", format!("does not match the certificate: {e}")),
    })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// Which certificate of `certs` the private `key` belongs to, if it can tell.
fn leaf_position(
    provider: &rustls::crypto::CryptoProvider,
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Option<usize> {
    let signing = provider.key_provider.load_private_key(key.clone_key()).ok()?;
    certs.iter().position(|cert| {
        rustls::sign::CertifiedKey::new(vec![cert.clone()], signing.clone())
            .keys_match()
            .is_ok()
    })
}

/// The scheme a listener serves: `https` with TLS.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}
