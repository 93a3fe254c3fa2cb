//! Zero-copy cache hits (issue 13, Linux): the memory tier keeps bodies of
//! at least `cache.memory.sendfile_min_size` bytes in sealed memfds mapped
//! read-only ([`MemfdPlacement`]), and a plain-TCP client connection
//! ([`SendfileTcp`]) sends a slice lying in one with `sendfile(2)`: the
//! kernel hands the file's pages to the socket instead of copying the bytes
//! from user memory for every hit, as nginx does for its cached files.
//!
//! Everything else (TLS, HTTP/2 frames, heap bodies, short slices) is
//! written as before; a body the placement declines (too small, out of
//! files, no memfd on this kernel) stays on the heap.

mod memfd;
mod regions;
mod tcp;

pub use memfd::{file_budget, live_files, MemfdPlacement};
pub use tcp::SendfileTcp;

/// The smallest body worth a memfd for `cache.memory.sendfile_min_size`
/// (`configured`, not 0): smaller ones would never be sent with `sendfile`.
pub fn placed_min_size(configured: u64) -> usize {
    usize::try_from(configured).unwrap_or(usize::MAX).max(tcp::MIN_SENDFILE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bodies_below_the_sendfile_piece_are_never_placed() {
        assert_eq!(super::placed_min_size(1), 32 * 1024);
        assert_eq!(super::placed_min_size(65_536), 65_536);
    }
}
