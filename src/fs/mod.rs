//! The filesystem: [`core`] implements every operation as plain async Rust over inode numbers
//! (namespace in [`namespace`], append streams in [`append`], the read cache in [`reader`]),
//! talking to OSS through the [`store`] seam; [`adapter`] is the thin fuser layer that hands
//! each kernel request to a task and replies, and [`mount`] wires a mount together (client,
//! checks, session, signals, drain, unmount).

pub mod adapter;
pub mod append;
pub mod core;
pub mod error;
pub mod mount;
pub mod namespace;
pub mod reader;
pub mod store;

pub use self::core::{Attr, Core, FsConfig, OpenMode};
pub use append::StreamConfig;
pub use error::{FsError, FsResult};
