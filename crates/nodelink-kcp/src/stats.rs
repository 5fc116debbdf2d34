//! Session counters, named as kcp-go's SNMP counters.

macro_rules! stats_struct {
    ($( $(#[$doc:meta])* $field:ident => $name:literal, )*) => {
        /// Counters named after kcp-go's SNMP fields (docs/protocols/kcp.md, section 7), merged from the
        /// crypto, FEC and KCP layers. Per session ([`Pipeline::stats`](crate::pipeline::Pipeline::stats)) or process-wide
        /// ([`crate::session::snmp`]).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl Stats {
            /// `(kcp-go name, value)` of every counter, in kcp-go's order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( ($name, self.$field), )*]
            }

            /// Field-wise `self - earlier` (saturating).
            pub fn delta(&self, earlier: &Stats) -> Stats {
                Stats { $( $field: self.$field.saturating_sub(earlier.$field), )* }
            }

            /// Field-wise sum.
            pub fn add(&mut self, other: &Stats) {
                $( self.$field += other.$field; )*
            }
        }

        /// Process-wide atomic counters (kcp-go `DefaultSnmp`).
        #[derive(Debug, Default)]
        pub(crate) struct AtomicStats {
            $( pub(crate) $field: std::sync::atomic::AtomicU64, )*
        }

        impl AtomicStats {
            pub(crate) const fn new() -> Self {
                AtomicStats { $( $field: std::sync::atomic::AtomicU64::new(0), )* }
            }
            pub(crate) fn add(&self, d: &Stats) {
                use std::sync::atomic::Ordering::Relaxed;
                $( if d.$field != 0 { self.$field.fetch_add(d.$field, Relaxed); } )*
            }
            pub(crate) fn snapshot(&self) -> Stats {
                use std::sync::atomic::Ordering::Relaxed;
                Stats { $( $field: self.$field.load(Relaxed), )* }
            }
        }
    };
}

stats_struct! {
    /// Bytes handed to the application by reads.
    bytes_received => "BytesReceived",
    /// Bytes accepted from the application by writes.
    bytes_sent => "BytesSent",
    /// Most sessions open at once.
    max_conn => "MaxConn",
    /// Client sessions opened.
    active_opens => "ActiveOpens",
    /// Listener sessions opened.
    passive_opens => "PassiveOpens",
    /// Sessions open now.
    curr_estab => "CurrEstab",
    /// Datagrams dropped as malformed (too short, bad FEC) or refused.
    in_errs => "InErrs",
    /// Datagrams failing the CRC / authentication (wrong key, corruption).
    in_csum_errors => "InCsumErrors",
    /// Datagrams KCP rejected (wrong conv, bad segment).
    kcp_in_errors => "KCPInErrors",
    /// UDP datagrams received.
    in_pkts => "InPkts",
    /// UDP datagrams sent.
    out_pkts => "OutPkts",
    /// KCP segments received.
    in_segs => "InSegs",
    /// KCP segments sent.
    out_segs => "OutSegs",
    /// UDP payload bytes received.
    in_bytes => "InBytes",
    /// UDP payload bytes sent.
    out_bytes => "OutBytes",
    /// Retransmitted segments.
    retrans_segs => "RetransSegs",
    /// Fast retransmissions.
    fast_retrans_segs => "FastRetransSegs",
    /// Early retransmissions.
    early_retrans_segs => "EarlyRetransSegs",
    /// Retransmissions after an RTO.
    lost_segs => "LostSegs",
    /// Duplicate data segments received.
    repeat_segs => "RepeatSegs",
    /// FEC parity packets received.
    fec_parity_shards => "FECParityShards",
    /// FEC errors.
    fec_errs => "FECErrs",
    /// Data packets rebuilt by FEC.
    fec_recovered => "FECRecovered",
    /// Data packets lost to FEC (group incomplete).
    fec_short_shards => "FECShortShards",
}

/// Counters kept by the pipeline itself (the rest come from KCP and FEC).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Own {
    pub(crate) in_errs: u64,
    pub(crate) in_csum_errors: u64,
    pub(crate) kcp_in_errors: u64,
    pub(crate) in_pkts: u64,
    pub(crate) out_pkts: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_bytes: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) fec_errs: u64,
}
