//! The rescue file: where acknowledged bytes go when they cannot be appended (the retry budget
//! ran out, the object was deleted or replaced elsewhere, the shutdown grace ended). One file
//! per mount process, created on first use under the state directory, named in an error log
//! line. Each record is one header line followed by the raw bytes and a newline:
//!
//! ```text
//! appendfs-rescue v1 key="logs/app.log" position=1234 length=56 crc64=11051210869376104954 outcome=not-appended reason="…"
//! <56 bytes>
//! ```
//!
//! `position` is where the bytes were meant to go; `outcome` is `not-appended` when they are
//! known not to be on OSS, or `unknown` when an attempt was cut off without an answer (compare
//! the object's length and CRC-64 before appending them again).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Whether rescued bytes are known to be missing from OSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    NotAppended,
    Unknown,
}

pub struct Rescue {
    dir: PathBuf,
    file: Mutex<Option<(PathBuf, std::fs::File)>>,
    /// Records written, for the exit status.
    records: Mutex<u64>,
}

impl std::fmt::Debug for Rescue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rescue").field("dir", &self.dir).finish()
    }
}

impl Rescue {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Rescue {
            dir: dir.into(),
            file: Mutex::new(None),
            records: Mutex::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<(PathBuf, std::fs::File)>> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file's path once something was written to it.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().as_ref().map(|(p, _)| p.clone())
    }

    pub fn records(&self) -> u64 {
        *self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves `data`, meant for `key` at `position`, and syncs it. Returns the file's path.
    pub fn save(
        &self,
        key: &str,
        position: u64,
        data: &[u8],
        outcome: Outcome,
        reason: &str,
    ) -> std::io::Result<PathBuf> {
        let mut slot = self.lock();
        if slot.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let name = format!(
                "rescue-{}-{}.bin",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                std::process::id()
            );
            let path = self.dir.join(name);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            restrict(&path);
            *slot = Some((path, file));
        }
        let Some((path, file)) = slot.as_mut() else {
            return Err(std::io::Error::other("rescue file not open"));
        };
        let header = format!(
            "appendfs-rescue v1 key={key:?} position={position} length={} crc64={} outcome={} reason={reason:?}\n",
            data.len(),
            crate::oss::crc64::checksum(data),
            match outcome {
                Outcome::NotAppended => "not-appended",
                Outcome::Unknown => "unknown",
            }
        );
        file.write_all(header.as_bytes())?;
        file.write_all(data)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        *self.records.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(path.clone())
    }
}

/// Log data may be private: only the owner reads the rescue file.
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

/// One record read back (tests, and a user's recovery script can do the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub position: u64,
    pub outcome: String,
    pub data: Vec<u8>,
}

/// Parses a rescue file.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("header without end")?;
        let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header not UTF-8")?;
        let rest = header
            .strip_prefix("appendfs-rescue v1 key=")
            .ok_or("not a rescue record")?;
        // The key is a Rust debug string: find its closing quote.
        let mut end = 1;
        let b = rest.as_bytes();
        while end < b.len() && !(b[end] == b'"' && b[end - 1] != b'\\') {
            end += 1;
        }
        let key = rest[1..end].replace("\\\"", "\"").replace("\\\\", "\\");
        let field = |name: &str| -> Option<&str> {
            let i = rest.find(&format!(" {name}="))?;
            let v = &rest[i + name.len() + 2..];
            Some(v.split(' ').next().unwrap_or(""))
        };
        let position: u64 = field("position")
            .and_then(|v| v.parse().ok())
            .ok_or("no position")?;
        let length: usize = field("length")
            .and_then(|v| v.parse().ok())
            .ok_or("no length")?;
        let outcome = field("outcome").unwrap_or("").to_string();
        let body = &bytes[nl + 1..];
        if body.len() < length + 1 {
            return Err("record cut short".into());
        }
        out.push(Record {
            key,
            position,
            outcome,
            data: body[..length].to_vec(),
        });
        bytes = &body[length + 1..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let r = Rescue::new(dir.path().join("rescue"));
        assert!(r.path().is_none());
        let p = r
            .save(
                "a \"b\".log",
                7,
                b"line\nwith\0bytes",
                Outcome::NotAppended,
                "x",
            )
            .unwrap();
        r.save("c.log", 0, b"", Outcome::Unknown, "cut off")
            .unwrap();
        assert_eq!(r.records(), 2);
        let recs = parse(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key, "a \"b\".log");
        assert_eq!(recs[0].position, 7);
        assert_eq!(recs[0].data, b"line\nwith\0bytes");
        assert_eq!(recs[0].outcome, "not-appended");
        assert_eq!(recs[1].outcome, "unknown");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
