//! Errors of the recording file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a recording could not be created or written. Every variant means the session is not being
/// recorded: the gateway audits it and ends the session (fail closed).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The session id is not usable in a file name (see [`super::recording_path`]).
    InvalidSessionId,
    /// Something already exists at the recording's path; recordings are never overwritten.
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// The recordings directory path exists but is not a directory.
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A file system operation failed. Once a write has failed, every later call on the same
    /// recorder returns this error again.
    Io {
        /// What was being done: "create directory", "create", "write", "sync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error's kind, for callers that tell a full disk from the rest.
        kind: io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
}

impl RecordError {
    pub(crate) fn io(op: &'static str, path: &Path, error: &io::Error) -> RecordError {
        RecordError::Io {
            op,
            path: path.to_path_buf(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::InvalidSessionId => {
                f.write_str("session id is not a valid recording file name")
            }
            RecordError::AlreadyExists { path } => {
                write!(f, "recording {} already exists", path.display())
            }
            RecordError::NotADirectory { path } => {
                write!(f, "{} is not a directory", path.display())
            }
            RecordError::Io {
                op, path, message, ..
            } => write!(f, "recording {}: {op} failed: {message}", path.display()),
        }
    }
}

impl std::error::Error for RecordError {}
