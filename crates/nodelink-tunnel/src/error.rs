//! The crate's error type.

use std::io;

/// Everything that can stop a tunnel from starting or running. Per-stream failures (a
/// refused target, a reset TCP connection) are logged and end only that stream; they never
/// surface here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid; the message names the flag (`--smuxver 3: ...`).
    #[error("{0}")]
    Config(String),
    /// A JSON configuration file cannot be read or has a value of the wrong type.
    #[error("configuration file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A socket operation failed (binding the listener, dialling the server).
    #[error("{context}: {source}")]
    Io {
        /// What was being done (`cannot listen on 127.0.0.1:80`).
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The smux layer refused a session or stream.
    #[error("smux: {0}")]
    Smux(#[from] nodelink_smux::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
