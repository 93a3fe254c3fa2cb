//! nginx, the peer the proxy is measured against: serving files (static),
//! `proxy_pass` to the S3 server, or `proxy_pass` with `proxy_cache`.
//!
//! Every mode has `worker_processes auto` (one worker per CPU), upstream
//! keep-alive, and the access log off unless `--access-log` (then the
//! `combined` format, to a file). Clients send nginx a URL presigned for
//! nginx's own address; nginx forwards it with the client's `Host`
//! (`proxy_set_header Host $http_host`), so the S3 server verifies the same
//! signature it would for a direct request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::procs::{free_port, tail, wait_port, Proc};

/// What nginx serves.
#[derive(Debug, Clone)]
pub enum Site {
    /// The files under `root` (the S3 server's directory: `/<bucket>/<key>`).
    Static {
        /// The document root.
        root: PathBuf,
    },
    /// `proxy_pass` to `upstream` (`http://127.0.0.1:PORT`), optionally
    /// through `proxy_cache` (on disk, 200s kept an hour).
    Proxy {
        /// The S3 server's endpoint.
        upstream: String,
        /// `proxy_cache` on.
        cache: bool,
    },
}

impl Site {
    /// How the site is named in the report.
    pub fn label(&self) -> &'static str {
        match self {
            Site::Static { .. } => "nginx static",
            Site::Proxy { cache: true, .. } => "nginx proxy_cache",
            Site::Proxy { cache: false, .. } => "nginx proxy_pass",
        }
    }
}

/// A running nginx (master and workers), stopped on drop.
pub struct Nginx {
    /// The master process (CPU accounting covers its workers: `procs::cpu_tree`).
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub base: String,
    /// The site it serves.
    pub site: Site,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }
}

/// The installed nginx binary.
fn binary() -> Result<PathBuf, String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "nginx is not installed (apt-get install -y nginx-light)".to_owned())
}

/// The `nginx.conf` of `site` under `prefix`, listening on `port`.
#[cfg(test)]
pub fn conf(prefix: &Path, port: u16, site: &Site, access_log: bool) -> String {
    conf_tls(prefix, port, site, access_log, None)
}

/// [`conf`], over HTTPS with `tls` (certificate, key) when given.
pub fn conf_tls(prefix: &Path, port: u16, site: &Site, access_log: bool, tls: Option<(&Path, &Path)>) -> String {
    let p = prefix.display();
    let listen = match tls {
        Some((cert, key)) => format!(
            "listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
        None => format!("listen 127.0.0.1:{port};"),
    };
    let log = if access_log {
        format!("access_log {p}/logs/access.log combined;")
    } else {
        "access_log off;".to_owned()
    };
    let (upstream, location) = match site {
        Site::Static { root } => (
            String::new(),
            format!("root {};\n        location / {{ }}", root.display()),
        ),
        Site::Proxy { upstream, cache } => {
            let server = upstream
                .strip_prefix("http://")
                .unwrap_or(upstream)
                .trim_end_matches('/');
            let upstream = format!(
                "upstream s3 {{\n        server {server};\n        keepalive 64;\n    }}\n    proxy_cache_path {p}/cache levels=1:2 keys_zone=s3cache:16m max_size=4g inactive=1h use_temp_path=off;\n"
            );
            let cache = if *cache {
                "\n            proxy_cache s3cache;\n            proxy_cache_valid 200 1h;\n            proxy_cache_lock on;\n            add_header X-Cache-Status $upstream_cache_status;"
            } else {
                ""
            };
            let location = format!(
                "location / {{\n            proxy_pass http://s3;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_set_header Host $http_host;{cache}\n        }}"
            );
            (upstream, location)
        }
    };
    format!(
        r#"daemon off;
master_process on;
worker_processes auto;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {log}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type application/octet-stream;
    {upstream}
    server {{
        {listen}
        {location}
    }}
}}
"#
    )
}

impl Nginx {
    /// Starts nginx for `site` with its prefix (config, logs, cache, temp
    /// files) in `<dir>/<name>`.
    pub fn start(dir: &Path, name: &str, site: Site, access_log: bool) -> Result<Nginx, String> {
        Self::start_tls(dir, name, site, access_log, None)
    }

    /// [`start`](Self::start), over HTTPS with `tls` (certificate, key) when given.
    pub fn start_tls(
        dir: &Path,
        name: &str,
        site: Site,
        access_log: bool,
        tls: Option<(&Path, &Path)>,
    ) -> Result<Nginx, String> {
        let bin = binary()?;
        let prefix = dir.join(name);
        for sub in ["", "tmp", "logs", "cache"] {
            std::fs::create_dir_all(prefix.join(sub)).map_err(|e| e.to_string())?;
        }
        let port = free_port()?;
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf_tls(&prefix, port, &site, access_log, tls)).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(&conf_path);
        let mut proc = Proc::spawn(name, cmd, prefix.join("logs/stdout.log"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        if !wait_port(addr, Duration::from_secs(10)) {
            proc.terminate(Duration::from_secs(5));
            let err = std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
            return Err(format!("{name} did not start: {}", tail(&err, 1000)));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Nginx {
            proc,
            base: format!("{scheme}://{addr}"),
            site,
        })
    }

    /// The URL a client asks nginx for `key` of the bucket: the file path
    /// for a static site, a URL presigned for nginx's address for a proxy.
    pub fn url(&self, key: &str) -> String {
        match self.site {
            Site::Static { .. } => format!("{}/{}/{key}", self.base, crate::data::BUCKET),
            Site::Proxy { .. } => crate::servers::presign(&self.base, key, Duration::from_secs(6 * 3600)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_conf_forwards_the_clients_host_and_keeps_upstream_connections() {
        let site = Site::Proxy {
            upstream: "http://127.0.0.1:9000".into(),
            cache: true,
        };
        let c = conf(Path::new("/tmp/x"), 8080, &site, false);
        for line in [
            "worker_processes auto;",
            "access_log off;",
            "server 127.0.0.1:9000;",
            "keepalive 64;",
            "proxy_set_header Host $http_host;",
            "proxy_set_header Connection \"\";",
            "proxy_cache s3cache;",
            "listen 127.0.0.1:8080;",
        ] {
            assert!(c.contains(line), "{line} missing from:\n{c}");
        }
        let pass = conf(
            Path::new("/tmp/x"),
            8080,
            &Site::Proxy {
                upstream: "http://127.0.0.1:9000".into(),
                cache: false,
            },
            true,
        );
        assert!(!pass.contains("proxy_cache s3cache;"));
        assert!(pass.contains("access_log /tmp/x/logs/access.log combined;"));
        let stat = conf(Path::new("/tmp/x"), 8080, &Site::Static { root: "/srv".into() }, false);
        assert!(stat.contains("root /srv;") && !stat.contains("proxy_pass"));
    }

    /// nginx itself accepts every generated config (`nginx -t`; `scripts/test.sh`
    /// installs nginx-light).
    #[test]
    fn nginx_accepts_the_configs() {
        let bin = binary().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sites = [
            Site::Static {
                root: dir.path().into(),
            },
            Site::Proxy {
                upstream: "http://127.0.0.1:9".into(),
                cache: false,
            },
            Site::Proxy {
                upstream: "http://127.0.0.1:9".into(),
                cache: true,
            },
        ];
        for (i, site) in sites.iter().enumerate() {
            let prefix = dir.path().join(format!("n{i}"));
            for sub in ["", "tmp", "logs", "cache"] {
                std::fs::create_dir_all(prefix.join(sub)).unwrap();
            }
            let path = prefix.join("nginx.conf");
            std::fs::write(&path, conf(&prefix, 1, site, i == 1)).unwrap();
            let out = Command::new(&bin)
                .arg("-t")
                .arg("-p")
                .arg(&prefix)
                .arg("-e")
                .arg(prefix.join("logs/error.log"))
                .arg("-c")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                site.label(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
