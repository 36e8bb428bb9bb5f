//! appendfs: mount an Alibaba Cloud OSS bucket as a directory where `echo >> file` becomes
//! AppendObject and `tail -f` follows appends made anywhere. Layers, bottom up: [`oss`] (protocol
//! pieces shared by both sides), [`server`] (the local OSS-compatible server), [`client`] (the OSS
//! client the filesystem uses), [`fs`] (the filesystem), [`metrics`] (counters and `/metrics`).

pub mod client;
pub mod fs;
pub mod metrics;
pub mod oss;
pub mod server;
