//! The HTTP face of an object stack: `GET`/`HEAD /{key}` in, a streamed object
//! or an S3-style error out.

mod key;
mod request;
mod service;

pub use crate::http::headers::{request_id, REQUEST_ID};
pub use key::{decode_key, KeyError};
pub use request::{ObjectMethod, ObjectRequest, Operation, FORWARDED_OBJECT_PARAMS, FORWARDED_REQUEST_HEADERS};
pub use service::{ObjectService, ResponseFuture};
