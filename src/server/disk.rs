//! [`DiskStore`]: the durable store behind `serve --data-dir` and `mount --embedded`.
//!
//! Layout: `index.redb` (redb, the ordered key index: bucket + key → [`ObjectRecord`]) and
//! `data/<xx>/<id>`, one file per object incarnation, named by a random id (never by the key, so
//! no key can reach outside the directory). An append writes the bytes at the committed length,
//! syncs them, and only then commits the new length and CRC to the index: an acknowledged append
//! survives `kill -9` and power loss, and a body cut off mid-way is never visible, because readers
//! and later appends only trust the committed length.
//!
//! Multipart uploads live in two more tables (`uploads`: bucket + upload id → [`UploadRecord`];
//! `parts`: bucket + upload id + part number → [`PartRecord`]); each part is a data file like an
//! object's, synced before its record is committed, and removed when its upload completes or
//! is aborted.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};

use super::store::{
    new_data_id, now_ms, plan_append, plan_put, plan_update_meta, BucketRecord, CompletePlanner,
    CreateAttrs, ObjectRecord, PartRecord, Store, StoreError, UploadRecord,
};

const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uploads");
const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");

pub struct DiskStore {
    db: Database,
    data_dir: PathBuf,
    /// Serialises read-modify-write operations so the position rule is checked and applied
    /// atomically (redb allows one write transaction at a time anyway).
    writer: Mutex<()>,
}

fn index_key(bucket: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key);
    k
}

fn decode_record(raw: &[u8]) -> Result<ObjectRecord, StoreError> {
    decode(raw)
}

fn decode<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Index(format!("corrupt record: {e}")))
}

/// Index key of an upload; its parts' keys extend it with `/` and the big-endian part number,
/// so a prefix scan yields them in part order.
fn upload_key(bucket: &str, upload_id: &str) -> Vec<u8> {
    index_key(bucket, upload_id.as_bytes())
}

fn part_key(bucket: &str, upload_id: &str, number: u32) -> Vec<u8> {
    let mut k = upload_key(bucket, upload_id);
    k.push(b'/');
    k.extend_from_slice(&number.to_be_bytes());
    k
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Index(e.to_string()))
}

impl DiskStore {
    /// Opens (or creates) a store in `dir` and removes data files no committed record refers to
    /// (left by a crash between writing a file and committing it).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir.join("data"))?;
        let db = match Database::create(dir.join("index.redb")) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse),
            other => other?,
        };
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(BUCKETS)?;
        txn.open_table(UPLOADS)?;
        txn.open_table(PARTS)?;
        txn.commit()?;
        let store = DiskStore {
            db,
            data_dir: dir.join("data"),
            writer: Mutex::new(()),
        };
        store.collect_garbage()?;
        Ok(store)
    }

    fn collect_garbage(&self) -> Result<(), StoreError> {
        let mut live = std::collections::HashSet::new();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        for entry in table.iter()? {
            let (_, v) = entry?;
            live.insert(decode_record(v.value())?.data_id);
        }
        let parts = txn.open_table(PARTS)?;
        for entry in parts.iter()? {
            let (_, v) = entry?;
            live.insert(decode::<PartRecord>(v.value())?.data_id);
        }
        for shard in fs::read_dir(&self.data_dir)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in fs::read_dir(&shard)? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    tracing::info!(file = %file.path().display(), "removing data file no record refers to");
                    fs::remove_file(file.path())?;
                }
            }
        }
        Ok(())
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.data_dir.join(id.get(..2).unwrap_or("00")).join(id)
    }

    /// Creates an empty data file and makes its directory entry durable.
    fn create_data_file(&self, id: &str) -> Result<File, StoreError> {
        let path = self.data_path(id);
        let shard = path.parent().unwrap_or(&self.data_dir);
        fs::create_dir_all(shard)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        File::open(shard)?.sync_all()?;
        Ok(file)
    }

    fn remove_data_file(&self, id: &str) {
        if let Err(e) = fs::remove_file(self.data_path(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                // Harmless: the next start collects it.
                tracing::warn!(id, error = %e, "could not remove replaced data file");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn require_bucket(&self, txn: &redb::ReadTransaction, bucket: &str) -> Result<(), StoreError> {
        let t = txn.open_table(BUCKETS)?;
        if t.get(bucket)?.is_none() {
            return Err(StoreError::NoSuchBucket);
        }
        Ok(())
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        self.require_bucket(&txn, bucket)?;
        let t = txn.open_table(OBJECTS)?;
        let v = t.get(index_key(bucket, key.as_bytes()).as_slice())?;
        v.map(|v| decode_record(v.value())).transpose()
    }

    fn commit(
        &self,
        bucket: &str,
        key: &str,
        rec: Option<&ObjectRecord>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(OBJECTS)?;
            let k = index_key(bucket, key.as_bytes());
            match rec {
                Some(r) => {
                    t.insert(k.as_slice(), encode(r)?.as_slice())?;
                }
                None => {
                    t.remove(k.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl DiskStore {
    /// The stored parts of an upload, in part order.
    fn part_records(
        &self,
        txn: &redb::ReadTransaction,
        bucket: &str,
        upload_id: &str,
    ) -> Result<Vec<PartRecord>, StoreError> {
        let t = txn.open_table(PARTS)?;
        let mut prefix = upload_key(bucket, upload_id);
        prefix.push(b'/');
        let mut out = Vec::new();
        for entry in t.range::<&[u8]>(prefix.as_slice()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn upload_record(
        &self,
        txn: &redb::ReadTransaction,
        bucket: &str,
        upload_id: &str,
    ) -> Result<Option<UploadRecord>, StoreError> {
        let t = txn.open_table(UPLOADS)?;
        let v = t.get(upload_key(bucket, upload_id).as_slice())?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// Removes an upload and all its part records in one transaction; returns the parts so
    /// their files can be freed after the commit.
    fn drop_upload(
        &self,
        txn: &redb::WriteTransaction,
        bucket: &str,
        upload_id: &str,
        parts: &[PartRecord],
    ) -> Result<(), StoreError> {
        txn.open_table(UPLOADS)?
            .remove(upload_key(bucket, upload_id).as_slice())?;
        let mut t = txn.open_table(PARTS)?;
        for p in parts {
            t.remove(part_key(bucket, upload_id, p.number).as_slice())?;
        }
        Ok(())
    }
}

impl Store for DiskStore {
    fn blocking(&self) -> bool {
        true
    }

    fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let _g = self.lock();
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(BUCKETS)?;
            if t.get(bucket)?.is_none() {
                let rec = BucketRecord {
                    created_ms: now_ms(),
                };
                t.insert(bucket, encode(&rec)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BUCKETS)?;
        let v = t.get(bucket)?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| StoreError::Index(e.to_string())))
            .transpose()
    }

    fn buckets(&self) -> Result<Vec<(String, BucketRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(BUCKETS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let rec =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Index(e.to_string()))?;
            out.push((k.value().to_string(), rec));
        }
        Ok(out)
    }

    fn delete_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        let _g = self.lock();
        if !self.scan(bucket, Bound::Unbounded, 1)?.is_empty() || !self.uploads(bucket)?.is_empty()
        {
            return Err(StoreError::BucketNotEmpty);
        }
        let txn = self.db.begin_write()?;
        txn.open_table(BUCKETS)?.remove(bucket)?;
        txn.commit()?;
        Ok(())
    }

    fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.get(bucket, key)
    }

    fn read(
        &self,
        _bucket: &str,
        _key: &str,
        record: &ObjectRecord,
        first: u64,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        if first.saturating_add(len) > record.size {
            return Err(StoreError::Changed);
        }
        // Bytes below the committed size of this incarnation never change; the file only
        // disappears when the object is replaced or deleted.
        let file = match File::open(self.data_path(&record.data_id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Changed),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, first)?;
        Ok(Bytes::from(buf))
    }

    fn append(
        &self,
        bucket: &str,
        key: &str,
        position: u64,
        data: Bytes,
        attrs: &CreateAttrs,
    ) -> Result<ObjectRecord, StoreError> {
        let _g = self.lock();
        let current = self.get(bucket, key)?;
        let mut next = plan_append(current.as_ref(), position, &data, attrs)?;
        if current.as_ref() == Some(&next) {
            return Ok(next); // zero-length append: nothing changes
        }
        let file = if next.data_id.is_empty() {
            next.data_id = new_data_id();
            self.create_data_file(&next.data_id)?
        } else {
            OpenOptions::new()
                .write(true)
                .open(self.data_path(&next.data_id))?
        };
        file.write_all_at(&data, position)?;
        // Drops any tail a torn earlier append left beyond the committed length.
        file.set_len(next.size)?;
        file.sync_data()?;
        self.commit(bucket, key, Some(&next))?;
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
        let _g = self.lock();
        let current = self.get(bucket, key)?;
        if forbid_overwrite && current.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        let mut rec = plan_put(&data, attrs)?;
        rec.data_id = new_data_id();
        let file = self.create_data_file(&rec.data_id)?;
        file.write_all_at(&data, 0)?;
        file.sync_all()?;
        if let Err(e) = self.commit(bucket, key, Some(&rec)) {
            self.remove_data_file(&rec.data_id);
            return Err(e);
        }
        if let Some(old) = current {
            self.remove_data_file(&old.data_id);
        }
        Ok(rec)
    }

    fn update_meta(
        &self,
        bucket: &str,
        key: &str,
        attrs: &CreateAttrs,
    ) -> Result<ObjectRecord, StoreError> {
        let _g = self.lock();
        let current = self.get(bucket, key)?.ok_or(StoreError::NoSuchKey)?;
        let next = plan_update_meta(&current, attrs);
        self.commit(bucket, key, Some(&next))?;
        Ok(next)
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let _g = self.lock();
        if let Some(old) = self.get(bucket, key)? {
            self.commit(bucket, key, None)?;
            self.remove_data_file(&old.data_id);
        }
        Ok(())
    }

    fn scan(
        &self,
        bucket: &str,
        from: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(String, ObjectRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        self.require_bucket(&txn, bucket)?;
        let t = txn.open_table(OBJECTS)?;
        let prefix = index_key(bucket, b"");
        let start = match from {
            Bound::Included(k) => Bound::Included(index_key(bucket, k)),
            Bound::Excluded(k) => Bound::Excluded(index_key(bucket, k)),
            Bound::Unbounded => Bound::Included(prefix.clone()),
        };
        let start_ref = match &start {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in t.range::<&[u8]>((start_ref, Bound::Unbounded))? {
            let (k, v) = entry?;
            let Some(key) = k.value().strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((
                String::from_utf8_lossy(key).into_owned(),
                decode_record(v.value())?,
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn create_upload(&self, bucket: &str, upload: &UploadRecord) -> Result<(), StoreError> {
        let _g = self.lock();
        let txn = self.db.begin_write()?;
        {
            if txn.open_table(BUCKETS)?.get(bucket)?.is_none() {
                return Err(StoreError::NoSuchBucket);
            }
            txn.open_table(UPLOADS)?.insert(
                upload_key(bucket, &upload.upload_id).as_slice(),
                encode(upload)?.as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    fn upload(&self, bucket: &str, upload_id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        self.require_bucket(&txn, bucket)?;
        self.upload_record(&txn, bucket, upload_id)
    }

    fn uploads(&self, bucket: &str) -> Result<Vec<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        self.require_bucket(&txn, bucket)?;
        let t = txn.open_table(UPLOADS)?;
        let prefix = index_key(bucket, b"");
        let mut out: Vec<UploadRecord> = Vec::new();
        for entry in t.range::<&[u8]>(prefix.as_slice()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push(decode(v.value())?);
        }
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
        let mut part = PartRecord::new(number, &data);
        part.data_id = new_data_id();
        // Written and synced outside the writer lock, so parts upload in parallel; only the
        // index commit is serialised.
        let file = self.create_data_file(&part.data_id)?;
        file.write_all_at(&data, 0)?;
        file.sync_all()?;
        let _g = self.lock();
        let committed = (|| {
            let txn = self.db.begin_write()?;
            let old = {
                if txn
                    .open_table(UPLOADS)?
                    .get(upload_key(bucket, upload_id).as_slice())?
                    .is_none()
                {
                    return Err(StoreError::NoSuchUpload);
                }
                let mut t = txn.open_table(PARTS)?;
                let k = part_key(bucket, upload_id, number);
                let old = t
                    .get(k.as_slice())?
                    .map(|v| decode::<PartRecord>(v.value()));
                t.insert(k.as_slice(), encode(&part)?.as_slice())?;
                old.transpose()?
            };
            txn.commit()?;
            Ok(old)
        })();
        match committed {
            Ok(old) => {
                if let Some(old) = old {
                    self.remove_data_file(&old.data_id);
                }
                Ok(part)
            }
            Err(e) => {
                self.remove_data_file(&part.data_id);
                Err(e)
            }
        }
    }

    fn parts(&self, bucket: &str, upload_id: &str) -> Result<Vec<PartRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        self.require_bucket(&txn, bucket)?;
        if self.upload_record(&txn, bucket, upload_id)?.is_none() {
            return Err(StoreError::NoSuchUpload);
        }
        self.part_records(&txn, bucket, upload_id)
    }

    fn complete_upload(
        &self,
        bucket: &str,
        upload_id: &str,
        plan: &CompletePlanner<'_>,
        forbid_overwrite: bool,
    ) -> Result<ObjectRecord, StoreError> {
        let _g = self.lock();
        let (upload, stored) = {
            let txn = self.db.begin_read()?;
            self.require_bucket(&txn, bucket)?;
            let upload = self
                .upload_record(&txn, bucket, upload_id)?
                .ok_or(StoreError::NoSuchUpload)?;
            let stored = self.part_records(&txn, bucket, upload_id)?;
            (upload, stored)
        };
        let (mut record, chosen) = plan(&upload, &stored)?;
        let current = self.get(bucket, &upload.key)?;
        if forbid_overwrite && current.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        record.data_id = new_data_id();
        let written = (|| {
            let mut out = self.create_data_file(&record.data_id)?;
            for p in &chosen {
                let mut part = File::open(self.data_path(&p.data_id))?;
                let copied = io::copy(&mut part, &mut out)?;
                if copied != p.size {
                    return Err(StoreError::Index(format!(
                        "part {} holds {copied} bytes, its record says {}",
                        p.number, p.size
                    )));
                }
            }
            out.sync_all()?;
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(OBJECTS)?;
                t.insert(
                    index_key(bucket, upload.key.as_bytes()).as_slice(),
                    encode(&record)?.as_slice(),
                )?;
            }
            self.drop_upload(&txn, bucket, upload_id, &stored)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = written {
            self.remove_data_file(&record.data_id);
            return Err(e);
        }
        for p in &stored {
            self.remove_data_file(&p.data_id);
        }
        if let Some(old) = current {
            self.remove_data_file(&old.data_id);
        }
        Ok(record)
    }

    fn abort_upload(&self, bucket: &str, upload_id: &str) -> Result<(), StoreError> {
        let _g = self.lock();
        let stored = {
            let txn = self.db.begin_read()?;
            self.require_bucket(&txn, bucket)?;
            if self.upload_record(&txn, bucket, upload_id)?.is_none() {
                return Err(StoreError::NoSuchUpload);
            }
            self.part_records(&txn, bucket, upload_id)?
        };
        let txn = self.db.begin_write()?;
        self.drop_upload(&txn, bucket, upload_id, &stored)?;
        txn.commit()?;
        for p in &stored {
            self.remove_data_file(&p.data_id);
        }
        Ok(())
    }
}
