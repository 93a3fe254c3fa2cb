//! Which S3 call a request to a bucket makes: one classification, used by
//! [`S3Api`](super::S3Api) to dispatch and by the router to label metrics
//! and logs.

use http::Method;

/// Bucket subresources that name an API the proxy does not serve.
pub(crate) const UNSUPPORTED_SUBRESOURCES: [&str; 26] = [
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "logging",
    "metadataConfiguration",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "session",
    "tagging",
    "uploads",
    "versioning",
    "versions",
    "website",
];

/// Object subresources that name an API the proxy does not serve
/// (`GetObjectTagging`, `GetObjectAcl`, `ListParts`...): without this check a
/// `GET /bucket/key?tagging` would be answered with the object's bytes.
pub(crate) const UNSUPPORTED_OBJECT_SUBRESOURCES: [&str; 9] = [
    "acl",
    "attributes",
    "legal-hold",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "uploadId",
];

/// The first object subresource of `query` the proxy does not serve.
pub(crate) fn unsupported_object_subresource(query: Option<&str>) -> Option<&'static str> {
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .find_map(|(k, _)| UNSUPPORTED_OBJECT_SUBRESOURCES.iter().find(|s| **s == k).copied())
}

/// The S3 operation of a request routed to a bucket (a response extension
/// set by [`PrefixRouter`](crate::routing::PrefixRouter), read by the access
/// log for the `operation` metric label). A small fixed set, so the label
/// stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3Operation {
    /// `GET /bucket/key`.
    GetObject,
    /// `HEAD /bucket/key`.
    HeadObject,
    /// `GET /bucket?list-type=2`.
    ListObjectsV2,
    /// `GET /bucket` (V1, `marker`).
    ListObjects,
    /// `HEAD /bucket`.
    HeadBucket,
    /// `GET /bucket?location`.
    GetBucketLocation,
    /// `GET /` naming no bucket ([`ListBuckets`](super::ListBuckets)).
    ListBuckets,
    /// A bucket or object API the proxy does not serve (`?versioning`,
    /// `?acl`, `key?tagging`...): 501.
    Unsupported,
    /// A method the read-only proxy refuses (`PUT`, `POST`, `DELETE`...): 405.
    Refused,
}

fn has_param(query: Option<&str>, name: &str) -> bool {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).any(|(k, _)| k == name)
}

impl S3Operation {
    /// Classifies a request by method, path within the bucket (`/` or empty
    /// for the bucket itself) and query.
    pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Self {
        let bucket = path == "/" || path.is_empty();
        match (method, bucket) {
            (&Method::GET | &Method::HEAD, false) if unsupported_object_subresource(query).is_some() => {
                Self::Unsupported
            }
            (&Method::GET, false) => Self::GetObject,
            (&Method::HEAD, false) => Self::HeadObject,
            (&Method::HEAD, true) => Self::HeadBucket,
            (&Method::GET, true) if has_param(query, "location") => Self::GetBucketLocation,
            (&Method::GET, true) if UNSUPPORTED_SUBRESOURCES.iter().any(|s| has_param(query, s)) => Self::Unsupported,
            (&Method::GET, true)
                if url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                    .any(|(k, v)| k == "list-type" && v == "2") =>
            {
                Self::ListObjectsV2
            }
            (&Method::GET, true) => Self::ListObjects,
            _ => Self::Refused,
        }
    }

    /// The label value: the S3 API name (`GetObject`...), `Unsupported` or `Refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetObject => "GetObject",
            Self::HeadObject => "HeadObject",
            Self::ListObjectsV2 => "ListObjectsV2",
            Self::ListObjects => "ListObjects",
            Self::HeadBucket => "HeadBucket",
            Self::GetBucketLocation => "GetBucketLocation",
            Self::ListBuckets => "ListBuckets",
            Self::Unsupported => "Unsupported",
            Self::Refused => "Refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bucket_and_object_calls() {
        use S3Operation::*;
        for (method, path, query, op) in [
            (Method::GET, "/a.txt", None, GetObject),
            (Method::GET, "/a.txt", Some("versionId=1"), GetObject),
            (Method::HEAD, "/a/b", None, HeadObject),
            (Method::HEAD, "/", None, HeadBucket),
            (Method::GET, "/", Some("location"), GetBucketLocation),
            (Method::GET, "", Some("list-type=2&prefix=a"), ListObjectsV2),
            (Method::GET, "/", Some("marker=m"), ListObjects),
            (Method::GET, "/", None, ListObjects),
            (Method::GET, "/", Some("versioning"), Unsupported),
            (Method::GET, "/", Some("publicAccessBlock"), Unsupported),
            (Method::GET, "", Some("ownershipControls"), Unsupported),
            (Method::GET, "/", Some("requestPayment"), Unsupported),
            (Method::GET, "/a.txt", Some("tagging"), Unsupported),
            (Method::HEAD, "/a.txt", Some("versionId=1&acl="), Unsupported),
            (Method::GET, "/a.txt", Some("uploadId=x"), Unsupported),
            (Method::GET, "/a.txt", Some("x-id=GetObject"), GetObject),
            (Method::PUT, "/a.txt", Some("tagging"), Refused),
            (Method::PUT, "/a.txt", None, Refused),
            (Method::DELETE, "/", None, Refused),
            (Method::POST, "/", Some("delete"), Refused),
        ] {
            assert_eq!(
                S3Operation::classify(&method, path, query),
                op,
                "{method} {path} {query:?}"
            );
        }
        assert_eq!(ListObjectsV2.as_str(), "ListObjectsV2");
    }
}
