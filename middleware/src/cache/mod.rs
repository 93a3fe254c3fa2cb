//! Two-tier object cache (being written).
