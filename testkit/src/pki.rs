//! A test CA and the certificates it issues (ECDSA P-256), made with the
//! `openssl` command line in a directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA (`ca.pem`, `ca.key`) in a directory, and the certificates it issues
/// there.
pub struct Pki {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run openssl (apt-get install -y openssl): {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// `openssl req` options for a new P-256 key, unencrypted.
const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

impl Pki {
    /// A CA in a temp dir of its own; panics if openssl fails.
    pub fn new() -> Pki {
        let temp = tempfile::tempdir().expect("a temp dir");
        let mut pki = Self::try_in(temp.path()).unwrap_or_else(|e| panic!("{e}"));
        pki._temp = Some(temp);
        pki
    }

    /// A CA in `dir` (created if missing), named `CN=yatagarasu test CA`.
    pub fn try_in(dir: &Path) -> Result<Pki, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut args = vec!["req", "-x509"];
        args.extend(EC_KEY);
        args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=yatagarasu test CA",
        ]);
        openssl(dir, &args)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            _temp: None,
        })
    }

    /// The CA's certificate (PEM): what clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for 127.0.0.1 and localhost with common name `cn`
    /// (`client`: for client auth, else for a server), as `(cert, key)` PEM
    /// files named after `name`; panics if openssl fails.
    pub fn issue(&self, name: &str, cn: &str, client: bool) -> (PathBuf, PathBuf) {
        self.try_issue(name, cn, client).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`issue`](Self::issue), with openssl's failure returned.
    pub fn try_issue(&self, name: &str, cn: &str, client: bool) -> Result<(PathBuf, PathBuf), String> {
        let d = &self.dir;
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subject = format!("/CN={cn}");
        let mut args = vec!["req"];
        args.extend(EC_KEY);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(d, &args)?;
        let usage = if client { "clientAuth" } else { "serverAuth" };
        std::fs::write(
            d.join(&ext),
            format!(
                "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
        Ok((d.join(crt), d.join(key)))
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
