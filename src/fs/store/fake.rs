//! A deterministic in-memory OSS for tests of the filesystem without a server: Appendable and
//! Normal objects with OSS's position rule, whole-object CRC-64 and changing ETags, and faults
//! that are either scripted per call or drawn from a seeded RNG. Other hosts are simulated by
//! calling the `foreign_*` methods, or by a fault that lets a foreign append happen just
//! before a request is handled.
//!
//! Faults answer as the HTTP client would after its own retries: what a caller sees is the
//! error the client returns, with the object changed or not as the fault says.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use rand::{Rng, SeedableRng};

use super::Store;
use crate::client::{
    AppendOutcome, ClientError, CreateOptions, ListEntry, ListPage, Op, OssError, RangeData,
    TransportKind, WriteOutcome,
};
use crate::oss::{crc64, ObjectMeta, ObjectType, MAX_OBJECT_SIZE};

/// What goes wrong with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Applied, then the answer is lost: the caller sees an unknown outcome.
    LostAnswer,
    /// The connection broke before the body was sent: not applied, and the caller can know it.
    ResetBeforeBody,
    /// The request went out whole and no answer came: not applied, outcome unknown.
    ResetAfterBody,
    /// 500 InternalError: not applied (unknown outcome for appends).
    Error500,
    /// 503 throttling: not applied (unknown outcome for appends).
    Throttle503,
    /// Connection refused: nothing sent.
    Refused,
    /// Another host appends these bytes just before the call is handled; the call then
    /// proceeds normally.
    ForeignAppend(Bytes),
    /// The call is handled after this many milliseconds (an answer in flight, for races).
    DelayMs(u64),
}

/// Which calls a scripted fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Head,
    Get,
    Append,
    Put,
    Delete,
    Copy,
    List,
}

#[derive(Debug, Clone)]
struct Object {
    data: Vec<u8>,
    kind: ObjectType,
    crc: u64,
    etag: u64,
    user_meta: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    scripted: HashMap<Call, VecDeque<Fault>>,
    /// Random faults per call kind: (fault, probability).
    random: HashMap<Call, Vec<(Fault, f64)>>,
    rng: Option<rand::rngs::StdRng>,
    outage: bool,
    calls: HashMap<Call, u64>,
    /// Every GetObject asked for: key, first and last byte.
    ranges: Vec<(String, u64, u64)>,
    next_etag: u64,
    /// Every listing of exactly this prefix takes this long (a large directory on a slow
    /// server), whatever else is scripted.
    slow_prefixes: HashMap<String, u64>,
}

/// The in-memory store. Cheap to clone; clones share the objects (several mounts of one
/// bucket).
#[derive(Clone, Default)]
pub struct FakeStore {
    state: Arc<Mutex<State>>,
}

fn oss(op: Op, key: &str, status: u16, code: &str, next: Option<u64>) -> ClientError {
    ClientError::Oss(Box::new(OssError {
        op,
        key: key.to_string(),
        status,
        code: code.to_string(),
        message: String::new(),
        request_id: "FAKE".into(),
        ec: None,
        next_append_position: next,
    }))
}

fn transport(op: Op, key: &str, kind: TransportKind) -> ClientError {
    ClientError::Transport {
        op,
        key: key.to_string(),
        kind,
        source: "injected by the fake store".into(),
    }
}

fn ambiguous(op: Op, key: &str, cause: ClientError) -> ClientError {
    ClientError::Ambiguous {
        op,
        key: key.to_string(),
        cause: Box::new(cause),
    }
}

impl FakeStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues faults for the next calls of kind `call`, one per call.
    pub fn script(&self, call: Call, faults: impl IntoIterator<Item = Fault>) {
        self.lock().scripted.entry(call).or_default().extend(faults);
    }

    /// Random faults for calls of kind `call`, each with its probability, drawn from `seed`.
    pub fn randomly(&self, call: Call, faults: Vec<(Fault, f64)>, seed: u64) {
        let mut st = self.lock();
        st.random.insert(call, faults);
        if st.rng.is_none() {
            st.rng = Some(rand::rngs::StdRng::seed_from_u64(seed));
        }
    }

    /// Turns every fault off (scripted and random) and ends an outage.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.scripted.clear();
        st.random.clear();
        st.outage = false;
    }

    /// While on, every call fails as a refused connection.
    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
    }

    /// Every ListObjectsV2 page of exactly `prefix` is answered after `ms` milliseconds
    /// (other listings are not slowed).
    pub fn slow_list(&self, prefix: &str, ms: u64) {
        self.lock().slow_prefixes.insert(prefix.to_string(), ms);
    }

    pub fn calls(&self, call: Call) -> u64 {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// The ranges GetObject calls asked for, in order: (key, first byte, last byte).
    pub fn get_ranges(&self) -> Vec<(String, u64, u64)> {
        self.lock().ranges.clone()
    }

    /// The object's bytes, if it exists.
    pub fn content(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().objects.get(key).map(|o| o.data.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// The object's whole-object CRC-64 as the store keeps it.
    pub fn crc(&self, key: &str) -> Option<u64> {
        self.lock().objects.get(key).map(|o| o.crc)
    }

    /// Another host appends `data` at the object's end (creating it if absent).
    pub fn foreign_append(&self, key: &str, data: &[u8]) {
        let mut st = self.lock();
        Self::apply_append(&mut st, key, data);
    }

    /// Another host deletes the object.
    pub fn foreign_delete(&self, key: &str) {
        self.lock().objects.remove(key);
    }

    /// Another host replaces the object with an Appendable one holding `data`.
    pub fn foreign_replace(&self, key: &str, data: &[u8]) {
        let mut st = self.lock();
        st.objects.remove(key);
        Self::apply_append(&mut st, key, data);
    }

    /// Another host puts a Normal object.
    pub fn foreign_put(&self, key: &str, data: &[u8]) {
        let mut st = self.lock();
        let etag = Self::etag(&mut st);
        st.objects.insert(
            key.to_string(),
            Object {
                data: data.to_vec(),
                kind: ObjectType::Normal,
                crc: crc64::checksum(data),
                etag,
                user_meta: BTreeMap::new(),
            },
        );
    }

    fn etag(st: &mut State) -> u64 {
        st.next_etag += 1;
        st.next_etag
    }

    fn apply_append(st: &mut State, key: &str, data: &[u8]) {
        let etag = Self::etag(st);
        let o = st.objects.entry(key.to_string()).or_insert(Object {
            data: Vec::new(),
            kind: ObjectType::Appendable,
            crc: 0,
            etag,
            user_meta: BTreeMap::new(),
        });
        o.crc = crc64::combine(o.crc, crc64::checksum(data), data.len() as u64);
        o.data.extend_from_slice(data);
        o.etag = etag;
    }

    /// The fault for this call, if any: a scripted one first, else a random draw.
    fn fault(&self, st: &mut State, call: Call) -> Option<Fault> {
        *st.calls.entry(call).or_default() += 1;
        if st.outage {
            return Some(Fault::Refused);
        }
        if let Some(f) = st.scripted.get_mut(&call).and_then(VecDeque::pop_front) {
            return Some(f);
        }
        let faults = st.random.get(&call)?.clone();
        let rng = st.rng.as_mut()?;
        let draw: f64 = rng.random();
        let mut acc = 0.0;
        for (f, p) in faults {
            acc += p;
            if draw < acc {
                return Some(f);
            }
        }
        None
    }

    /// Applies a fault that happens before the call is handled. Returns the error to answer
    /// with instead of handling the call, or `None` to handle it (possibly with
    /// `lost_answer`: handle, then answer with an unknown outcome).
    fn before(
        &self,
        st: &mut State,
        call: Call,
        op: Op,
        key: &str,
        non_idempotent: bool,
    ) -> (Option<ClientError>, bool) {
        let wrap = |e: ClientError| {
            if non_idempotent {
                ambiguous(op, key, e)
            } else {
                e
            }
        };
        match self.fault(st, call) {
            None => (None, false),
            Some(Fault::LostAnswer) => (None, true),
            Some(Fault::ForeignAppend(data)) => {
                Self::apply_append(st, key, &data);
                (None, false)
            }
            // Taken by `delay` before the call locks the state.
            Some(Fault::DelayMs(_)) => (None, false),
            Some(Fault::Refused) => (Some(transport(op, key, TransportKind::Connect)), false),
            Some(Fault::ResetBeforeBody) => (
                Some(transport(
                    op,
                    key,
                    if non_idempotent {
                        TransportKind::NotSent
                    } else {
                        TransportKind::Reset
                    },
                )),
                false,
            ),
            Some(Fault::ResetAfterBody) => {
                (Some(wrap(transport(op, key, TransportKind::Reset))), false)
            }
            Some(Fault::Error500) => (Some(wrap(oss(op, key, 500, "InternalError", None))), false),
            Some(Fault::Throttle503) => (
                Some(wrap(oss(op, key, 503, "ServiceUnavailable", None))),
                false,
            ),
        }
    }

    /// Sleeps first if the next scripted fault of `call` is a delay (consuming it).
    async fn delay(&self, call: Call) {
        let ms = {
            let mut st = self.lock();
            match st.scripted.get_mut(&call).and_then(|q| q.front().cloned()) {
                Some(Fault::DelayMs(ms)) => {
                    st.scripted.get_mut(&call).and_then(VecDeque::pop_front);
                    ms
                }
                _ => return,
            }
        };
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    fn meta(o: &Object) -> ObjectMeta {
        ObjectMeta {
            size: o.data.len() as u64,
            object_type: Some(o.kind),
            etag: format!("\"{:032X}\"", o.etag),
            last_modified: Some(chrono::Utc::now()),
            crc64: Some(o.crc),
            next_append_position: (o.kind == ObjectType::Appendable).then_some(o.data.len() as u64),
            storage_class: Some("Standard".into()),
            user_meta: o.user_meta.clone(),
            ..ObjectMeta::default()
        }
    }
}

#[async_trait]
impl Store for FakeStore {
    async fn head(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        let mut st = self.lock();
        if let (Some(e), _) = self.before(&mut st, Call::Head, Op::HeadObject, key, false) {
            return Err(e);
        }
        match st.objects.get(key) {
            Some(o) => Ok(Self::meta(o)),
            None => Err(oss(Op::HeadObject, key, 404, "NoSuchKey", None)),
        }
    }

    async fn get_range(&self, key: &str, first: u64, last: u64) -> Result<RangeData, ClientError> {
        let mut st = self.lock();
        st.ranges.push((key.to_string(), first, last));
        if let (Some(e), _) = self.before(&mut st, Call::Get, Op::GetObject, key, false) {
            return Err(e);
        }
        let o = st
            .objects
            .get(key)
            .ok_or_else(|| oss(Op::GetObject, key, 404, "NoSuchKey", None))?;
        let len = o.data.len() as u64;
        if first >= len {
            return Err(oss(Op::GetObject, key, 416, "InvalidRange", None));
        }
        let end = (last + 1).min(len);
        Ok(RangeData {
            data: Bytes::copy_from_slice(&o.data[first as usize..end as usize]),
            total: Some(len),
            object_type: Some(o.kind),
            crc64: Some(o.crc),
            etag: format!("\"{:032X}\"", o.etag),
            request_id: "FAKE".into(),
        })
    }

    async fn append(
        &self,
        key: &str,
        position: u64,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.delay(Call::Append).await;
        let mut st = self.lock();
        let (err, lost) = self.before(&mut st, Call::Append, Op::AppendObject, key, true);
        if let Some(e) = err {
            return Err(e);
        }
        let (len, kind) = match st.objects.get(key) {
            Some(o) => (o.data.len() as u64, o.kind),
            None => (0, ObjectType::Appendable),
        };
        if kind != ObjectType::Appendable {
            return Err(oss(Op::AppendObject, key, 409, "ObjectNotAppendable", None));
        }
        if position != len {
            return Err(oss(
                Op::AppendObject,
                key,
                409,
                "PositionNotEqualToLength",
                Some(len),
            ));
        }
        if len + data.len() as u64 > MAX_OBJECT_SIZE {
            return Err(oss(Op::AppendObject, key, 400, "InvalidArgument", None));
        }
        let created = !st.objects.contains_key(key);
        Self::apply_append(&mut st, key, &data);
        if created {
            if let Some(o) = st.objects.get_mut(key) {
                o.user_meta = opts.user_meta.clone();
            }
        }
        if lost {
            return Err(ambiguous(
                Op::AppendObject,
                key,
                transport(Op::AppendObject, key, TransportKind::Reset),
            ));
        }
        let o = &st.objects[key];
        Ok(AppendOutcome {
            next_position: o.data.len() as u64,
            crc64: Some(o.crc),
            request_id: "FAKE".into(),
        })
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        opts: &CreateOptions,
    ) -> Result<WriteOutcome, ClientError> {
        let mut st = self.lock();
        let (err, lost) = self.before(&mut st, Call::Put, Op::PutObject, key, false);
        if let Some(e) = err {
            return Err(e);
        }
        let etag = Self::etag(&mut st);
        let crc = crc64::checksum(&data);
        st.objects.insert(
            key.to_string(),
            Object {
                data: data.to_vec(),
                kind: ObjectType::Normal,
                crc,
                etag,
                user_meta: opts.user_meta.clone(),
            },
        );
        if lost {
            return Err(transport(Op::PutObject, key, TransportKind::Reset));
        }
        Ok(WriteOutcome {
            etag: format!("\"{etag:032X}\""),
            crc64: Some(crc),
            request_id: "FAKE".into(),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), ClientError> {
        let mut st = self.lock();
        let (err, lost) = self.before(&mut st, Call::Delete, Op::DeleteObject, key, false);
        if let Some(e) = err {
            return Err(e);
        }
        st.objects.remove(key);
        if lost {
            return Err(transport(Op::DeleteObject, key, TransportKind::Reset));
        }
        Ok(())
    }

    async fn copy(&self, src: &str, dst: &str) -> Result<WriteOutcome, ClientError> {
        let mut st = self.lock();
        if let (Some(e), _) = self.before(&mut st, Call::Copy, Op::CopyObject, dst, false) {
            return Err(e);
        }
        let mut o = st
            .objects
            .get(src)
            .cloned()
            .ok_or_else(|| oss(Op::CopyObject, src, 404, "NoSuchKey", None))?;
        o.kind = ObjectType::Normal;
        o.etag = Self::etag(&mut st);
        let out = WriteOutcome {
            etag: format!("\"{:032X}\"", o.etag),
            crc64: Some(o.crc),
            request_id: "FAKE".into(),
        };
        st.objects.insert(dst.to_string(), o);
        Ok(out)
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ClientError> {
        self.delay(Call::List).await;
        let slow = self.lock().slow_prefixes.get(prefix).copied();
        if let Some(ms) = slow {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let mut st = self.lock();
        if let (Some(e), _) = self.before(&mut st, Call::List, Op::ListObjectsV2, "", false) {
            return Err(e);
        }
        let mut page = ListPage {
            prefix: prefix.to_string(),
            max_keys,
            delimiter: delimiter.unwrap_or("").to_string(),
            ..ListPage::default()
        };
        let mut count = 0u32;
        let start = token.unwrap_or("");
        for (key, o) in st.objects.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            if key.as_str() <= start {
                continue;
            }
            let rest = &key[prefix.len()..];
            let entry_key = match delimiter
                .filter(|d| !d.is_empty())
                .and_then(|d| rest.find(d).map(|i| (i, d)))
            {
                Some((i, d)) => {
                    let cp = format!("{prefix}{}{d}", &rest[..i]);
                    if page.common_prefixes.last() == Some(&cp) {
                        continue;
                    }
                    page.common_prefixes.push(cp.clone());
                    cp
                }
                None => {
                    page.contents.push(ListEntry {
                        key: key.clone(),
                        last_modified: chrono::Utc::now(),
                        etag: format!("\"{:032X}\"", o.etag),
                        object_type: o.kind,
                        size: o.data.len() as u64,
                        storage_class: "Standard".into(),
                    });
                    key.clone()
                }
            };
            count += 1;
            if count >= max_keys {
                page.is_truncated = true;
                // Past every key under a common prefix, so the next page does not repeat it.
                page.next_continuation_token =
                    Some(if entry_key.ends_with('/') && entry_key != *key {
                        format!("{entry_key}\u{10FFFF}")
                    } else {
                        entry_key
                    });
                break;
            }
        }
        Ok(page)
    }
}
