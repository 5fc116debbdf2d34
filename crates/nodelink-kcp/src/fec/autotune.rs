//! Inference of the sender's `ds`/`ps` from the pattern of data and parity packets, the
//! way kcp-go's `autoTune` does it: the last 258 packets are kept as a 0/1 signal by
//! seqid (1 = data), and the length of a run of consecutive 1s (or 0s) bounded by edges is
//! the data (or parity) shard count.

/// Samples kept (kcp-go's `maxAutoTuneSamples`).
const SAMPLES: usize = 258;

#[derive(Clone, Copy, Debug, Default)]
struct Pulse {
    bit: bool,
    seq: u32,
}

/// The pulse buffer.
#[derive(Debug)]
pub(super) struct AutoTune {
    pulses: Box<[Pulse; SAMPLES]>,
}

impl AutoTune {
    pub(super) fn new() -> Self {
        AutoTune {
            pulses: Box::new([Pulse::default(); SAMPLES]),
        }
    }

    /// Records that packet `seq` was a data packet (`true`) or a parity packet.
    pub(super) fn sample(&mut self, bit: bool, seq: u32) {
        self.pulses[seq as usize % SAMPLES] = Pulse { bit, seq };
    }

    /// Length of a run of `bit` between a rising and a falling edge, with consecutive
    /// seqids throughout; `None` if there is no such run in the buffer.
    pub(super) fn find_period(&self, bit: bool) -> Option<usize> {
        let p = &self.pulses;
        // Left edge: the first place where the signal turns to `bit` between two
        // consecutive seqids.
        let mut left = None;
        for i in 1..SAMPLES {
            let (prev, cur) = (p[i - 1], p[i]);
            if prev.bit != bit && cur.bit == bit && prev.seq.wrapping_add(1) == cur.seq {
                left = Some(i);
                break;
            }
        }
        let left = left?;
        // Right edge: where it turns away from `bit`, seqids consecutive all the way.
        for i in left + 1..SAMPLES {
            let (prev, cur) = (p[i - 1], p[i]);
            if prev.seq.wrapping_add(1) != cur.seq {
                return None;
            }
            if prev.bit == bit && cur.bit != bit {
                return Some(i - left);
            }
        }
        None
    }
}
