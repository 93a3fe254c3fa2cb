//! When the served certificates expire: a warning in the log when one is
//! loaded expired or within [`SOON`] of it, and the
//! `yatagarasu_tls_certificate_expiry_timestamp_seconds` gauge
//! ([`certificate_expiry`]) for an alert well before.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_cert::der::Decode;

/// How close to its expiry a loaded certificate is warned about.
pub(super) const SOON: Duration = Duration::from_secs(14 * 24 * 3600);

/// The notAfter (Unix seconds) of each listener's current certificate.
static EXPIRY: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Each TLS listener (`server.tls`, `metrics.tls`) with the time its current
/// certificate expires, in Unix seconds.
pub fn certificate_expiry() -> Vec<(&'static str, u64)> {
    let expiry = EXPIRY.lock().unwrap_or_else(|e| e.into_inner());
    expiry.iter().map(|(k, v)| (*k, *v)).collect()
}

/// The notAfter of the first certificate of a PEM file (the server's own:
/// loading refuses a chain that does not start with it).
pub(super) fn not_after(pem: &[u8]) -> Option<(SystemTime, String)> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let cert = x509_cert::Certificate::from_der(der.as_ref()).ok()?;
    let at = cert.tbs_certificate.validity.not_after;
    Some((UNIX_EPOCH + at.to_unix_duration(), at.to_date_time().to_string()))
}

/// Records the certificate `listener` now serves, and warns when it has
/// expired or expires within [`SOON`]: clients refuse an expired certificate,
/// and the proxy serves it anyway (refusing to start would not help them).
pub(super) fn loaded(listener: &'static str, cert_file: &str, pem: &[u8]) {
    let Some((at, expires)) = not_after(pem) else {
        tracing::warn!(listener, cert_file, "cannot read the certificate's expiry date");
        return;
    };
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    EXPIRY.lock().unwrap_or_else(|e| e.into_inner()).insert(listener, secs);
    match at.duration_since(SystemTime::now()) {
        Err(_) => tracing::warn!(
            listener,
            cert_file,
            expired = %expires,
            "the TLS certificate has expired: clients will refuse it; renew it (it is read again without a restart)"
        ),
        Ok(left) if left < SOON => tracing::warn!(
            listener,
            cert_file,
            expires = %expires,
            days_left = left.as_secs() / 86_400,
            "the TLS certificate expires soon: renew it (it is read again without a restart)"
        ),
        Ok(_) => {}
    }
}
