//! Session settings, with Go smux's defaults and its validation rules.

use std::sync::Arc;
use std::time::Duration;

use nodelink_driver::MemoryBudget;

use crate::error::{Error, ErrorKind};

/// Settings of one session. Both ends must agree on [`version`](Config::version); the other
/// values are local (each side advertises its own stream buffer in v2 window updates).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Protocol version, 1 or 2. Version 2 adds per-stream flow control (UPD frames).
    /// Default 1, the default of Debian's kcptun.
    pub version: u8,
    /// Disables sending NOP keepalives and the receive timeout. Default false.
    pub keep_alive_disabled: bool,
    /// How often a NOP frame is sent. Default 10 s.
    pub keep_alive_interval: Duration,
    /// The session dies when no frame at all arrived for this long while it was reading.
    /// The timer is suspended while reading is paused for backpressure (see the crate
    /// documentation). Default 30 s.
    pub keep_alive_timeout: Duration,
    /// Largest payload of a PSH frame this side sends (at most 65535). Default 32768.
    pub max_frame_size: usize,
    /// Session-wide bound on received data not yet read by the application. Default 4 MiB.
    pub max_receive_buffer: usize,
    /// Per-stream receive buffer. In v2 it is the window advertised to the peer; in v1 it is
    /// the limit past which a stream whose reader does not keep up is reset (see the crate
    /// documentation). Default 64 KiB.
    pub max_stream_buffer: usize,
    /// Streams opened by the peer and not yet accepted; further SYNs are refused with a FIN.
    /// Default 1024 (Go smux's accept queue length).
    pub accept_backlog: usize,
    /// When a buffer bound is exceeded the session stops reading the connection; a stream
    /// whose reader has then consumed nothing for this long is reset so the others can go
    /// on (see the crate documentation). Default 5 s.
    pub stall_timeout: Duration,
    /// How long [`Session::close`](crate::Session::close) (or dropping the last handle)
    /// waits for queued data and FINs to be sent before the connection is closed anyway.
    /// Default 1 s.
    pub linger: Duration,
    /// A memory budget this session shares with others (the sessions of one server, say):
    /// while they hold more than it together (unread data and data queued to send), a
    /// session holding more than its floor stops reading its connection, as when
    /// [`max_receive_buffer`](Config::max_receive_buffer) is reached. Default none.
    pub memory_budget: Option<Arc<MemoryBudget>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            version: 1,
            keep_alive_disabled: false,
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            max_frame_size: 32768,
            max_receive_buffer: 4 * 1024 * 1024,
            max_stream_buffer: 64 * 1024,
            accept_backlog: 1024,
            stall_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(1),
            memory_budget: None,
        }
    }
}

impl Config {
    /// Sets [`Config::version`].
    pub fn with_version(mut self, value: u8) -> Self {
        self.version = value;
        self
    }

    /// Sets [`Config::keep_alive_disabled`].
    pub fn with_keep_alive_disabled(mut self, value: bool) -> Self {
        self.keep_alive_disabled = value;
        self
    }

    /// Sets [`Config::keep_alive_interval`].
    pub fn with_keep_alive_interval(mut self, value: Duration) -> Self {
        self.keep_alive_interval = value;
        self
    }

    /// Sets [`Config::keep_alive_timeout`].
    pub fn with_keep_alive_timeout(mut self, value: Duration) -> Self {
        self.keep_alive_timeout = value;
        self
    }

    /// Sets [`Config::max_frame_size`].
    pub fn with_max_frame_size(mut self, value: usize) -> Self {
        self.max_frame_size = value;
        self
    }

    /// Sets [`Config::memory_budget`].
    pub fn with_memory_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.memory_budget = Some(budget);
        self
    }

    /// Sets [`Config::max_receive_buffer`].
    pub fn with_max_receive_buffer(mut self, value: usize) -> Self {
        self.max_receive_buffer = value;
        self
    }

    /// Sets [`Config::max_stream_buffer`].
    pub fn with_max_stream_buffer(mut self, value: usize) -> Self {
        self.max_stream_buffer = value;
        self
    }

    /// Sets [`Config::accept_backlog`].
    pub fn with_accept_backlog(mut self, value: usize) -> Self {
        self.accept_backlog = value;
        self
    }

    /// Sets [`Config::stall_timeout`].
    pub fn with_stall_timeout(mut self, value: Duration) -> Self {
        self.stall_timeout = value;
        self
    }

    /// Sets [`Config::linger`].
    pub fn with_linger(mut self, value: Duration) -> Self {
        self.linger = value;
        self
    }

    /// Checks the values the way Go smux's `VerifyConfig` does, plus a non-zero backlog.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: &str| Err(Error::new(ErrorKind::InvalidConfig, msg));
        if self.version != 1 && self.version != 2 {
            return bad("version must be 1 or 2");
        }
        if !self.keep_alive_disabled {
            if self.keep_alive_interval.is_zero() {
                return bad("keep-alive interval must be positive");
            }
            if self.keep_alive_timeout < self.keep_alive_interval {
                return bad("keep-alive timeout must not be shorter than the keep-alive interval");
            }
        }
        if self.max_frame_size == 0 || self.max_frame_size > 65535 {
            return bad("max frame size must be between 1 and 65535");
        }
        if self.max_receive_buffer == 0 {
            return bad("max receive buffer must be positive");
        }
        if self.max_stream_buffer == 0 {
            return bad("max stream buffer must be positive");
        }
        if self.max_stream_buffer > self.max_receive_buffer {
            return bad("max stream buffer must not be larger than max receive buffer");
        }
        if self.max_stream_buffer > i32::MAX as usize {
            return bad("max stream buffer must not exceed 2147483647");
        }
        if self.accept_backlog == 0 {
            return bad("accept backlog must be positive");
        }
        if self.stall_timeout.is_zero() {
            return bad("stall timeout must be positive");
        }
        Ok(())
    }
}
