//! The seam between the filesystem and OSS: the few object calls the filesystem makes, as a
//! trait. The HTTP [`Client`] implements it for real mounts; [`fake::FakeStore`] is a
//! deterministic in-memory object store with scripted faults and foreign writers, so the append
//! streams and the core can be driven through faults no real server produces on demand and
//! checked against a model.

pub mod fake;

use async_trait::async_trait;
use bytes::Bytes;

use crate::client::{
    AppendOutcome, Client, ClientError, CreateOptions, ListPage, RangeData, WriteOutcome,
};
use crate::oss::ObjectMeta;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// HeadObject.
    async fn head(&self, key: &str) -> Result<ObjectMeta, ClientError>;
    /// Bytes `first..=last` (fewer when the object ends earlier), never more.
    async fn get_range(&self, key: &str, first: u64, last: u64) -> Result<RangeData, ClientError>;
    /// AppendObject: never retried by the store once it may have been applied; such outcomes
    /// come back as [`ClientError::Ambiguous`].
    async fn append(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError>;
    /// As [`Store::append`], with the body's integrity checked by OSS (`Content-MD5`): for an
    /// append whose answer's CRC-64 cannot be checked because the object's CRC at `position`
    /// is not known.
    async fn append_verified(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.append(key, position, data, opts).await
    }
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<WriteOutcome, ClientError>;
    /// DeleteObject; deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), ClientError>;
    /// CopyObject within the bucket (metadata copied).
    async fn copy(&self, src: &str, dst: &str) -> Result<WriteOutcome, ClientError>;
    /// One ListObjectsV2 page.
    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ClientError>;
}

#[async_trait]
impl Store for Client {
    async fn head(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        self.head_object(key).await
    }

    async fn get_range(&self, key: &str, first: u64, last: u64) -> Result<RangeData, ClientError> {
        Client::get_range(self, key, first, last).await
    }

    async fn append(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.append_object(key, position, data, opts).await
    }

    async fn append_verified(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.append_object_md5(key, position, data, opts).await
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<WriteOutcome, ClientError> {
        self.put_object(key, data, opts).await
    }

    async fn delete(&self, key: &str) -> Result<(), ClientError> {
        self.delete_object(key).await
    }

    async fn copy(&self, src: &str, dst: &str) -> Result<WriteOutcome, ClientError> {
        self.copy_object(src, dst, false).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ClientError> {
        self.list_objects_v2(prefix, delimiter, token, None, Some(max_keys))
            .await
    }
}
