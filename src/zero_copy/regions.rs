//! The address ranges of the placed bodies, so that a connection can tell a
//! slice lying in one (and send it from its file) from any other.
//!
//! A slice being written is borrowed from a live `Bytes`, which holds its
//! mapping: while the slice exists its region is registered, and no other
//! mapping can share its addresses.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

struct Region {
    len: usize,
    file: Arc<File>,
}

/// Regions by start address.
static REGIONS: RwLock<BTreeMap<usize, Region>> = RwLock::new(BTreeMap::new());
/// How many regions there are: without any, a lookup takes no lock.
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Records that `file`'s bytes are mapped at `start..start + len`.
pub(super) fn register(start: usize, len: usize, file: Arc<File>) {
    let mut map = REGIONS.write().unwrap_or_else(|e| e.into_inner());
    if map.insert(start, Region { len, file }).is_none() {
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forgets the region at `start` (before its mapping goes).
pub(super) fn unregister(start: usize) {
    let mut map = REGIONS.write().unwrap_or_else(|e| e.into_inner());
    if map.remove(&start).is_some() {
        COUNT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The file holding `buf` and the offset of its first byte in it, when all
/// of `buf` lies in one region.
pub(super) fn find(buf: &[u8]) -> Option<(Arc<File>, u64)> {
    if buf.is_empty() || COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let addr = buf.as_ptr() as usize;
    let map = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let (start, region) = map.range(..=addr).next_back()?;
    let offset = addr - start;
    (offset.checked_add(buf.len())? <= region.len).then(|| (region.file.clone(), offset as u64))
}
