//! The memory tier's large bodies in sealed memfds.

use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use memmap2::Mmap;
use rustix::fs::{MemfdFlags, SealFlags};
use yatagarasu_middleware::cache::{BodyPlacement, PlacedBodyWriter};

use super::regions;

/// Most memfds held at once, whatever the open-file limit.
const MAX_FILES: u64 = 4096;

/// memfds open now, over every placement of the process (a reload builds a
/// new one while the old one's bodies still live).
static LIVE: LazyLock<Arc<AtomicUsize>> = LazyLock::new(Arc::default);
/// Whether a failed memfd has been reported (once per process).
static WARNED: AtomicBool = AtomicBool::new(false);

/// The files the memory tier may hold open with an open-file limit of
/// `nofile`: an eighth of it, at most 4096. The connection limit is fitted
/// to what is left.
pub fn file_budget(nofile: u64) -> u64 {
    (nofile / 8).min(MAX_FILES)
}

/// Placed bodies held now, over the process (`yatagarasu_cache_memory_files`).
pub fn live_files() -> usize {
    LIVE.load(Ordering::Acquire)
}

fn open_file_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// A [`BodyPlacement`] that puts each body of at least `min_len` bytes in a
/// memfd of its own, sealed once written and mapped read-only, within the
/// [`file_budget`].
#[derive(Debug, Clone)]
pub struct MemfdPlacement {
    min_len: usize,
    /// Files open, against the budget.
    live: Arc<AtomicUsize>,
    /// The budget, when not the open-file limit's.
    max_files: Option<usize>,
}

impl MemfdPlacement {
    /// Places bodies of `min_len` bytes and more (at least 1).
    pub fn new(min_len: usize) -> Self {
        Self {
            min_len: min_len.max(1),
            live: LIVE.clone(),
            max_files: None,
        }
    }

    /// At most `n` files, counted apart from the process's (tests).
    #[cfg(test)]
    pub(super) fn with_max_files(mut self, n: usize) -> Self {
        self.live = Arc::default();
        self.max_files = Some(n);
        self
    }
}

impl BodyPlacement for MemfdPlacement {
    fn writer(&self, len: usize) -> Option<Box<dyn PlacedBodyWriter>> {
        if len < self.min_len {
            return None;
        }
        let budget = self
            .max_files
            .unwrap_or_else(|| usize::try_from(file_budget(open_file_limit())).unwrap_or(0));
        let slot = FileSlot::take(&self.live, budget)?;
        let fd = match rustix::fs::memfd_create("yatagarasu-cache", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING) {
            Ok(fd) => fd,
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "memfd_create failed: large cached bodies stay on the heap (no sendfile)");
                }
                return None;
            }
        };
        Some(Box::new(MemfdWriter {
            file: File::from(fd),
            len,
            written: 0,
            slot,
        }))
    }

    fn holds(&self, body: &[u8]) -> bool {
        regions::find(body).is_some()
    }
}

/// One of the budget's files, given back on drop.
struct FileSlot(Arc<AtomicUsize>);

impl FileSlot {
    fn take(live: &Arc<AtomicUsize>, budget: usize) -> Option<Self> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < budget).then_some(n + 1))
            .ok()
            .map(|_| Self(live.clone()))
    }
}

impl Drop for FileSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct MemfdWriter {
    file: File,
    len: usize,
    written: usize,
    slot: FileSlot,
}

impl PlacedBodyWriter for MemfdWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.written + data.len() > self.len {
            return Err(std::io::Error::other("more bytes than announced"));
        }
        self.file.write_all(data)?;
        self.written += data.len();
        Ok(())
    }

    fn finish(self: Box<Self>) -> std::io::Result<Bytes> {
        let Self {
            file,
            len,
            written,
            slot,
        } = *self;
        if written != len {
            return Err(std::io::Error::other("fewer bytes than announced"));
        }
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
        )?;
        // SAFETY: the file is sealed against writes, shrinking and growing,
        // and the seals themselves are sealed: no one can change the mapped
        // bytes or cut the file under the mapping.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file)? };
        let file = Arc::new(file);
        regions::register(map.as_ptr() as usize, map.len(), file.clone());
        Ok(Bytes::from_owner(Mapped {
            map,
            _file: file,
            _slot: slot,
        }))
    }
}

/// The owner of a placed body's bytes.
struct Mapped {
    map: Mmap,
    _file: Arc<File>,
    _slot: FileSlot,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // Before the mapping goes (the fields drop after this).
        regions::unregister(self.map.as_ptr() as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn placed(placement: &MemfdPlacement, data: &[u8]) -> Bytes {
        let mut writer = placement.writer(data.len()).expect("a writer");
        for chunk in data.chunks(16 * 1024 + 3) {
            writer.write(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn a_placed_body_reads_back_and_is_found_in_its_file() {
        let placement = MemfdPlacement::new(64 * 1024).with_max_files(4);
        let data = pattern(300_000);
        let body = placed(&placement, &data);
        assert_eq!(&body[..], &data[..]);
        assert!(placement.holds(&body));
        let slice = body.slice(10_000..250_000);
        assert!(placement.holds(&slice));
        let (file, offset) = regions::find(&slice).expect("the slice's file");
        assert_eq!(offset, 10_000);
        let mut read = vec![0u8; 5];
        rustix::io::pread(&*file, &mut read, 10_000).unwrap();
        assert_eq!(read, &data[10_000..10_005]);
        // The same bytes on the heap are not in any file.
        assert!(!placement.holds(&Bytes::from(data.clone())));
        // The file cannot be changed any more: sealed.
        assert!(rustix::io::pwrite(&*file, b"x", 0).is_err());
        assert!(file.set_len(1).is_err());
    }

    #[test]
    fn small_bodies_and_wrong_lengths_are_refused() {
        let placement = MemfdPlacement::new(64 * 1024).with_max_files(4);
        assert!(placement.writer(64 * 1024 - 1).is_none(), "below the minimum");
        let mut writer = placement.writer(100_000).unwrap();
        assert!(writer.write(&[0u8; 100_001]).is_err(), "more than announced");
        let mut writer = placement.writer(100_000).unwrap();
        writer.write(&[0u8; 99_999]).unwrap();
        assert!(writer.finish().is_err(), "fewer than announced");
    }

    #[test]
    fn the_file_budget_holds_and_frees_with_the_last_reference() {
        let placement = MemfdPlacement::new(1).with_max_files(2);
        let a = placed(&placement, &pattern(1000));
        let b = placed(&placement, &pattern(2000));
        assert!(placement.writer(10).is_none(), "over the budget");
        assert_eq!(placement.live.load(Ordering::Acquire), 2);
        // A slice keeps its file; the last reference gives it back.
        let slice = a.slice(100..200);
        drop(a);
        assert!(placement.writer(10).is_none());
        assert!(placement.holds(&slice));
        drop(slice);
        let c = placement.writer(10);
        assert!(c.is_some(), "a file freed by the last reference");
        drop((b, c));
        assert_eq!(placement.live.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_budget_is_an_eighth_of_the_open_file_limit_at_most_4096() {
        assert_eq!(file_budget(1024), 128);
        assert_eq!(file_budget(65_536), 4096);
        assert_eq!(file_budget(1 << 20), 4096);
    }
}
