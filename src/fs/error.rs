//! The filesystem's errors, and the one place where each becomes an errno for the kernel.

use crate::client::ClientError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("{0}")]
    Client(std::sync::Arc<ClientError>),
    /// A write the object model forbids (non-appendable object, write not at the end, chmod...).
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("file too large: appendable objects end at 5 GiB")]
    TooLarge,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("directories cannot be renamed; copy instead")]
    CrossDevice,
    #[error("the object was deleted or replaced")]
    Stale,
    #[error("read-only mount")]
    ReadOnly,
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute buffer too small")]
    Range,
    #[error("not supported")]
    NotSupported,
    /// Data reached OSS but not as sent, or the object changed under a positional writer.
    #[error("I/O error: {0}")]
    Io(String),
    #[error("bad file handle")]
    BadHandle,
    /// The mount is shutting down and takes no more writes.
    #[error("the mount is shutting down")]
    ShuttingDown,
    /// Acknowledged bytes of this object could not be appended (they are in the rescue file);
    /// the first write or open for writing after that is told.
    #[error("earlier writes to {0:?} could not be appended and were saved to the rescue file")]
    Hole(String),
}

impl From<ClientError> for FsError {
    fn from(e: ClientError) -> Self {
        FsError::Client(std::sync::Arc::new(e))
    }
}

impl FsError {
    /// The errno the kernel gets.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Client(e) => e.errno(),
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::TooLarge => libc::EFBIG,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::CrossDevice => libc::EXDEV,
            FsError::Stale => libc::ESTALE,
            FsError::ReadOnly => libc::EROFS,
            FsError::InvalidName(_) | FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::Io(_) => libc::EIO,
            FsError::BadHandle => libc::EBADF,
            FsError::ShuttingDown | FsError::Hole(_) => libc::EIO,
        }
    }

    pub fn is_not_found(&self) -> bool {
        match self {
            FsError::NotFound => true,
            FsError::Client(e) => e.is_no_such_key(),
            _ => false,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;
