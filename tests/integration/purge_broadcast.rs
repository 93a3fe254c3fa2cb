//! A cache purge reaches every instance sharing the Redis tier: real
//! proxies, one real `redis-server` (or a Cluster), purges sent to one
//! instance's admin API.
