//! Where the memory tier keeps a body: on the heap by default, or in memory
//! a [`BodyPlacement`] provides (the binary's sealed memfds, which a plain
//! TCP connection sends with `sendfile(2)` instead of copying them; issue 13).
//!
//! A fill writes its chunks into the placement as they stream (no second
//! copy of the object at its end); a body that reaches the memory tier
//! another way (a Redis hit, a slice) is copied once into it. Whatever the
//! placement declines stays on the heap.

use bytes::Bytes;

/// Memory for bodies of the memory tier, set with
/// [`CacheStore::with_body_placement`](super::CacheStore::with_body_placement).
pub trait BodyPlacement: Send + Sync + 'static {
    /// A writer for a body of exactly `len` bytes about to enter the memory
    /// tier, or `None` to keep it on the heap (too small, out of files).
    fn writer(&self, len: usize) -> Option<Box<dyn PlacedBodyWriter>>;

    /// Whether `body` already lies in memory of this placement.
    fn holds(&self, body: &[u8]) -> bool;
}

/// A body being written into a [`BodyPlacement`].
pub trait PlacedBodyWriter: Send {
    /// Appends `data`.
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;

    /// The body, once all its bytes are written: immutable from here on.
    fn finish(self: Box<Self>) -> std::io::Result<Bytes>;
}

/// Copies `body` into `placement`; `None` when declined or on an error.
pub(crate) fn place(placement: &dyn BodyPlacement, body: &Bytes) -> Option<Bytes> {
    if body.is_empty() || placement.holds(body) {
        return None;
    }
    let mut writer = placement.writer(body.len())?;
    let placed = writer.write(body).and_then(|()| writer.finish());
    match placed {
        Ok(placed) => Some(placed),
        Err(e) => {
            tracing::debug!(error = %e, len = body.len(), "body kept on the heap: its placement failed");
            None
        }
    }
}
