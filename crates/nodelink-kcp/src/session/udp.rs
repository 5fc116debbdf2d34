//! Batched UDP I/O: many datagrams per system call.
//!
//! A KCP flush emits a burst of datagrams, most of them exactly `mtu` bytes long, and a
//! bulk receiver gets them in bursts too. One `sendto` and one `recvfrom` per datagram
//! made the system calls the largest cost of a bulk session (docs/PERFORMANCE.md, "Fewer
//! system calls per datagram"). On Linux this module moves them in batches:
//!
//! * **Sending** ([`Udp::send`]): a run of datagrams of equal length (the last of the run
//!   may be shorter) leaves in one `sendmsg` with UDP segmentation offload (GSO, the
//!   `UDP_SEGMENT` control message): the kernel cuts the buffer back into the same
//!   datagrams, so the peer, kcp-go included, receives exactly what separate sends would
//!   have produced. Nothing else about the datagrams changes (no control message but the
//!   segment size: the socket's TOS/DSCP, fragmentation and source address stay as
//!   configured). Where the kernel refuses GSO (an old kernel, a device without it), the
//!   socket falls back to one datagram per call for good.
//! * **Receiving** ([`Udp::recv`], [`Udp::try_recv`]): with UDP receive offload (GRO,
//!   `UDP_GRO`) one read may return several datagrams of one sender back to back, cut at
//!   the size the kernel reports. [`RecvBatch::for_each`] hands them out one datagram at
//!   a time, as if each had been read alone.
//!
//! Elsewhere, and for a socket where neither is available, it is one datagram per call,
//! as before.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The largest UDP payload: the receive buffer holds any datagram, or what GRO merged
/// (the kernel merges at most 64 KiB).
const SLOT: usize = 65_536;

/// Bytes a GSO send carries at most (the IP length field's limit, less headers).
const GSO_MAX_BYTES: usize = 65_000;

/// Datagrams a GSO send carries at most (the kernel's `UDP_MAX_SEGMENTS` on older
/// kernels; newer ones allow more).
const GSO_MAX_SEGMENTS: usize = 64;

/// A UDP socket that sends and receives in batches.
#[derive(Debug)]
pub(crate) struct Udp {
    sock: UdpSocket,
    /// Sends may use GSO (cleared for good when the kernel refuses it).
    gso: AtomicBool,
}

impl Udp {
    /// Takes a bound socket over (its options as set by the caller stay).
    pub(crate) fn new(sock: UdpSocket) -> Udp {
        let gso = offload::enable(&sock);
        Udp {
            sock,
            gso: AtomicBool::new(gso),
        }
    }

    /// The tokio socket underneath.
    #[cfg(test)]
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Sends every datagram of `out`, GSO runs where possible: to `to`, or to the peer of
    /// a connected socket with `None` (some systems refuse an address there). An error
    /// that loses only the datagrams of one call (an ICMP report of an earlier datagram,
    /// a full buffer) skips that call's datagrams, which KCP resends, and is returned
    /// after the rest went out; any other error stops at once.
    pub(crate) async fn send(&self, to: Option<SocketAddr>, out: &OutBatch) -> io::Result<()> {
        let mut lost = None;
        let mut i = 0;
        while i < out.count() {
            let max = if self.gso.load(Ordering::Relaxed) {
                GSO_MAX_SEGMENTS
            } else {
                1
            };
            let run = out.run_from(i, max);
            let bytes = &out.bytes[out.start(i)..out.end(i + run - 1)];
            if run == 1 {
                let sent = match to {
                    Some(to) => self.sock.send_to(bytes, to).await,
                    None => self.sock.send(bytes).await,
                };
                match sent {
                    Ok(_) => {}
                    Err(e) if loses_datagrams_only(&e) => {
                        lost.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            } else {
                let seg = out.len(i) as u16;
                let sent = self
                    .sock
                    .async_io(Interest::WRITABLE, || {
                        offload::send(&self.sock, bytes, seg, to)
                    })
                    .await;
                match sent {
                    Ok(()) => {}
                    Err(e) if offload::refused(&e) => {
                        tracing::debug!(
                            error = &e as &dyn std::error::Error,
                            "UDP segmentation offload refused: sending one datagram per call"
                        );
                        self.gso.store(false, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) if loses_datagrams_only(&e) => {
                        lost.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            i += run;
        }
        lost.map_or(Ok(()), Err)
    }

    /// Waits for datagrams and reads what is there into `batch`.
    pub(crate) async fn recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        offload::recv(&self.sock, batch).await
    }

    /// Reads what is there into `batch` without waiting (`WouldBlock` when nothing is).
    pub(crate) fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        offload::try_recv(&self.sock, batch)
    }
}

/// Errors that cost the datagrams of one call, not the socket (sending and receiving
/// alike): the report of an earlier datagram's ICMP error (port or host unreachable), an
/// interrupted call, a full buffer or device queue, nothing to read after all. Every
/// user of the socket (sessions, clients, the listener) classifies errors with this one
/// list; anything else ends the socket.
pub(crate) fn loses_datagrams_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::WouldBlock
    ) || no_buffer_space(e)
}

/// `ENOBUFS` (a device queue full), which std does not name.
#[cfg(target_os = "linux")]
fn no_buffer_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32)
}

#[cfg(not(target_os = "linux"))]
fn no_buffer_space(_: &io::Error) -> bool {
    false
}

/// GSO and GRO through `sendmsg`/`recvmsg` control messages (Linux).
#[cfg(target_os = "linux")]
mod offload {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        getsockopt, recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned,
        MsgFlags, SockaddrStorage,
    };
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    use super::RecvBatch;

    /// Turns GRO on (where it is missing, reads return one datagram) and finds out
    /// whether GSO is there.
    pub(super) fn enable(sock: &UdpSocket) -> bool {
        let _ = setsockopt(sock, sockopt::UdpGroSegment, &true);
        getsockopt(sock, sockopt::UdpGsoSegment).is_ok()
    }

    /// One `sendmsg` of `bytes`, cut by the kernel into datagrams of `seg` bytes.
    pub(super) fn send(
        sock: &UdpSocket,
        bytes: &[u8],
        seg: u16,
        to: Option<SocketAddr>,
    ) -> io::Result<()> {
        let to = to.map(SockaddrStorage::from);
        sendmsg(
            sock.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[ControlMessage::UdpGsoSegments(&seg)],
            MsgFlags::empty(),
            to.as_ref(),
        )?;
        Ok(())
    }

    /// Errors that say the kernel or the device does not do GSO.
    pub(super) fn refused(e: &io::Error) -> bool {
        use nix::errno::Errno;
        e.raw_os_error()
            .is_some_and(|n| n == Errno::EIO as i32 || n == Errno::EINVAL as i32)
    }

    pub(super) async fn recv(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
        sock.async_io(Interest::READABLE, || try_read(sock, batch))
            .await
    }

    pub(super) fn try_recv(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
        sock.try_io(Interest::READABLE, || try_read(sock, batch))
    }

    fn try_read(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
        let (len, stride, from) = read(sock, batch.buf())?;
        batch.fill(len, stride, from);
        Ok(())
    }

    /// One `recvmsg`: (bytes, datagram size, sender). Without a GRO control message the
    /// read is one datagram.
    fn read(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, usize, SocketAddr)> {
        // Room for more than the GRO size: a socket handed over by the caller may have
        // other receive options on, whose control messages would otherwise truncate ours.
        let mut cmsg = nix::cmsg_space!(i32, [u8; 128]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )?;
        let from = msg
            .address
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                    })
            })
            .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
        let mut stride = msg.bytes;
        match msg.cmsgs() {
            Ok(cmsgs) => {
                for c in cmsgs {
                    if let ControlMessageOwned::UdpGroSegments(size) = c {
                        stride = usize::try_from(size).unwrap_or(msg.bytes);
                    }
                }
            }
            // Where the datagrams of a merged read end is unknown: drop the read (KCP
            // resends) rather than hand on garbage.
            Err(_) => return Ok((0, 1, from)),
        }
        let mut len = msg.bytes;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) && stride < len {
            // A merged read larger than the buffer: only whole datagrams count.
            len -= len % stride;
        }
        Ok((len, stride, from))
    }
}

/// Elsewhere: no offload, one datagram per call.
#[cfg(not(target_os = "linux"))]
mod offload {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    use super::RecvBatch;

    pub(super) fn enable(_sock: &UdpSocket) -> bool {
        false
    }

    pub(super) fn send(_: &UdpSocket, _: &[u8], _: u16, _: Option<SocketAddr>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn refused(_: &io::Error) -> bool {
        true
    }

    pub(super) async fn recv(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
        let (n, from) = sock.recv_from(batch.buf()).await?;
        batch.fill(n, n, from);
        Ok(())
    }

    pub(super) fn try_recv(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
        let (n, from) = sock.try_recv_from(batch.buf())?;
        batch.fill(n, n, from);
        Ok(())
    }
}

/// Outgoing datagrams, back to back in one buffer (what a GSO send takes); reused.
#[derive(Debug, Default)]
pub(crate) struct OutBatch {
    bytes: Vec<u8>,
    /// Where each datagram ends in `bytes`.
    ends: Vec<usize>,
}

impl OutBatch {
    pub(crate) fn push(&mut self, d: &[u8]) {
        self.bytes.extend_from_slice(d);
        self.ends.push(self.bytes.len());
    }

    pub(crate) fn count(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    fn end(&self, i: usize) -> usize {
        self.ends[i]
    }

    fn len(&self, i: usize) -> usize {
        self.end(i) - self.start(i)
    }

    /// How many datagrams from `i` on can leave in one GSO send: equal lengths, the last
    /// possibly shorter, at most `max` of them and [`GSO_MAX_BYTES`] in all.
    fn run_from(&self, i: usize, max: usize) -> usize {
        let seg = self.len(i);
        let mut run = 1;
        let mut bytes = seg;
        while i + run < self.count() && run < max && bytes + seg <= GSO_MAX_BYTES {
            let next = self.len(i + run);
            if next > seg || next == 0 {
                break;
            }
            run += 1;
            bytes += next;
            if next < seg {
                break;
            }
        }
        run
    }
}

/// The buffer of one batched receive, and what it got: `len` bytes from `from`, one
/// datagram every `stride` bytes (the last may be shorter).
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    /// Whether a read filled it since the last `for_each`.
    filled: bool,
    len: usize,
    stride: usize,
    from: SocketAddr,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("len", &self.len)
            .field("stride", &self.stride)
            .finish()
    }
}

impl RecvBatch {
    /// An empty batch; its 64 KiB buffer is allocated at the first read.
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            buf: Vec::new(),
            filled: false,
            len: 0,
            stride: 1,
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// The buffer to read into (allocated at the first read).
    fn buf(&mut self) -> &mut [u8] {
        self.filled = false;
        if self.buf.is_empty() {
            self.buf = vec![0; SLOT];
        }
        &mut self.buf
    }

    /// Records a read of `len` bytes from `from`, one datagram every `stride` bytes.
    fn fill(&mut self, len: usize, stride: usize, from: SocketAddr) {
        self.len = len;
        self.stride = stride.max(1);
        self.from = from;
        self.filled = true;
    }

    /// Calls `f` with each datagram received (its sender and its bytes, which `f` may
    /// change in place), in arrival order; returns how many there were.
    pub(crate) fn for_each(&mut self, mut f: impl FnMut(SocketAddr, &mut [u8])) -> usize {
        if !std::mem::take(&mut self.filled) {
            return 0;
        }
        let len = self.len;
        if len == 0 {
            // An empty datagram is still one (the caller counts it as malformed).
            f(self.from, &mut []);
            return 1;
        }
        let mut n = 0;
        for d in self.buf[..len].chunks_mut(self.stride) {
            f(self.from, d);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lens: &[usize]) -> OutBatch {
        let mut b = OutBatch::default();
        for (i, &n) in lens.iter().enumerate() {
            b.push(&vec![i as u8; n]);
        }
        b
    }

    #[test]
    fn runs_are_equal_lengths_with_one_shorter_last() {
        let b = batch(&[100, 100, 100, 40, 100, 100]);
        assert_eq!(b.run_from(0, 64), 4);
        assert_eq!(b.run_from(4, 64), 2);
        // A longer datagram starts a new run.
        let b = batch(&[40, 100, 100]);
        assert_eq!(b.run_from(0, 64), 1);
        assert_eq!(b.run_from(1, 64), 2);
        // The segment limit and the byte limit both cut runs.
        let b = batch(&[1400; 100]);
        assert_eq!(b.run_from(0, 10), 10);
        assert_eq!(b.run_from(0, 64), GSO_MAX_BYTES / 1400);
        assert_eq!(b.run_from(0, 1), 1);
    }

    #[tokio::test]
    async fn a_burst_arrives_as_the_same_datagrams() {
        // Whatever the kernel does with the runs (GSO or not, GRO or not), the receiver
        // sees every datagram with its own length and bytes, in order.
        let a = Udp::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let b = Udp::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let lens: Vec<usize> = [1400; 30]
            .into_iter()
            .chain([700, 1400, 1400, 3, 9, 9])
            .collect();
        let out = batch(&lens);
        let to = b.socket().local_addr().unwrap();
        a.send(Some(to), &out).await.unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut rb = RecvBatch::new();
        while got.len() < lens.len() {
            b.recv(&mut rb).await.unwrap();
            rb.for_each(|from, d| {
                assert_eq!(from, a.socket().local_addr().unwrap());
                got.push(d.to_vec());
            });
        }
        let want: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![i as u8; n])
            .collect();
        assert_eq!(got, want);
    }
}
