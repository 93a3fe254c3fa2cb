//! The objects the scenarios read, written into the S3 server's root
//! directory (`<root>/<bucket>/<key>`, as s3s-fs lays them out).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The bucket every scenario uses, on the S3 server and through the proxy.
pub const BUCKET: &str = "bench";
/// One MiB.
pub const MIB: u64 = 1024 * 1024;
/// One GiB, as a float for throughput figures.
pub const GIB: f64 = (1u64 << 30) as f64;

/// An object of the suite: its key and size.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    /// The key, in bucket [`BUCKET`].
    pub key: &'static str,
    /// Its size in bytes.
    pub size: u64,
}

/// The 4 KiB object: cache hits, pass-through, failover.
pub const SMALL: Object = Object {
    key: "small-4k.bin",
    size: 4096,
};

/// The 1 MiB object: large cache hits from the memory tier.
pub const MEDIUM: Object = Object {
    key: "medium-1m.bin",
    size: MIB,
};

/// The key of the streamed object (its size is `--stream-mib`).
pub const BIG_KEY: &str = "stream.bin";

/// Deterministic pseudo-random bytes (xorshift).
fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
}

/// The name of s3s-fs's internal-info sidecar of `key` in [`BUCKET`].
fn sidecar_name(key: &str) -> String {
    format!(
        ".bucket-{}.object-{}.internal.json",
        URL_SAFE_NO_PAD.encode(BUCKET),
        URL_SAFE_NO_PAD.encode(key)
    )
}

/// Writes s3s-fs's internal-info sidecar holding the object's ETag, so that
/// s3s-fs does not compute an MD5 of the whole file on every GET.
fn write_etag_sidecar(root: &Path, key: &str, etag: &str) -> std::io::Result<()> {
    std::fs::write(root.join(sidecar_name(key)), format!("{{\"e_tag\":\"{etag}\"}}"))
}

/// Writes `key` of `size` bytes in 1 MiB chunks (never whole in memory),
/// each chunk tagged with its index so no two are alike; with `sidecar`, an
/// ETag sidecar made of `etag_seed`.
pub fn write_object(root: &Path, key: &str, size: u64, sidecar: bool, etag_seed: u64) -> Result<u64, String> {
    let dir = root.join(BUCKET);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = File::create(dir.join(key)).map_err(|e| e.to_string())?;
    let mut w = BufWriter::with_capacity(MIB as usize, file);
    let mut chunk = vec![0u8; size.min(MIB) as usize];
    fill_pattern(&mut chunk, etag_seed);
    let mut left = size;
    let mut i = 0u64;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if n >= 8 {
            chunk[..8].copy_from_slice(&i.to_le_bytes());
        }
        w.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
        i += 1;
    }
    w.flush().map_err(|e| e.to_string())?;
    if sidecar {
        write_etag_sidecar(root, key, &format!("{etag_seed:016x}{size:016x}")).map_err(|e| e.to_string())?;
    }
    Ok(size)
}

/// Writes one of the suite's fixed objects.
pub fn write(root: &Path, object: Object, sidecar: bool) -> Result<u64, String> {
    write_object(root, object.key, object.size, sidecar, object.size)
}

/// `1 GiB`, `256 MiB`, `4 KiB`.
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_name_is_s3s_fs_url_safe_base64() {
        // s3s-fs: `.bucket-{base64url(bucket)}.object-{base64url(key)}.internal.json`, no padding.
        assert_eq!(
            sidecar_name("small-4k.bin"),
            ".bucket-YmVuY2g.object-c21hbGwtNGsuYmlu.internal.json"
        );
    }

    #[test]
    fn objects_have_their_size() {
        let dir = tempfile::tempdir().unwrap();
        for size in [5, 4096, MIB + 3] {
            write_object(dir.path(), "k.bin", size, true, 7).unwrap();
            let len = std::fs::metadata(dir.path().join(BUCKET).join("k.bin")).unwrap().len();
            assert_eq!(len, size);
        }
        assert!(dir.path().join(sidecar_name("k.bin")).exists());
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(MIB), "1 MiB");
        assert_eq!(human_size(1 << 30), "1 GiB");
    }
}
