//! The root listing (`ListBuckets`, `GET /`): every bucket an S3 client can
//! address path-style, shown to the callers its own auth admits.

use std::sync::Arc;

use tower::layer::layer_fn;
use tower::util::Either;
use tower::Layer;
use yatagarasu_middleware::auth::{AuthLayer, AuthStats, SigV4Layer};
use yatagarasu_middleware::s3api::ListBuckets;

/// The S3 bucket name of a path prefix, when S3 clients can address it
/// path-style: a single segment (`/data` is `data`; `/a/b` and `/` are not
/// buckets a client can name).
pub(super) fn s3_bucket_name(path_prefix: &str) -> Option<&str> {
    let name = path_prefix.strip_prefix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Adds the bucket at `path_prefix` to `list`, behind the same auth as its
/// objects. The guards count their outcomes apart (a listing asks every
/// guard): the auth metrics stay those of object requests.
pub(super) fn add(
    list: ListBuckets,
    path_prefix: &str,
    sigv4: Option<&SigV4Layer>,
    jwt: Option<&AuthLayer>,
) -> ListBuckets {
    let Some(name) = s3_bucket_name(path_prefix) else {
        return list;
    };
    let apart = || Arc::new(AuthStats::default());
    match (sigv4, jwt) {
        (None, None) => list.bucket(name),
        (None, Some(jwt)) => list.guarded(name, jwt.clone().with_stats(apart())),
        (Some(sigv4), None) => list.guarded(name, sigv4.clone().with_stats(apart())),
        (Some(sigv4), Some(jwt)) => {
            let (sigv4, jwt) = (sigv4.clone().with_stats(apart()), jwt.clone().with_stats(apart()));
            list.guarded(
                name,
                layer_fn(move |admit| sigv4.with_unsigned(Either::Left(admit), Either::Right(jwt.layer(admit)))),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_segment_prefixes_are_s3_buckets() {
        assert_eq!(s3_bucket_name("/data"), Some("data"));
        assert_eq!(s3_bucket_name("/a/b"), None);
        assert_eq!(s3_bucket_name("/"), None);
        assert_eq!(s3_bucket_name("data"), None);
    }
}
