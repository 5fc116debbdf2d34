//! One forwarded connection, without I/O: the two directions of a copy between a TCP
//! socket and an smux stream, and how the connection ends (docs/protocols/smux.md,
//! "Closing a forwarded connection").
//!
//! A [`Direction`] holds one copy buffer and says what it wants next ([`Want`]): to read
//! from its source, to write what it read to its destination, to shut the destination
//! down (pass the end of stream on), or nothing more. The driver (`mux.rs`) does that
//! operation and reports the outcome. A [`Pipe`] holds both directions and applies the
//! closing rule ([`Closing`]) when one of them ends or fails.

use std::io;

/// How a forwarded connection ends once one of its two directions has ended.
///
/// smux has no reset frame, so a FIN from the peer means either "I am done sending" (a
/// half close) or "I dropped this stream" (Go's `Stream.Close`, which discards whatever
/// arrives afterwards): the two cannot be told apart on the wire. What the difference
/// costs depends on the version:
///
/// - **v1** has no flow control: if the FIN meant "dropped", carrying the other direction
///   on would push everything the far end still writes (a whole download the user
///   cancelled) over the shared KCP session into the void. So the first direction to
///   end ends the connection, as kcptun does.
/// - **v2** bounds the waste by the peer's window (and our smux resets a stream whose
///   writes get no window update for its stall timeout after the peer's FIN), so a
///   half close is honoured both ways.
///
/// The rule is the same at both ends of the tunnel and for both sources of an end: a FIN
/// on the smux stream and an end of stream from the TCP side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// The first direction to end ends both (smux v1).
    Full,
    /// Each direction ends on its own (smux v2).
    Half,
}

impl Closing {
    /// The rule for smux `version`.
    pub(crate) fn for_smux(version: u8) -> Closing {
        if version >= 2 {
            Closing::Half
        } else {
            Closing::Full
        }
    }
}

/// Where a direction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Copying,
    /// No more reading: write out the buffer, then shut the destination down.
    Draining,
    /// Shutting the destination down.
    ShuttingDown,
    /// Finished (cleanly or not).
    Done,
}

/// What a direction wants done next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Write [`Direction::unwritten`] to the destination.
    Write,
    /// Read from the source into [`Direction::read_space`].
    Read,
    /// Shut the destination's write side down.
    Shutdown,
    /// Nothing: the direction is finished.
    Done,
}

/// One direction of a forwarded connection: a buffer and where it stands.
pub(crate) struct Direction {
    buf: Box<[u8]>,
    /// The bytes `buf[start..end]` were read and are not yet written.
    start: usize,
    end: usize,
    copied: u64,
    /// Something was written since the last flush.
    unflushed: bool,
    phase: Phase,
    /// The first error of this direction.
    error: Option<io::Error>,
}

impl Direction {
    /// A direction copying through a buffer of `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Direction {
        Direction {
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            copied: 0,
            unflushed: false,
            phase: Phase::Copying,
            error: None,
        }
    }

    pub(crate) fn want(&self) -> Want {
        match self.phase {
            Phase::Done => Want::Done,
            Phase::ShuttingDown => Want::Shutdown,
            Phase::Copying | Phase::Draining if self.start < self.end => Want::Write,
            Phase::Draining => Want::Shutdown,
            Phase::Copying => Want::Read,
        }
    }

    /// The bytes to write next.
    pub(crate) fn unwritten(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Where to read into (only asked for when the buffer is empty).
    pub(crate) fn read_space(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// `n` bytes were read into [`Self::read_space`]; 0 is the source's end of stream,
    /// which is passed on once everything before it is written.
    pub(crate) fn read(&mut self, n: usize) {
        if n == 0 {
            self.phase = Phase::ShuttingDown;
        } else {
            self.start = 0;
            self.end = n;
        }
    }

    /// `n` bytes of [`Self::unwritten`] were written (0: the destination takes no more,
    /// an error).
    pub(crate) fn wrote(&mut self, n: usize) {
        if n == 0 {
            self.fail(io::ErrorKind::WriteZero.into());
            return;
        }
        self.start += n;
        self.copied += n as u64;
        self.unflushed = true;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.phase == Phase::Draining {
                self.phase = Phase::ShuttingDown;
            }
        }
    }

    /// Whether the source went idle with written bytes not yet flushed: flush the
    /// destination, so they do not sit in a buffer.
    pub(crate) fn needs_flush(&self) -> bool {
        self.unflushed
    }

    /// The destination was flushed.
    pub(crate) fn flushed(&mut self) {
        self.unflushed = false;
    }

    /// The shutdown of the destination completed, with `result`.
    pub(crate) fn shut(&mut self, result: io::Result<()>) {
        self.phase = Phase::Done;
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }

    /// The source or the destination failed. What was read is dropped, but the
    /// destination is still told that nothing more comes (the peer learns at once instead
    /// of by a timeout), unless it was being shut down already.
    pub(crate) fn fail(&mut self, e: io::Error) {
        self.error.get_or_insert(e);
        self.start = 0;
        self.end = 0;
        self.phase = match self.phase {
            Phase::ShuttingDown | Phase::Done => Phase::Done,
            Phase::Copying | Phase::Draining => Phase::ShuttingDown,
        };
    }

    /// Whether the direction is finished.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Asks this direction to stop reading (it drains and shuts down); `true` if that
    /// changed anything.
    fn stop(&mut self) -> bool {
        let copying = self.phase == Phase::Copying;
        if copying {
            self.phase = Phase::Draining;
        }
        copying
    }
}

/// Which way a connection goes next ([`Pipe::settle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Both directions are finished.
    Finished,
    /// Going on: wait for I/O.
    Running,
    /// The connection is ending and a direction was just told to stop: drive both again.
    /// The grace period runs from the first time this or [`Settle::Grace`] is returned.
    Stopped,
    /// The connection is ending and both directions are stopping: wait for I/O, but no
    /// longer than the grace period.
    Grace,
}

/// A forwarded connection: both directions and the closing rule.
pub(crate) struct Pipe {
    pub(crate) closing: Closing,
    /// From the first side to the second.
    pub(crate) there: Direction,
    /// From the second side back to the first.
    pub(crate) back: Direction,
}

impl Pipe {
    pub(crate) fn new(closing: Closing, capacity: usize) -> Pipe {
        Pipe {
            closing,
            there: Direction::new(capacity),
            back: Direction::new(capacity),
        }
    }

    /// Applies the closing rule after both directions went as far as they could.
    pub(crate) fn settle(&mut self) -> Settle {
        let (there, back) = (self.there.is_done(), self.back.is_done());
        if there && back {
            return Settle::Finished;
        }
        let ending = self.there.failed()
            || self.back.failed()
            || (self.closing == Closing::Full && (there || back));
        if !ending {
            return Settle::Running;
        }
        // An error or (v1) an end in one direction stops the other one.
        if self.there.stop() || self.back.stop() {
            Settle::Stopped
        } else {
            Settle::Grace
        }
    }

    /// The outcome: the bytes copied each way, or the first error (of the first
    /// direction, then of the second).
    pub(crate) fn outcome(&mut self) -> io::Result<(u64, u64)> {
        match self.there.error.take().or_else(|| self.back.error.take()) {
            Some(e) => Err(e),
            None => Ok((self.there.copied, self.back.copied)),
        }
    }
}
