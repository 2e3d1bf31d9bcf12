//! The io_uring driver: one multishot `RecvMsgMulti` over a provided-buffer
//! ring for receiving, and batched linked `SendMsg` submissions (one
//! `io_uring_enter` for a whole batch, GSO super-datagrams included) for
//! sending.
//!
//! Setup asks for `SINGLE_ISSUER | DEFER_TASKRUN` (with `R_DISABLED`, so the
//! thread that first uses the driver becomes its issuer) when the driver is
//! used by one thread only, and retries without these optional flags on
//! `EINVAL`. Any failure of `io_uring_setup` or of the buffer-ring
//! registration is returned to [`open_driver`](super::driver::open_driver),
//! which falls back to the socket driver.
//!
//! Without `DEFER_TASKRUN` (a channel with `progress=thread`, whose
//! background thread shares the driver, or a kernel without it) the kernel
//! posts receive completions by signalled task work, interrupting the thread
//! that armed the receive: on the 2-vCPU VM a busy-polling 32-byte round
//! trip took 26 µs that way against 8.7 µs with `DEFER_TASKRUN` (4.8 × and
//! 1.6 × `udp-raw`; blocking, 55 µs against 53 µs; both measured before
//! single datagrams to the peer bypassed the ring). `COOP_TASKRUN` would
//! avoid the interrupt (1.7 × measured), but it leaves completions waiting
//! while that thread sleeps outside conduit, the very case `progress=thread`
//! is for, so it is not used. The socket driver, the default, has neither
//! cost.
//!
//! Only its own system calls are here (io_uring setup, registration and
//! submissions); the socket, headers and control messages come from
//! `sys.rs`. Built with the cargo feature `uring` (on by default).
//!
//! Memory: `rx_batch` receive buffers of `rx_slot_size + 64` bytes each plus
//! a 16-byte ring entry per buffer, and a submission/completion ring sized
//! for the batch.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, EnterFlags, IoUring};
use zerocopy::IntoBytes;

use super::driver::{Driver, DriverConfig, DriverKind, Transmit, Wait};
use super::sys::{deliver, gro_segment, parse_sockaddr, Socket, TxSlot, CMSG_BUF, NAME_LEN};

/// Buffer group id of the receive ring.
const BGID: u16 = 7;
/// `user_data` of the multishot receive.
const RECV_TAG: u64 = u64::MAX;
/// Most sends submitted in one `io_uring_enter`.
const TX_BATCH: usize = 64;
/// Header the kernel writes before the name in each multishot buffer.
const RECVMSG_OUT: usize = 16;

/// A send slot: everything one `SendMsg` points at, kept at a fixed address
/// until its completion is reaped.
struct SendSlot {
    hdr: libc::msghdr,
    tx: TxSlot,
}

/// The provided-buffer ring: ring entries (page-aligned, shared with the
/// kernel) and the buffers they hand out.
struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    /// The buffers, `buf_len` bytes each (a multiple of 8); `u64`s so
    /// that each starts 8-aligned, and with it the payload in it.
    data: Box<[u64]>,
    buf_len: usize,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
}

impl BufRing {
    fn new(entries: u16, buf_len: usize) -> io::Result<BufRing> {
        let ring_bytes = (entries as usize * size_of::<BufRingEntry>()).max(4096);
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            ring: p.cast(),
            ring_bytes,
            entries,
            data: vec![0u64; entries as usize * buf_len / 8].into_boxed_slice(),
            buf_len,
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Puts buffer `bid` back at our tail (not yet visible to the kernel).
    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        let addr = self.data.as_bytes()[bid as usize * self.buf_len..].as_ptr() as u64;
        // SAFETY: `idx < entries`, so the entry lies inside the mapping; the
        // kernel does not read entries at or past the published tail, so we
        // are the only one touching it.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(addr);
        e.set_len(self.buf_len as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the tail to the kernel.
    fn publish(&self) {
        // SAFETY: `ring` is the page-aligned base of the ring mapping, whose
        // first entry's reserved field is the shared tail (u16, 2-aligned).
        let tail = unsafe { &*(BufRingEntry::tail(self.ring).cast::<AtomicU16>()) };
        // Release: pairs with the kernel's acquire load of the tail
        // (io_uring_buffer_select / smp_load_acquire(&br->tail)), so it sees
        // the entries written by `push` before the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    fn buf(&self, bid: u16, len: usize) -> Option<&[u8]> {
        let start = (bid as usize).checked_mul(self.buf_len)?;
        self.data
            .as_bytes()
            .get(start..start + len.min(self.buf_len))
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: `ring`/`ring_bytes` are exactly what mmap returned; the
        // io_uring instance that used it is dropped before this (field order
        // in `UringDriver`).
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
        }
    }
}

/// The io_uring driver.
pub(crate) struct UringDriver {
    // Field order matters: the ring must be torn down before the buffers and
    // send slots it may still reference.
    ring: IoUring,
    bufs: BufRing,
    recv_hdr: Box<libc::msghdr>,
    sock: Socket,
    /// The socket's descriptor.
    fd: RawFd,
    /// Whether GRO is on (fixed at open).
    gro: bool,
    armed: bool,
    enabled: bool,
    defer_taskrun: bool,
    /// Receive completions seen while waiting for sends: (result, flags).
    pending: VecDeque<(i32, u32)>,
    /// Where GRO segments that are not 8-aligned are copied.
    scratch: Vec<u64>,
    /// Datagrams larger than a buffer, cut by the kernel and dropped.
    oversized: u64,
    slots: Box<[SendSlot]>,
}

// SAFETY: the raw pointers (ring entries, msghdr name/control pointers, send
// slots) point into allocations owned by this struct, which move with it.
// With SINGLE_ISSUER the ring is created disabled and enabled by the first
// thread that uses it; the driver is documented as single-threaded in that
// mode and `&mut self` on every operation rules out concurrent use.
unsafe impl Send for UringDriver {}

impl UringDriver {
    /// Sets up the ring, registers the buffer ring and binds the socket.
    ///
    /// # Errors
    /// `io_uring_setup`/register failures (ENOSYS, EPERM, EINVAL on old
    /// kernels) and socket errors.
    pub(crate) fn open(bind: SocketAddr, cfg: &DriverConfig) -> io::Result<UringDriver> {
        let entries = (cfg.rx_batch.clamp(8, 4096) as u32).next_power_of_two();
        let sq = (TX_BATCH as u32 * 2).max(entries.min(256));
        let (ring, defer) = Self::setup(sq, entries * 4, cfg.single_thread)?;
        let sock = Socket::bind(bind, cfg)?;
        let (fd, gro) = (sock.fd(), sock.gro());
        let mut c = cfg.clone();
        c.gro = gro;
        let buf_len = RECVMSG_OUT + NAME_LEN + CMSG_BUF + c.rx_slot_size();
        let bufs = BufRing::new(entries as u16, buf_len)?;
        // SAFETY: the ring memory is page-aligned, holds `entries` entries and
        // lives in `bufs`, which is dropped after `ring` (field order).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring as u64,
                entries as u16,
                BGID,
                0,
            )?;
        }
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        recv_hdr.msg_controllen = if gro { CMSG_BUF } else { 0 };
        let slots = (0..TX_BATCH)
            .map(|_| SendSlot {
                // SAFETY: msghdr is plain old data; all-zero is valid.
                hdr: unsafe { std::mem::zeroed() },
                tx: TxSlot::new(),
            })
            .collect();
        let mut d = UringDriver {
            ring,
            bufs,
            recv_hdr,
            sock,
            fd,
            gro,
            armed: false,
            enabled: !defer,
            defer_taskrun: defer,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            oversized: 0,
            slots,
        };
        if !defer {
            d.arm()?;
        }
        Ok(d)
    }

    /// Creates the ring, with SINGLE_ISSUER|DEFER_TASKRUN when asked,
    /// retrying without them on EINVAL. Returns whether they are on.
    fn setup(sq: u32, cq: u32, single: bool) -> io::Result<(IoUring, bool)> {
        if single {
            let r = IoUring::builder()
                .setup_cqsize(cq)
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_r_disabled()
                .build(sq);
            match r {
                Ok(r) => return Ok((r, true)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        let r = IoUring::builder().setup_cqsize(cq).build(sq);
        match r {
            Ok(r) => Ok((r, false)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Ok((IoUring::builder().build(sq)?, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Enables a ring created disabled: the calling thread becomes its
    /// single issuer.
    fn ensure_enabled(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.ring.submitter().register_enable_rings()?;
            self.enabled = true;
            self.arm()?;
        }
        Ok(())
    }

    /// Queues the multishot receive.
    fn arm(&mut self) -> io::Result<()> {
        let e = opcode::RecvMsgMulti::new(Fd(self.fd), &*self.recv_hdr, BGID)
            .build()
            .user_data(RECV_TAG);
        // SAFETY: the msghdr template lives in a Box owned by the driver and
        // outlives the multishot request (cancelled when the ring drops).
        unsafe { self.push_sqe(&e)? };
        self.armed = true;
        Ok(())
    }

    /// Pushes one SQE, submitting first when the queue is full.
    ///
    /// # Safety
    /// Everything `e` points at must stay valid until its completion.
    unsafe fn push_sqe(&mut self, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Runs deferred task work and submits queued SQEs without waiting.
    fn kick(&mut self) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: no extended argument is passed (`None`), so there is nothing
        // for the kernel to read besides the ring itself.
        let r = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
                EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Handles one receive completion; returns datagrams delivered.
    fn on_recv<F: FnMut(SocketAddr, &[u8])>(&mut self, res: i32, flags: u32, f: &mut F) -> usize {
        if !cqueue::more(flags) {
            self.armed = false;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            // Errors such as -ENOBUFS carry no buffer; the receive is re-armed.
            return 0;
        };
        let mut n = 0;
        if res >= 0 {
            if let Some(buf) = self.bufs.buf(bid, res as usize) {
                if let Ok(out) = RecvMsgOut::parse(buf, &self.recv_hdr) {
                    if out.is_payload_truncated() {
                        self.oversized += 1;
                    } else if !out.is_name_data_truncated() {
                        if let Some(from) = parse_sockaddr(out.name_data()) {
                            let seg = if self.gro {
                                gro_segment(out.control_data())
                            } else {
                                None
                            };
                            n = deliver(from, out.payload_data(), seg, &mut self.scratch, f);
                        }
                    }
                }
            }
        }
        self.bufs.push(bid);
        n
    }

    /// Drains the completion queue of receive completions (pending first).
    fn drain<F: FnMut(SocketAddr, &[u8])>(&mut self, max: usize, f: &mut F) -> usize {
        let mut n = 0;
        let mut recycled = false;
        while n < max {
            let Some((res, flags)) = self.pending.pop_front() else {
                break;
            };
            n += self.on_recv(res, flags, f);
            recycled = true;
        }
        while n < max {
            let Some(c) = self.ring.completion().next() else {
                break;
            };
            if c.user_data() == RECV_TAG {
                n += self.on_recv(c.result(), c.flags(), f);
                recycled = true;
            }
            // Send completions are only outstanding inside `send`.
        }
        if recycled {
            self.bufs.publish();
        }
        n
    }
}

impl Driver for UringDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Uring
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    fn oversized(&self) -> u64 {
        self.oversized
    }

    fn max_segments(&self) -> usize {
        self.sock.max_segments()
    }

    fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.sock.connect(peer)
    }

    fn send(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize> {
        self.ensure_enabled()?;
        self.sock.check_batch(batch)?;
        // One datagram to the connected peer (the latency path) leaves with
        // a plain `send`: through the ring it cost an `io_uring_enter` and
        // the request's setup and completion, ~0.4 us more per datagram on
        // the 2-vCPU VM. Batches go through the ring.
        if let [t] = batch {
            if let Some(r) = self.sock.send_to_peer(t) {
                return r;
            }
        }
        let n = batch.len().min(TX_BATCH);
        if n == 0 {
            return Ok(0);
        }
        let peer = self.sock.peer();
        for (i, t) in batch[..n].iter().enumerate() {
            let s = &mut self.slots[i];
            s.hdr = s.tx.prepare(t, peer == Some(t.dest));
            let mut e = opcode::SendMsg::new(Fd(self.fd), &s.hdr)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(i as u64);
            if i + 1 < n {
                // Linked: a failed send cancels the rest, so what went out is
                // always a prefix of the batch.
                e = e.flags(squeue::Flags::IO_LINK);
            }
            // SAFETY: the slot (header, iovec, name, control) lives in the
            // driver's boxed slot array and the payload in the caller's batch;
            // both stay valid because we reap every send completion below
            // before returning.
            unsafe { self.push_sqe(&e)? };
        }
        let mut results: [i32; TX_BATCH] = [i32::MIN; TX_BATCH];
        let mut outstanding = n;
        let mut first = true;
        while outstanding > 0 {
            if first {
                first = false;
                self.ring.submitter().submit_and_wait(1)?;
            } else {
                match self.ring.submitter().submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err(e),
                }
            }
            loop {
                let Some(c) = self.ring.completion().next() else {
                    break;
                };
                if c.user_data() == RECV_TAG {
                    self.pending.push_back((c.result(), c.flags()));
                } else if let Some(r) = results.get_mut(c.user_data() as usize) {
                    if *r == i32::MIN {
                        *r = c.result();
                        outstanding -= 1;
                    }
                }
            }
        }
        let ok = results[..n].iter().take_while(|&&r| r >= 0).count();
        if ok == 0 {
            let e = io::Error::from_raw_os_error(-results[0]);
            return self.sock.send_failed(e, &batch[0]);
        }
        Ok(ok)
    }

    fn recv<F: FnMut(SocketAddr, &[u8])>(
        &mut self,
        wait: Wait,
        max: usize,
        mut f: F,
    ) -> io::Result<usize> {
        self.ensure_enabled()?;
        if !self.armed {
            self.arm()?;
        }
        let mut n = self.drain(max, &mut f);
        if n > 0 {
            return Ok(n);
        }
        match wait {
            Wait::NoWait => {
                // One enter runs the deferred (or pending) task work that
                // posts receive completions, and submits a re-armed receive.
                // Without deferred task work the kernel runs it on its own
                // (signalled task work) or flags it (`IORING_SQ_TASKRUN`):
                // enter only then, so an empty busy poll costs no syscall.
                let need = self.defer_taskrun
                    || !self.ring.submission().is_empty()
                    || self.ring.submission().taskrun();
                if need {
                    self.kick()?;
                }
            }
            Wait::Timeout(t) => {
                let ts = Timespec::from(t.min(Duration::from_secs(3600)));
                let args = SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        n += self.drain(max.saturating_sub(n).max(1), &mut f);
        if !self.armed {
            self.arm()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::driver::test_support::segmented_roundtrip;

    fn open(cfg: &DriverConfig) -> Option<UringDriver> {
        conduit_test_util::uring_or_skip()
            .then(|| UringDriver::open("127.0.0.1:0".parse().unwrap(), cfg).unwrap())
    }

    #[test]
    fn uring_roundtrip_batches_and_gso() {
        for (gso, single) in [(false, true), (true, true), (true, false)] {
            let cfg = DriverConfig {
                gso,
                gro: gso,
                single_thread: single,
                rx_batch: 16,
                ..DriverConfig::default()
            };
            let (Some(mut a), Some(mut b)) = (open(&cfg), open(&cfg)) else {
                return;
            };
            segmented_roundtrip(&mut a, &mut b, 5000);
        }
    }

    /// To a connected peer, single datagrams leave with a plain `send` and
    /// batches through the ring; mixed, they arrive in the order sent. A
    /// peer whose port closed costs the datagrams, never an error.
    #[test]
    fn uring_single_sends_and_batches_keep_order() {
        let cfg = DriverConfig {
            gso: false,
            gro: false,
            rx_batch: 64,
            ..DriverConfig::default()
        };
        let (Some(mut a), Some(mut b)) = (open(&cfg), open(&cfg)) else {
            return;
        };
        b.recv(Wait::NoWait, 64, |_, _| {}).unwrap();
        let dest = b.local_addr().unwrap();
        a.connect(dest).unwrap();
        let msgs: Vec<[u8; 8]> = (0..120u64).map(|i| i.to_le_bytes()).collect();
        fn one(dest: SocketAddr, m: &[u8; 8]) -> Transmit<'_> {
            Transmit {
                dest,
                contents: m,
                segment_size: 8,
            }
        }
        // Bounds every loop below: a hang is a failure.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut next_sent = 0;
        // 1, 3, 1, 3, ... datagrams per call.
        for round in 0.. {
            if next_sent == msgs.len() {
                break;
            }
            let k = if round % 2 == 0 { 1 } else { 3 }.min(msgs.len() - next_sent);
            let batch: Vec<Transmit<'_>> = msgs[next_sent..next_sent + k]
                .iter()
                .map(|m| one(dest, m))
                .collect();
            let mut sent = 0;
            while sent < k {
                sent += a.send(&batch[sent..]).unwrap();
                assert!(std::time::Instant::now() < deadline, "send stuck");
            }
            next_sent += k;
        }
        let mut next = 0u64;
        while next < msgs.len() as u64 {
            b.recv(Wait::Timeout(Duration::from_secs(5)), usize::MAX, |_, d| {
                assert_eq!(d, next.to_le_bytes());
                next += 1;
            })
            .unwrap();
            assert!(std::time::Instant::now() < deadline, "received {next}");
        }
        drop(b);
        for m in &msgs[..4] {
            assert_eq!(a.send(&[one(dest, m)]).unwrap(), 1);
        }
    }

    #[test]
    fn uring_more_datagrams_than_buffers() {
        let cfg = DriverConfig {
            gso: false,
            gro: false,
            rx_batch: 8,
            ..DriverConfig::default()
        };
        let (Some(mut a), Some(mut b)) = (open(&cfg), open(&cfg)) else {
            return;
        };
        b.recv(Wait::NoWait, 64, |_, _| {}).unwrap();
        let dest = b.local_addr().unwrap();
        let msgs: Vec<[u8; 8]> = (0..200u64).map(|i| i.to_le_bytes()).collect();
        let batch: Vec<Transmit<'_>> = msgs
            .iter()
            .map(|m| Transmit {
                dest,
                contents: m,
                segment_size: 8,
            })
            .collect();
        let mut sent = 0;
        while sent < batch.len() {
            sent += a.send(&batch[sent..]).unwrap();
        }
        let mut next = 0u64;
        while next < 200 {
            b.recv(Wait::Timeout(Duration::from_secs(5)), usize::MAX, |_, d| {
                assert_eq!(d, next.to_le_bytes());
                next += 1;
            })
            .unwrap();
        }
    }
}
