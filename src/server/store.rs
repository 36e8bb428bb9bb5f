//! Object storage behind the local server: the record kept per object and the [`Store`] trait with
//! its two implementations, [`MemStore`] (everything in RAM) and [`DiskStore`] (durable). The
//! OSS semantics (position rule, object types, CRC, ETag) are applied here, once, for both.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::oss::crc64::{self, Crc64};
use crate::oss::meta::{storage_class_appendable, ObjectMeta, ObjectType};
use crate::oss::MAX_OBJECT_SIZE;

pub use super::disk::DiskStore;
pub use super::mem::MemStore;

/// What the server keeps about one object. Serialised as JSON in the disk index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub object_type: ObjectType,
    pub size: u64,
    pub crc64: u64,
    /// Quoted, as sent in headers.
    pub etag: String,
    pub last_modified_ms: i64,
    pub content_type: String,
    /// Base64 MD5, Normal objects only.
    pub content_md5: Option<String>,
    pub storage_class: String,
    pub acl: Option<String>,
    pub sse: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub http_headers: BTreeMap<String, String>,
    pub tagging: Option<String>,
    /// Name of the data file (disk store); unused in memory.
    pub data_id: String,
}

impl ObjectRecord {
    /// A new object holding `data`, with the creation attributes of its request. Its
    /// `data_id` is left for the store to assign.
    pub(super) fn created(
        object_type: ObjectType,
        data: &[u8],
        etag: String,
        content_md5: Option<String>,
        attrs: &CreateAttrs,
    ) -> Self {
        ObjectRecord {
            object_type,
            size: data.len() as u64,
            crc64: crc64::checksum(data),
            etag,
            last_modified_ms: now_ms(),
            content_type: attrs.content_type.clone(),
            content_md5,
            storage_class: attrs.storage_class.clone(),
            acl: attrs.acl.clone(),
            sse: attrs.sse.clone(),
            user_meta: attrs.user_meta.clone(),
            http_headers: attrs.http_headers.clone(),
            tagging: attrs.tagging.clone(),
            data_id: String::new(),
        }
    }

    pub fn last_modified(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.last_modified_ms).unwrap_or_default()
    }

    pub fn meta(&self) -> ObjectMeta {
        let appendable = self.object_type == ObjectType::Appendable;
        ObjectMeta {
            size: self.size,
            object_type: Some(self.object_type),
            etag: self.etag.clone(),
            // Headers carry whole seconds.
            last_modified: DateTime::from_timestamp(self.last_modified_ms.div_euclid(1000), 0),
            crc64: Some(self.crc64),
            next_append_position: appendable.then_some(self.size),
            storage_class: Some(self.storage_class.clone()),
            content_type: Some(self.content_type.clone()),
            content_md5: self.content_md5.clone(),
            server_side_encryption: self.sse.clone(),
            acl: self.acl.clone(),
            user_meta: self.user_meta.clone(),
            http_headers: self.http_headers.clone(),
        }
    }
}

/// Attributes that a creating request sets (AppendObject at creation, PutObject, CopyObject with
/// REPLACE, InitiateMultipartUpload). On later appends they are ignored, as the service does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAttrs {
    pub content_type: String,
    pub storage_class: String,
    pub acl: Option<String>,
    pub sse: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    pub http_headers: BTreeMap<String, String>,
    pub tagging: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("no such key")]
    NoSuchKey,
    #[error("object is not appendable")]
    NotAppendable,
    #[error("position {position} is not equal to length {length}")]
    PositionMismatch { position: u64, length: u64 },
    #[error("object would exceed {MAX_OBJECT_SIZE} bytes")]
    TooLarge,
    #[error("storage class {0} cannot be appended")]
    ClassNotAppendable(String),
    #[error("object already exists")]
    AlreadyExists,
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("object changed while being read")]
    Changed,
    #[error("no such multipart upload")]
    NoSuchUpload,
    #[error("part {0} was not uploaded or its ETag differs")]
    InvalidPart(u32),
    #[error("the part list is not in ascending order")]
    InvalidPartOrder,
    #[error("part {0} is smaller than the minimum part size")]
    EntityTooSmall(u32),
    #[error("the part list is empty or malformed")]
    MalformedPartList,
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("index: {0}")]
    Index(String),
    /// Another process holds the data directory (a mount that is still draining after its
    /// unmount, or a server already running on it).
    #[error("the data directory is in use by another process")]
    InUse,
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Index(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Index(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub created_ms: i64,
}

/// The storage operations the HTTP layer needs. Calls may block (disk I/O); the server runs them
/// off the async workers. Implementations serialise writers so the position rule is atomic.
pub trait Store: Send + Sync + 'static {
    /// Whether calls block on disk, so the server knows to move them off the async workers.
    fn blocking(&self) -> bool;
    fn create_bucket(&self, bucket: &str) -> Result<(), StoreError>;
    fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>, StoreError>;
    fn buckets(&self) -> Result<Vec<(String, BucketRecord)>, StoreError>;
    fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError>;
    fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError>;
    /// Bytes `first..first+len` of the object as `record` describes it. Bytes below a known
    /// length never change for Appendable objects; a replaced object gives `Changed`.
    fn read(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        first: u64,
        len: u64,
    ) -> Result<Bytes, StoreError>;
    /// AppendObject: applies the OSS position rule and returns the new record.
    fn append(
        &self,
        bucket: &str,
        key: &str,
        position: u64,
        data: Bytes,
        attrs: &CreateAttrs,
    ) -> Result<ObjectRecord, StoreError>;
    /// PutObject (also the result of a copy): a Normal object.
    fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        attrs: &CreateAttrs,
        forbid_overwrite: bool,
    ) -> Result<ObjectRecord, StoreError>;
    /// Replaces only the metadata of an existing object (copy onto itself).
    fn update_meta(
        &self,
        bucket: &str,
        key: &str,
        attrs: &CreateAttrs,
    ) -> Result<ObjectRecord, StoreError>;
    fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError>;
    /// Up to `limit` objects of `bucket` whose keys are `>= from` in byte order.
    fn scan(
        &self,
        bucket: &str,
        from: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError>;

    /// InitiateMultipartUpload: records a new upload (no parts yet).
    fn create_upload(&self, bucket: &str, upload: &UploadRecord) -> Result<(), StoreError>;
    fn upload(&self, bucket: &str, upload_id: &str) -> Result<Option<UploadRecord>, StoreError>;
    /// Every upload in progress in `bucket`, ordered by key, then by upload id (which orders
    /// by initiation time).
    fn uploads(&self, bucket: &str) -> Result<Vec<UploadRecord>, StoreError>;
    /// UploadPart: stores (or replaces) part `number` of an upload, durably before returning.
    fn put_part(
        &self,
        bucket: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartRecord, StoreError>;
    /// The parts of an upload, ordered by part number.
    fn parts(&self, bucket: &str, upload_id: &str) -> Result<Vec<PartRecord>, StoreError>;
    /// CompleteMultipartUpload: `plan` picks the parts and builds the object's record from the
    /// upload and its stored parts; the store then concatenates those parts into the object and
    /// frees the upload with all its parts, atomically with respect to other writers.
    fn complete_upload(
        &self,
        bucket: &str,
        upload_id: &str,
        plan: &CompletePlanner<'_>,
        forbid_overwrite: bool,
    ) -> Result<ObjectRecord, StoreError>;
    /// AbortMultipartUpload: forgets the upload and frees its parts.
    fn abort_upload(&self, bucket: &str, upload_id: &str) -> Result<(), StoreError>;
}

/// Chooses the parts of a completion and builds the new object's record (see
/// [`Store::complete_upload`]).
pub type CompletePlanner<'a> = dyn Fn(&UploadRecord, &[PartRecord]) -> Result<(ObjectRecord, Vec<PartRecord>), StoreError>
    + 'a;

/// A multipart upload in progress. Serialised as JSON in the disk index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub upload_id: String,
    pub key: String,
    pub initiated_ms: i64,
    /// Applied to the object at completion.
    pub attrs: CreateAttrs,
}

/// One uploaded part. Serialised as JSON in the disk index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub number: u32,
    pub size: u64,
    /// Quoted uppercase hex MD5, as sent in headers.
    pub etag: String,
    pub crc64: u64,
    pub last_modified_ms: i64,
    /// Name of the data file (disk store); unused in memory.
    pub data_id: String,
}

impl PartRecord {
    pub fn new(number: u32, data: &[u8]) -> Self {
        PartRecord {
            number,
            size: data.len() as u64,
            etag: md5_etag(data).0,
            crc64: crc64::checksum(data),
            last_modified_ms: now_ms(),
            data_id: String::new(),
        }
    }
}

/// A fresh upload id: 32 uppercase hex digits, the first 16 the initiation time in nanoseconds
/// so that sorting by id sorts uploads of one key by initiation, as listings must.
pub fn new_upload_id() -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default().max(0) as u64;
    format!("{nanos:016X}{:016X}", rand::random::<u64>())
}

pub type SharedStore = Arc<dyn Store>;

/// A fresh name for one incarnation of an object's data. Never derived from the key, so no key
/// can name a path outside the data directory.
pub fn new_data_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// An appendable's ETag: 32 uppercase hex characters that are not an MD5 and change on every
/// append (the service calls it a UUID); clients must treat it as opaque.
pub fn appendable_etag() -> String {
    format!("\"{:032X}\"", rand::random::<u128>())
}

pub fn md5_etag(data: &[u8]) -> (String, String) {
    use base64::Engine;
    let digest = Md5::digest(data);
    (
        format!("\"{}\"", hex::encode_upper(digest)),
        base64::engine::general_purpose::STANDARD.encode(digest),
    )
}

/// The position rule of AppendObject, shared by both stores. `current` is the existing object.
/// Returns the record to store after appending `data` (its `data_id` is the existing one, or
/// empty for the caller to fill in on creation).
pub fn plan_append(
    current: Option<&ObjectRecord>,
    position: u64,
    data: &[u8],
    attrs: &CreateAttrs,
) -> Result<ObjectRecord, StoreError> {
    let len = data.len() as u64;
    match current {
        Some(rec) if rec.object_type != ObjectType::Appendable => Err(StoreError::NotAppendable),
        Some(rec) if rec.size != position => Err(StoreError::PositionMismatch {
            position,
            length: rec.size,
        }),
        Some(rec) => {
            if rec.size + len > MAX_OBJECT_SIZE {
                return Err(StoreError::TooLarge);
            }
            let mut next = rec.clone();
            if len > 0 {
                next.size += len;
                let mut c = Crc64::resume(rec.crc64);
                c.update(data);
                next.crc64 = c.finish();
                next.etag = appendable_etag();
                next.last_modified_ms = now_ms();
            }
            Ok(next)
        }
        None if position != 0 => Err(StoreError::PositionMismatch {
            position,
            length: 0,
        }),
        None => {
            if !storage_class_appendable(&attrs.storage_class) {
                return Err(StoreError::ClassNotAppendable(attrs.storage_class.clone()));
            }
            if len > MAX_OBJECT_SIZE {
                return Err(StoreError::TooLarge);
            }
            Ok(ObjectRecord::created(
                ObjectType::Appendable,
                data,
                appendable_etag(),
                None,
                attrs,
            ))
        }
    }
}

/// The record of a PutObject.
pub fn plan_put(data: &[u8], attrs: &CreateAttrs) -> Result<ObjectRecord, StoreError> {
    if data.len() as u64 > MAX_OBJECT_SIZE {
        return Err(StoreError::TooLarge);
    }
    let (etag, md5) = md5_etag(data);
    Ok(ObjectRecord::created(
        ObjectType::Normal,
        data,
        etag,
        Some(md5),
        attrs,
    ))
}

/// Metadata replacement keeps data, type, size, CRC and ETag.
pub fn plan_update_meta(rec: &ObjectRecord, attrs: &CreateAttrs) -> ObjectRecord {
    let mut next = rec.clone();
    next.content_type = attrs.content_type.clone();
    next.storage_class = attrs.storage_class.clone();
    next.acl = attrs.acl.clone();
    next.user_meta = attrs.user_meta.clone();
    next.http_headers = attrs.http_headers.clone();
    next.last_modified_ms = now_ms();
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> CreateAttrs {
        CreateAttrs {
            content_type: "text/plain".into(),
            storage_class: "Standard".into(),
            ..Default::default()
        }
    }

    #[test]
    fn position_rule() {
        let a = attrs();
        assert!(matches!(
            plan_append(None, 3, b"x", &a),
            Err(StoreError::PositionMismatch {
                position: 3,
                length: 0
            })
        ));
        let r0 = plan_append(None, 0, b"", &a).unwrap();
        assert_eq!((r0.size, r0.crc64), (0, 0));
        // position 0 on an empty appendable is allowed
        let r1 = plan_append(Some(&r0), 0, b"hello ", &a).unwrap();
        let r2 = plan_append(Some(&r1), 6, b"world", &a).unwrap();
        assert_eq!(r2.crc64, crc64::checksum(b"hello world"));
        assert_ne!(r1.etag, r2.etag);
        assert!(matches!(
            plan_append(Some(&r2), 0, b"x", &a),
            Err(StoreError::PositionMismatch {
                position: 0,
                length: 11
            })
        ));
        // zero-length append at the end changes nothing
        assert_eq!(plan_append(Some(&r2), 11, b"", &a).unwrap(), r2);
        let normal = plan_put(b"abc", &a).unwrap();
        assert!(matches!(
            plan_append(Some(&normal), 3, b"x", &a),
            Err(StoreError::NotAppendable)
        ));
        let cold = CreateAttrs {
            storage_class: "ColdArchive".into(),
            ..attrs()
        };
        assert!(matches!(
            plan_append(None, 0, b"x", &cold),
            Err(StoreError::ClassNotAppendable(_))
        ));
    }

    #[test]
    fn size_limit() {
        let a = attrs();
        let mut big = plan_append(None, 0, b"", &a).unwrap();
        big.size = MAX_OBJECT_SIZE - 1;
        assert!(plan_append(Some(&big), MAX_OBJECT_SIZE - 1, b"x", &a).is_ok());
        assert!(matches!(
            plan_append(Some(&big), MAX_OBJECT_SIZE - 1, b"xy", &a),
            Err(StoreError::TooLarge)
        ));
    }

    #[test]
    fn put_etag_is_md5() {
        let r = plan_put(b"", &attrs()).unwrap();
        assert_eq!(r.etag, "\"D41D8CD98F00B204E9800998ECF8427E\"");
        assert_eq!(r.crc64, 0);
        assert_eq!(r.object_type, ObjectType::Normal);
    }
}
