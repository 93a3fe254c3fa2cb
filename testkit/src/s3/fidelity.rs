//! Where s3s-fs answers ordinary reads unlike S3: corrected in front of it.
//!
//! [`Fidelity`] wraps s3s-fs's [`s3s::S3`] implementation. s3s checks the
//! signature before calling it, so a wrongly signed request still gets its
//! `403` first, with or without the `harness` feature. Behind the proxy these
//! differences were harmful: the proxy counts a replica's `500` as a failure
//! (so one client could open a bucket's circuit breaker for everyone), and
//! listings looped.
//!
//! - **`encoding-type=url` in listings** (`ListObjectsV2`, `ListObjects`):
//!   s3s-fs echoes `<EncodingType>url</EncodingType>` but sends the keys raw,
//!   so a client that decodes them (rusty-s3, botocore: both
//!   `unquote_plus`) turns `a+b.txt` into `a b.txt`, and paginating from the
//!   decoded key loops. Here `Key`, `Prefix`, `Delimiter`, `StartAfter`,
//!   `Marker`, `NextMarker` and the common prefixes are encoded as S3 does:
//!   a space is `+`, everything but `A-Z a-z 0-9 - _ . / *` is `%XX` (UTF-8).
//! - **Continuation tokens** are opaque (the hex of s3s-fs's token, the last
//!   key), so a key with a character XML cannot carry (`\x01`) never appears
//!   raw in the XML; a token that is not one answers `400 InvalidArgument`.
//! - **A key that names no file** (`GetObject`, `HeadObject`): a directory
//!   (`dir1`, `dir1/`), a leading slash (`/hello.txt`), an empty, `.` or `..`
//!   segment. s3s-fs answers `500` (or, for `a/../b`, serves `b`); S3 answers
//!   `404 NoSuchKey` (`NoSuchBucket` when the bucket is missing).
//! - **A suffix range longer than the object** (`bytes=-5000` on 3,000 bytes):
//!   s3s-fs seeks before the start and answers `500`; S3 answers `206` with
//!   the whole object (RFC 9110 §14.1.2). On an empty object any range
//!   answers `416 InvalidRange`, as S3 does (a `206` cannot describe zero
//!   bytes: there is no `Content-Range` for it).
//!
//! - **`ETag` in listings**: s3s-fs lists objects without one; S3 always
//!   sends it, and clients rely on it (`s3cmd sync` and `s3cmd get` of a
//!   glob fail with `KeyError: 'ETag'`). Each listed object gets the `ETag` a
//!   `HEAD` of it answers.
//!
//! Every other operation s3s-fs implements is passed on unchanged.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

/// s3s-fs with its answers to reads corrected (see the module docs).
pub(super) struct Fidelity {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

impl Fidelity {
    /// Wraps `inner`, which serves the buckets under `root`.
    pub(super) fn new(inner: s3s_fs::FileSystem, root: &Path) -> Self {
        Self {
            inner,
            root: root.to_path_buf(),
        }
    }

    /// The length of the file holding `key`; `Ok(None)` when nothing is at its
    /// path (s3s-fs answers that); `NoSuchKey` (or `NoSuchBucket`) for a key
    /// no file can hold or that names a directory (as s3s-fs answers a
    /// missing key).
    async fn object_len(&self, bucket: &str, key: &str) -> S3Result<Option<u64>> {
        let bucket_dir = self.root.join(bucket);
        let storable = !key.split('/').any(|s| s.is_empty() || s == "." || s == "..");
        if storable {
            match tokio::fs::metadata(bucket_dir.join(key)).await {
                Ok(meta) if meta.is_file() => return Ok(Some(meta.len())),
                Ok(_) => {}
                Err(_) => return Ok(None),
            }
        }
        if tokio::fs::metadata(&bucket_dir).await.is_ok_and(|m| m.is_dir()) {
            Err(s3_error!(NoSuchKey))
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    async fn get_object(&self, mut req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let len = self.object_len(&req.input.bucket, &req.input.key).await?;
        if let (Some(len), Some(Range::Suffix { length })) = (len, req.input.range) {
            if len == 0 {
                return Err(s3_error!(InvalidRange, "The requested range is not satisfiable"));
            }
            if length > len {
                req.input.range = Some(Range::Int { first: 0, last: None });
            }
        }
        self.inner.get_object(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.object_len(&req.input.bucket, &req.input.key).await?;
        self.inner.head_object(req).await
    }

    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let url = is_url(req.input.encoding_type.as_ref());
        let head = HeadTemplate::of(&req);
        let bucket = req.input.bucket.clone();
        let token = req.input.continuation_token.clone();
        if let Some(t) = &mut req.input.continuation_token {
            *t = hex_decode(t)
                .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))?;
        }
        let mut res = self.inner.list_objects_v2(req).await?;
        let out = &mut res.output;
        self.fill_etags(&head, &bucket, &mut out.contents).await?;
        out.continuation_token = token;
        out.next_continuation_token = out.next_continuation_token.as_deref().map(hex_encode);
        if url {
            encode_objects(&mut out.contents, &mut out.common_prefixes);
            for value in [&mut out.prefix, &mut out.delimiter, &mut out.start_after] {
                encode_opt(value);
            }
        }
        Ok(res)
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let url = is_url(req.input.encoding_type.as_ref());
        let head = HeadTemplate::of(&req);
        let bucket = req.input.bucket.clone();
        let marker = req.input.marker.clone();
        let mut res = self.inner.list_objects(req).await?;
        let out = &mut res.output;
        self.fill_etags(&head, &bucket, &mut out.contents).await?;
        out.marker = marker;
        if url {
            encode_objects(&mut out.contents, &mut out.common_prefixes);
            for value in [
                &mut out.prefix,
                &mut out.delimiter,
                &mut out.marker,
                &mut out.next_marker,
            ] {
                encode_opt(value);
            }
        }
        Ok(res)
    }
}

impl Fidelity {
    /// Sets each listed object's `ETag` to the one a `HEAD` of it answers
    /// (before the keys are URL-encoded). An object deleted meanwhile keeps
    /// none.
    async fn fill_etags(&self, head: &HeadTemplate, bucket: &str, contents: &mut Option<Vec<Object>>) -> S3Result<()> {
        for object in contents.iter_mut().flatten() {
            let Some(key) = object.key.clone() else { continue };
            let input = HeadObjectInput::builder()
                .bucket(bucket.to_owned())
                .key(key)
                .build()
                .map_err(|e| s3_error!(InternalError, "{e}"))?;
            if let Ok(res) = self.inner.head_object(head.request(input)).await {
                object.e_tag = res.output.e_tag;
            }
        }
        Ok(())
    }
}

/// What a `HEAD` made on behalf of a listing carries over from it.
struct HeadTemplate {
    uri: http::Uri,
    credentials: Option<s3s::auth::Credentials>,
    region: Option<s3s::region::Region>,
    service: Option<String>,
}

impl HeadTemplate {
    fn of<T>(req: &S3Request<T>) -> Self {
        Self {
            uri: req.uri.clone(),
            credentials: req.credentials.clone(),
            region: req.region.clone(),
            service: req.service.clone(),
        }
    }

    fn request(&self, input: HeadObjectInput) -> S3Request<HeadObjectInput> {
        S3Request {
            input,
            method: http::Method::HEAD,
            uri: self.uri.clone(),
            headers: http::HeaderMap::new(),
            extensions: http::Extensions::new(),
            credentials: self.credentials.clone(),
            region: self.region.clone(),
            service: self.service.clone(),
            trailing_headers: None,
        }
    }
}

fn is_url(encoding: Option<&EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_objects(contents: &mut Option<Vec<Object>>, prefixes: &mut Option<Vec<CommonPrefix>>) {
    for object in contents.iter_mut().flatten() {
        encode_opt(&mut object.key);
    }
    for prefix in prefixes.iter_mut().flatten() {
        encode_opt(&mut prefix.prefix);
    }
}

fn encode_opt(value: &mut Option<String>) {
    if let Some(v) = value {
        *v = url_encode(v);
    }
}

/// S3's `encoding-type=url`: a space is `+`, `A-Z a-z 0-9 - _ . / *` stay,
/// every other byte of the UTF-8 is `%XX`. The inverse of `unquote_plus`
/// (botocore) and of rusty-s3's decoding.
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex_encode(value: &str) -> String {
    value.bytes().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let raw = bytes
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(raw).ok()
}

type Op<'a, T> = Pin<Box<dyn Future<Output = S3Result<S3Response<T>>> + Send + 'a>>;

/// `S3` methods spelled as `#[async_trait]` expands them (the testkit does not
/// depend on `async-trait`): `fixed` ones go through [`Fidelity`]'s own,
/// `inner` ones straight to s3s-fs.
macro_rules! ops {
    ($($via:ident $op:ident($input:ident) -> $output:ident;)*) => {$(
        fn $op<'life0, 'async_trait>(&'life0 self, req: S3Request<$input>) -> Op<'async_trait, $output>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            ops!(@call $via self, $op, req)
        }
    )*};
    (@call fixed $self:ident, $op:ident, $req:ident) => { Box::pin(Fidelity::$op($self, $req)) };
    (@call inner $self:ident, $op:ident, $req:ident) => { $self.inner.$op($req) };
}

/// Every operation s3s-fs 0.14 implements; the trait answers the others
/// `NotImplemented`, as s3s-fs does.
impl S3 for Fidelity {
    ops! {
        fixed get_object(GetObjectInput) -> GetObjectOutput;
        fixed head_object(HeadObjectInput) -> HeadObjectOutput;
        fixed list_objects(ListObjectsInput) -> ListObjectsOutput;
        fixed list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output;
        inner abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
        inner complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
        inner copy_object(CopyObjectInput) -> CopyObjectOutput;
        inner create_bucket(CreateBucketInput) -> CreateBucketOutput;
        inner create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
        inner delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
        inner delete_object(DeleteObjectInput) -> DeleteObjectOutput;
        inner delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
        inner get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
        inner head_bucket(HeadBucketInput) -> HeadBucketOutput;
        inner list_buckets(ListBucketsInput) -> ListBucketsOutput;
        inner list_parts(ListPartsInput) -> ListPartsOutput;
        inner put_object(PutObjectInput) -> PutObjectOutput;
        inner upload_part(UploadPartInput) -> UploadPartOutput;
        inner upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_is_what_unquote_plus_undoes() {
        assert_eq!(url_encode("a+b c/100%.txt"), "a%2Bb+c/100%25.txt");
        assert_eq!(url_encode("uni-é\t\u{1}&*~"), "uni-%C3%A9%09%01%26*%7E");
    }

    #[test]
    fn tokens_round_trip_and_forged_ones_are_refused() {
        let key = "dir/\u{1}é+ x";
        assert_eq!(hex_decode(&hex_encode(key)).as_deref(), Some(key));
        assert_eq!(hex_decode("forged"), None);
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("ff"), None, "not UTF-8");
    }
}
