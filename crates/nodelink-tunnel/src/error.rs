//! The crate's error type: one [`Error`] with a [`kind`](Error::kind) a caller can match,
//! a message saying what failed, and the cause chained through
//! [`source`](std::error::Error::source) (docs/CONVENTIONS.md, rule 3).

use std::fmt;
use std::io;

/// What stopped a tunnel, coarse enough to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting is invalid; the message names the flag (`--smuxver 3: ...`).
    Config,
    /// A JSON configuration file cannot be read or has a value of the wrong type.
    ConfigFile,
    /// A socket operation failed (binding the listener, dialling the server).
    Io,
    /// The smux layer refused a session or stream.
    Smux,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Config => "invalid configuration",
            ErrorKind::ConfigFile => "invalid configuration file",
            ErrorKind::Io => "i/o error",
            ErrorKind::Smux => "smux error",
        })
    }
}

/// Everything that can stop a tunnel from starting or running. Per-stream failures (a
/// refused target, a reset TCP connection) are logged and end only that stream; they never
/// surface here.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// An invalid setting; `message` names the flag.
    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Config,
            message: message.into(),
            source: None,
        }
    }

    /// A problem with the configuration file at `path`.
    pub(crate) fn config_file(path: impl fmt::Display, message: impl fmt::Display) -> Error {
        Error {
            kind: ErrorKind::ConfigFile,
            message: format!("configuration file {path}: {message}"),
            source: None,
        }
    }

    /// A failed socket operation: `context` says what was being done
    /// (`cannot listen on 127.0.0.1:80`), the cause is chained.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A failed KCP operation: a bad KCP setting is a [`ErrorKind::Config`] error, anything
    /// else (a socket that cannot be bound, a listener that stopped) [`ErrorKind::Io`].
    pub(crate) fn kcp(context: impl Into<String>, source: nodelink_kcp::Error) -> Error {
        let kind = match source.kind() {
            nodelink_kcp::ErrorKind::Config => ErrorKind::Config,
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            message: context.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl From<nodelink_smux::Error> for Error {
    fn from(source: nodelink_smux::Error) -> Error {
        Error {
            kind: ErrorKind::Smux,
            message: "cannot run smux".into(),
            source: Some(Box::new(source)),
        }
    }
}
