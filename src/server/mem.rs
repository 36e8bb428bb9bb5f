//! [`MemStore`]: buckets and objects in RAM, for fast tests and benchmarks (`serve --memory`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use bytes::Bytes;

use super::store::{
    new_data_id, now_ms, plan_append, plan_put, plan_update_meta, BucketRecord, CompletePlanner,
    CreateAttrs, ObjectRecord, PartRecord, Store, StoreError, UploadRecord,
};

struct MemObject {
    record: ObjectRecord,
    data: Vec<u8>,
}

struct MemUpload {
    record: UploadRecord,
    parts: BTreeMap<u32, (PartRecord, Bytes)>,
}

struct MemBucket {
    record: BucketRecord,
    // Keyed by the key's bytes so that order is byte order, as OSS lists.
    objects: BTreeMap<Vec<u8>, MemObject>,
    /// Multipart uploads in progress, by upload id.
    uploads: BTreeMap<String, MemUpload>,
}

#[derive(Default)]
pub struct MemStore {
    buckets: RwLock<BTreeMap<String, MemBucket>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, MemBucket>> {
        // A panic while holding the lock cannot leave a half-applied object (every update is a
        // single assignment), so a poisoned lock is still consistent.
        self.buckets.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, MemBucket>> {
        self.buckets.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemStore {
    fn blocking(&self) -> bool {
        false
    }

    fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        self.write_lock()
            .entry(bucket.to_string())
            .or_insert_with(|| MemBucket {
                record: BucketRecord {
                    created_ms: now_ms(),
                },
                objects: BTreeMap::new(),
                uploads: BTreeMap::new(),
            });
        Ok(())
    }

    fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>, StoreError> {
        Ok(self.read_lock().get(bucket).map(|b| b.record.clone()))
    }

    fn buckets(&self) -> Result<Vec<(String, BucketRecord)>, StoreError> {
        Ok(self
            .read_lock()
            .iter()
            .map(|(n, b)| (n.clone(), b.record.clone()))
            .collect())
    }

    fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let mut all = self.write_lock();
        match all.get(bucket) {
            None => Err(StoreError::NoSuchBucket),
            Some(b) if !b.objects.is_empty() || !b.uploads.is_empty() => {
                Err(StoreError::BucketNotEmpty)
            }
            Some(_) => {
                all.remove(bucket);
                Ok(())
            }
        }
    }

    fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let all = self.read_lock();
        let b = all.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        Ok(b.objects.get(key.as_bytes()).map(|o| o.record.clone()))
    }

    fn read(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
        first: u64,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        let all = self.read_lock();
        let b = all.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        let o = b.objects.get(key.as_bytes()).ok_or(StoreError::Changed)?;
        // The same incarnation (appends only grow it), not a replacement under the same key.
        let end = first.saturating_add(len);
        if o.record.data_id != record.data_id || end > o.data.len() as u64 {
            return Err(StoreError::Changed);
        }
        Ok(Bytes::copy_from_slice(
            &o.data[first as usize..end as usize],
        ))
    }

    fn append(
        &self,
        bucket: &str,
        key: &str,
        position: u64,
        data: Bytes,
        attrs: &CreateAttrs,
    ) -> Result<ObjectRecord, StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        let current = b.objects.get(key.as_bytes());
        let mut next = plan_append(current.map(|o| &o.record), position, &data, attrs)?;
        if next.data_id.is_empty() {
            next.data_id = new_data_id();
        }
        let obj = b
            .objects
            .entry(key.as_bytes().to_vec())
            .or_insert_with(|| MemObject {
                record: next.clone(),
                data: Vec::new(),
            });
        obj.data.extend_from_slice(&data);
        obj.record = next.clone();
        Ok(next)
    }

    fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        attrs: &CreateAttrs,
        forbid_overwrite: bool,
    ) -> Result<ObjectRecord, StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        if forbid_overwrite && b.objects.contains_key(key.as_bytes()) {
            return Err(StoreError::AlreadyExists);
        }
        let mut record = plan_put(&data, attrs)?;
        record.data_id = new_data_id();
        b.objects.insert(
            key.as_bytes().to_vec(),
            MemObject {
                record: record.clone(),
                data: data.to_vec(),
            },
        );
        Ok(record)
    }

    fn update_meta(
        &self,
        bucket: &str,
        key: &str,
        attrs: &CreateAttrs,
    ) -> Result<ObjectRecord, StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        let o = b
            .objects
            .get_mut(key.as_bytes())
            .ok_or(StoreError::NoSuchKey)?;
        o.record = plan_update_meta(&o.record, attrs);
        Ok(o.record.clone())
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        b.objects.remove(key.as_bytes());
        Ok(())
    }

    fn scan(
        &self,
        bucket: &str,
        from: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        let all = self.read_lock();
        let b = all.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        Ok(b.objects
            .range::<[u8], _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(k, o)| (String::from_utf8_lossy(k).into_owned(), o.record.clone()))
            .collect())
    }

    fn create_upload(&self, bucket: &str, upload: &UploadRecord) -> Result<(), StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        b.uploads.insert(
            upload.upload_id.clone(),
            MemUpload {
                record: upload.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn upload(&self, bucket: &str, upload_id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let all = self.read_lock();
        let b = all.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        Ok(b.uploads.get(upload_id).map(|u| u.record.clone()))
    }

    fn uploads(&self, bucket: &str) -> Result<Vec<UploadRecord>, StoreError> {
        let all = self.read_lock();
        let b = all.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        let mut out: Vec<UploadRecord> = b.uploads.values().map(|u| u.record.clone()).collect();
        out.sort_by(|x, y| (x.key.as_bytes(), &x.upload_id).cmp(&(y.key.as_bytes(), &y.upload_id)));
        Ok(out)
    }

    fn put_part(
        &self,
        bucket: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartRecord, StoreError> {
        let part = PartRecord::new(number, &data);
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        let u = b
            .uploads
            .get_mut(upload_id)
            .ok_or(StoreError::NoSuchUpload)?;
        u.parts.insert(number, (part.clone(), data));
        Ok(part)
    }

    fn parts(&self, bucket: &str, upload_id: &str) -> Result<Vec<PartRecord>, StoreError> {
        let all = self.read_lock();
        let b = all.get(bucket).ok_or(StoreError::NoSuchBucket)?;
        let u = b.uploads.get(upload_id).ok_or(StoreError::NoSuchUpload)?;
        Ok(u.parts.values().map(|(p, _)| p.clone()).collect())
    }

    fn complete_upload(
        &self,
        bucket: &str,
        upload_id: &str,
        plan: &CompletePlanner<'_>,
        forbid_overwrite: bool,
    ) -> Result<ObjectRecord, StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        let u = b.uploads.get(upload_id).ok_or(StoreError::NoSuchUpload)?;
        let stored: Vec<PartRecord> = u.parts.values().map(|(p, _)| p.clone()).collect();
        let (mut record, chosen) = plan(&u.record, &stored)?;
        let key = u.record.key.clone();
        if forbid_overwrite && b.objects.contains_key(key.as_bytes()) {
            return Err(StoreError::AlreadyExists);
        }
        let mut data = Vec::with_capacity(record.size as usize);
        for p in &chosen {
            let (_, bytes) = u
                .parts
                .get(&p.number)
                .ok_or(StoreError::InvalidPart(p.number))?;
            data.extend_from_slice(bytes);
        }
        record.data_id = new_data_id();
        b.objects.insert(
            key.into_bytes(),
            MemObject {
                record: record.clone(),
                data,
            },
        );
        b.uploads.remove(upload_id);
        Ok(record)
    }

    fn abort_upload(&self, bucket: &str, upload_id: &str) -> Result<(), StoreError> {
        let mut all = self.write_lock();
        let b = all.get_mut(bucket).ok_or(StoreError::NoSuchBucket)?;
        b.uploads
            .remove(upload_id)
            .map(|_| ())
            .ok_or(StoreError::NoSuchUpload)
    }
}
