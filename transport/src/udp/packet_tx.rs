//! A group publication's datagrams written straight to the interface
//! (`tx=packet`): an `AF_PACKET` socket, the IPv4 and UDP headers built
//! here.
//!
//! Why: the kernel looks a route up for every datagram sent to a
//! multicast group (`udp_sendmsg` never treats a group destination as
//! connected) and, with multicast loopback on, clones each one for the
//! sending host. A connected unicast socket does neither: on this project's
//! benchmark host a bare multicast round trip across a veth pair costs
//! about 1.15 × a bare unicast one for those reasons alone. A packet socket
//! takes none of that path: the frame leaves by the interface's queue as
//! built (measurements: `docs/benchmarks.md`, "Multicast without the
//! kernel's route lookup").
//!
//! What it costs the user, and why it is an option rather than the default:
//! - `CAP_NET_RAW` (a packet socket); without it the open fails with a
//!   clear error.
//! - IPv4 groups and `iface=ADDR` (the interface's address, the source of
//!   every datagram) only.
//! - No copy for the sending host: subscriptions on the publisher's own host
//!   do not receive the group's datagrams (the kernel's multicast loopback is
//!   what gives them one). `lo` refuses such frames too (a loopback source
//!   on a multicast route is a martian), so the option is for real (or
//!   virtual) interfaces to other hosts or namespaces.
//! - The UDP checksum is computed here, in software (the frame bypasses the
//!   stack's offload).
//! - No IP fragmentation: a datagram is at most the interface's MTU, which
//!   the protocol's `mtu` (default 1408) already keeps below 1500.
//!
//! The receivers see ordinary UDP datagrams from `iface:PORT`, the
//! publication's bound socket, which is where their status messages and
//! NAKs go, as without the option.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::driver::Transmit;
use super::sys::{classify_send_error, SendFailure};

/// The IPv4 header (no options) and the UDP header of one datagram, in
/// network byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
struct Headers {
    /// Version 4, header length 5 words.
    version_ihl: u8,
    tos: u8,
    total_len: U16,
    id: U16,
    /// Don't-fragment set, offset 0.
    flags_frag: U16,
    ttl: u8,
    protocol: u8,
    ip_checksum: U16,
    src: U32,
    dst: U32,
    src_port: U16,
    dst_port: U16,
    udp_len: U16,
    udp_checksum: U16,
}

const _: () = assert!(std::mem::size_of::<Headers>() == HEADERS);

/// Bytes of [`Headers`].
const HEADERS: usize = 28;

/// Frames one `sendmmsg` call takes (and the most segments of one transmit).
pub(crate) const BATCH: usize = 64;

/// The largest UDP payload an IPv4 datagram without options carries.
const MAX_PAYLOAD: usize = 65_535 - HEADERS;

/// Ones' complement sum of `bytes` (big-endian 16-bit words, an odd last
/// byte padded with zero), folded to 16 bits, added to `sum`.
fn ones_sum(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        // Eight bytes as four big-endian words: their sum modulo 2^16 - 1 is
        // the u64's value folded, which the carries below preserve.
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = sum.overflowing_add(v);
        sum = s + u64::from(carry);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        let (s, carry) = sum.overflowing_add(u64::from(u16::from_be_bytes([w[0], w[1]])));
        sum = s + u64::from(carry);
    }
    if let [b] = words.remainder() {
        let (s, carry) = sum.overflowing_add(u64::from(*b) << 8);
        sum = s + u64::from(carry);
    }
    sum
}

/// Folds a ones' complement sum to 16 bits.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The headers of a datagram of `payload` from `src` to `dst`, with the IP
/// identification `id`, `ttl`, and both checksums.
fn headers(src: SocketAddrV4, dst: SocketAddrV4, ttl: u8, id: u16, payload: &[u8]) -> Headers {
    let udp_len = (8 + payload.len()) as u16;
    let mut h = Headers {
        version_ihl: 0x45,
        tos: 0,
        total_len: U16::new(20 + udp_len),
        id: U16::new(id),
        flags_frag: U16::new(0x4000),
        ttl,
        protocol: libc::IPPROTO_UDP as u8,
        ip_checksum: U16::ZERO,
        src: U32::from_bytes(src.ip().octets()),
        dst: U32::from_bytes(dst.ip().octets()),
        src_port: U16::new(src.port()),
        dst_port: U16::new(dst.port()),
        udp_len: U16::new(udp_len),
        udp_checksum: U16::ZERO,
    };
    h.ip_checksum = U16::new(!fold(ones_sum(0, &h.as_bytes()[..20])));
    // The pseudo-header (addresses, protocol, UDP length), the UDP header
    // and the payload; a sum of zero goes out as all ones (RFC 768: zero
    // means "no checksum").
    let mut sum = ones_sum(0, &h.as_bytes()[12..20]);
    sum = ones_sum(sum, &[0, h.protocol]);
    sum = ones_sum(sum, &udp_len.to_be_bytes());
    sum = ones_sum(sum, &h.as_bytes()[20..]);
    sum = ones_sum(sum, payload);
    let c = !fold(sum);
    h.udp_checksum = U16::new(if c == 0 { 0xffff } else { c });
    h
}

/// The Ethernet address of an IPv4 group (RFC 1112: 01:00:5e and the
/// group's low 23 bits).
fn group_mac(g: Ipv4Addr) -> [u8; 6] {
    let o = g.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// The index of the interface that has IPv4 address `a`.
fn interface_with(a: Ipv4Addr) -> io::Result<u32> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success the kernel's list is
    // freed below, once, and not used after.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut p = list;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list `getifaddrs` returned, not yet
        // freed; its fields are read only.
        let ifa = unsafe { &*p };
        // SAFETY: `ifa_addr` is null or points at a sockaddr of the family it
        // names, which is checked before reading it as a `sockaddr_in`.
        let addr = unsafe { ifa.ifa_addr.as_ref() };
        if addr.is_some_and(|s| s.sa_family == libc::AF_INET as libc::sa_family_t) {
            // SAFETY: an AF_INET address is a `sockaddr_in` (checked above).
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == a {
                // SAFETY: `ifa_name` is the NUL-terminated name of the node's
                // interface, live until the list is freed.
                found = Some(unsafe { libc::if_nametoindex(ifa.ifa_name) });
                break;
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: `list` came from `getifaddrs` and is freed exactly once.
    unsafe { libc::freeifaddrs(list) };
    match found {
        Some(i) if i > 0 => Ok(i),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("tx=packet: no interface has the address {a} (iface=)"),
        )),
    }
}

/// A group publication's packet socket (see the module docs).
pub(crate) struct PacketTx {
    fd: OwnedFd,
    /// The group's link-layer destination on the interface.
    to: libc::sockaddr_ll,
    /// The source of every datagram: the interface's address and the
    /// publication's port.
    src: SocketAddrV4,
    pub(crate) group: SocketAddr,
    dst: SocketAddrV4,
    ttl: u8,
    /// IP identification of the next datagram.
    id: u16,
    /// One set of headers per frame of a batch.
    hdrs: Box<[Headers; BATCH]>,
}

// SAFETY: the socket descriptor and plain data; nothing points into another
// thread's memory.
unsafe impl Send for PacketTx {}

impl PacketTx {
    /// A packet socket for group `m`, sending as `iface:port`.
    ///
    /// # Errors
    /// An IPv6 group or an interface not given by its IPv4 address
    /// (`InvalidInput`), no interface with that address, no `CAP_NET_RAW`
    /// (`PermissionDenied`, said so), other socket errors.
    pub(crate) fn open(
        m: &super::sys::Multicast,
        port: u16,
        sndbuf: usize,
    ) -> io::Result<PacketTx> {
        let (SocketAddr::V4(dst), Some(super::sys::MulticastIface::Addr(iface))) =
            (m.group, m.iface)
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tx=packet needs an IPv4 group and iface=ADDR (the interface's IPv4 address)",
            ));
        };
        let index = interface_with(iface)?;
        // Protocol 0: a socket that only sends (with ETH_P_IP it would also
        // get a copy of every IP packet the host receives).
        // SAFETY: plain socket creation; the descriptor is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("tx=packet needs CAP_NET_RAW for a packet socket: {e}"),
                ),
                _ => e,
            });
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if sndbuf > 0 {
            let v = sndbuf.min(i32::MAX as usize) as libc::c_int;
            if super::sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v).is_err() {
                let _ = super::sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, v);
            }
        }
        // SAFETY: `sockaddr_ll` is plain data; all zeroes is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&group_mac(*dst.ip()));
        let zero = headers(SocketAddrV4::new(iface, port), dst, m.ttl, 0, &[]);
        Ok(PacketTx {
            fd,
            to,
            src: SocketAddrV4::new(iface, port),
            group: m.group,
            dst,
            ttl: m.ttl,
            id: 0,
            hdrs: Box::new([zero; BATCH]),
        })
    }

    /// Sends the leading transmits of `batch` that go to the group, every
    /// datagram of each as a frame of its own; returns how many transmits
    /// went (a transmit is sent whole or not at all: 0 when the interface's
    /// queue is full, the protocol sends again later).
    ///
    /// # Errors
    /// Send errors other than a full queue.
    pub(crate) fn send(&mut self, batch: &[Transmit<'_>]) -> io::Result<usize> {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2 * BATCH];
        // SAFETY: `mmsghdr` is plain data; all zeroes is a valid value (null
        // pointers, zero lengths), filled in below before use.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        // Frames per transmit, to count whole transmits sent.
        let mut ends = [0usize; BATCH];
        let (mut frames, mut transmits) = (0usize, 0usize);
        for t in batch.iter().take_while(|t| t.dest == self.group) {
            let seg = if t.segment_size == 0 {
                t.contents.len()
            } else {
                t.segment_size
            };
            let n = t.segments();
            if frames + n > BATCH {
                if transmits > 0 {
                    break;
                }
                // The driver offers at most BATCH segments per transmit.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "tx=packet: more datagrams in one transmit than a batch holds",
                ));
            }
            for d in t.contents.chunks(seg.max(1)) {
                if d.len() > MAX_PAYLOAD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "tx=packet: datagram longer than an IPv4 datagram holds",
                    ));
                }
                self.hdrs[frames] = headers(self.src, self.dst, self.ttl, self.id, d);
                self.id = self.id.wrapping_add(1);
                iov[2 * frames] = libc::iovec {
                    iov_base: std::ptr::from_mut(&mut self.hdrs[frames]).cast(),
                    iov_len: HEADERS,
                };
                iov[2 * frames + 1] = libc::iovec {
                    iov_base: d.as_ptr().cast_mut().cast(),
                    iov_len: d.len(),
                };
                frames += 1;
            }
            transmits += 1;
            ends[transmits - 1] = frames;
            if frames == BATCH {
                break;
            }
        }
        if frames == 0 {
            return Ok(0);
        }
        let name = std::ptr::from_ref(&self.to).cast_mut().cast();
        for (i, m) in msgs.iter_mut().enumerate().take(frames) {
            m.msg_hdr.msg_name = name;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov[2 * i..].as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
        }
        let rc = if frames == 1 {
            // SAFETY: the header points at `self.to`, two iovecs over
            // `self.hdrs[0]` and the caller's payload, all live for the call;
            // the kernel only reads them.
            let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msgs[0].msg_hdr, 0) };
            if r < 0 {
                -1
            } else {
                1
            }
        } else {
            // SAFETY: `frames` headers, each as above; the kernel only reads
            // what they point at, during the call.
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), frames as u32, 0) }
        };
        if rc < 0 {
            return match classify_send_error(io::Error::last_os_error(), 1) {
                SendFailure::Retry => Ok(0),
                SendFailure::Lost => Ok(1),
                SendFailure::GsoRefused(e) | SendFailure::Failed(e) => Err(e),
            };
        }
        // Whole transmits among the frames sent; a partly sent one is sent
        // again whole (its receivers drop the duplicates).
        let sent = rc as usize;
        Ok(ends[..transmits].iter().take_while(|&&e| e <= sent).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum of a datagram, computed the textbook way: 16-bit words
    /// summed in a u32 and folded.
    fn reference_udp_checksum(h: &Headers, payload: &[u8]) -> u16 {
        let b = h.as_bytes();
        let mut v: Vec<u8> = Vec::new();
        v.extend_from_slice(&b[12..20]);
        v.extend_from_slice(&[0, 17]);
        v.extend_from_slice(&h.udp_len.get().to_be_bytes());
        v.extend_from_slice(&b[20..26]);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        if v.len() % 2 == 1 {
            v.push(0);
        }
        let mut s: u32 = 0;
        for w in v.chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    #[test]
    fn checksums_match_the_textbook_sum_for_every_length() {
        let src = SocketAddrV4::new([10, 200, 0, 1].into(), 40400);
        let dst = SocketAddrV4::new([239, 255, 0, 1].into(), 4000);
        let mut x = 0x1234_5678u32;
        for len in 0..200usize {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let h = headers(src, dst, 1, len as u16, &payload);
            assert_eq!(
                h.udp_checksum.get(),
                reference_udp_checksum(&h, &payload),
                "len {len}"
            );
            // The IP header sums to all ones with its checksum in.
            assert_eq!(fold(ones_sum(0, &h.as_bytes()[..20])), 0xffff);
            assert_eq!(h.total_len.get() as usize, 28 + len);
        }
        // All-ones payload words: carries through every fold.
        let payload = vec![0xff; 1400];
        let h = headers(src, dst, 1, 0, &payload);
        assert_eq!(h.udp_checksum.get(), reference_udp_checksum(&h, &payload));
    }

    #[test]
    fn a_group_maps_to_its_ethernet_address() {
        assert_eq!(
            group_mac([239, 255, 0, 1].into()),
            [0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01]
        );
        assert_eq!(
            group_mac([224, 128, 2, 3].into()),
            [0x01, 0x00, 0x5e, 0x00, 0x02, 0x03]
        );
    }

    #[test]
    fn the_loopback_address_names_lo() {
        let lo = interface_with(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(Some(lo), super::super::sys::interface_index("lo"));
        assert!(interface_with([192, 0, 2, 77].into()).is_err());
    }
}
