//! Round-trip time estimation and the retransmission timeout (RFC 6298 as kcp-go does it).

/// Smallest RTO in normal mode (ms).
pub const RTO_MIN: u32 = 100;
/// Smallest RTO in nodelay mode (ms).
pub const RTO_NODELAY_MIN: u32 = 30;
/// RTO before the first sample (ms).
pub const RTO_DEFAULT: u32 = 200;
/// Largest RTO (ms).
pub const RTO_MAX: u32 = 60_000;

/// Smoothed RTT, RTT variation and the resulting RTO.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// Smoothed RTT in ms; 0 until the first sample.
    srtt: i64,
    /// RTT variation in ms.
    rttvar: i64,
    /// Current retransmission timeout in ms.
    rto: u32,
    /// Lower bound of the RTO (100, or 30 in nodelay mode).
    min_rto: u32,
}

impl RttEstimator {
    pub(crate) fn new() -> Self {
        RttEstimator {
            srtt: 0,
            rttvar: 0,
            rto: RTO_DEFAULT,
            min_rto: RTO_MIN,
        }
    }

    pub(crate) fn set_min_rto(&mut self, min_rto: u32) {
        self.min_rto = min_rto;
    }

    pub(crate) fn rto(&self) -> u32 {
        self.rto
    }

    pub(crate) fn srtt(&self) -> u32 {
        self.srtt as u32
    }

    pub(crate) fn rttvar(&self) -> u32 {
        self.rttvar as u32
    }

    /// Feeds one RTT sample (ms). `interval` is the flush period, which floors the
    /// variation term of the RTO (a receiver acknowledges at most once per interval).
    pub(crate) fn sample(&mut self, rtt: u32, interval: u32) {
        // An echoed timestamp can be anything; a sample beyond the RTO ceiling carries no
        // information the ceiling does not, and keeping it small keeps the arithmetic tame.
        let rtt = i64::from(rtt.min(RTO_MAX));
        if self.srtt == 0 {
            self.srtt = rtt;
            self.rttvar = rtt / 2;
        } else {
            let delta = rtt - self.srtt;
            self.srtt += delta >> 3;
            let dev = delta.abs();
            if rtt < self.srtt - self.rttvar {
                // A sample well below the expected range gets an eighth of the usual weight
                // (kcp-go's tweak of RFC 6298), so one lucky packet does not shrink the RTO.
                self.rttvar += (dev - self.rttvar) >> 5;
            } else {
                self.rttvar += (dev - self.rttvar) >> 2;
            }
        }
        let var_term = i64::from(interval).max(self.rttvar << 2);
        let rto = (self.srtt + var_term).clamp(0, i64::from(RTO_MAX)) as u32;
        self.rto = rto.clamp(self.min_rto, RTO_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_then_smoothing() {
        let mut r = RttEstimator::new();
        assert_eq!(r.rto(), RTO_DEFAULT);
        r.sample(80, 10);
        assert_eq!((r.srtt(), r.rttvar()), (80, 40));
        assert_eq!(r.rto(), 80 + 160);
        r.sample(160, 10);
        // srtt += 80>>3 = 10; rttvar += (80-40)>>2 = 10
        assert_eq!((r.srtt(), r.rttvar()), (90, 50));
        assert_eq!(r.rto(), 290);
        // A sample far below srtt - rttvar moves rttvar by 1/32 only.
        r.sample(10, 10);
        // srtt += (10-90)>>3 = -10 -> 80; 10 < 80-50: rttvar += (80-50)>>5 = 0
        assert_eq!((r.srtt(), r.rttvar()), (80, 50));
    }

    #[test]
    fn bounds_and_interval_floor() {
        let mut r = RttEstimator::new();
        r.sample(1, 10);
        assert_eq!(r.rto(), RTO_MIN);
        let mut r = RttEstimator::new();
        r.set_min_rto(RTO_NODELAY_MIN);
        r.sample(4, 20);
        // srtt 4 + max(interval 20, 4*2) = 24 -> clamped up to 30
        assert_eq!(r.rto(), 30);
        r.sample(u32::MAX, 10);
        assert_eq!(r.rto(), RTO_MAX);
    }
}
