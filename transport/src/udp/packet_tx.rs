//! A group publication's datagrams written straight to the interface
//! (`tx=packet`): an `AF_PACKET` socket, the Ethernet, IPv4 and UDP headers
//! built here.
//!
//! Why: the kernel looks a route up for every datagram sent to a
//! multicast group (`udp_sendmsg` never treats a group destination as
//! connected) and, with multicast loopback on, clones each one for the
//! sending host. A connected unicast socket does neither. A packet socket
//! takes none of that path: the frame leaves by the interface's queue as
//! built (measurements: `docs/benchmarks.md`, "Multicast without the
//! kernel's route lookup").
//!
//! The UDP checksum is left to the device as for the kernel's own
//! datagrams: each frame starts with a `virtio_net_hdr` (`PACKET_VNET_HDR`)
//! saying where the checksum starts and goes (`CHECKSUM_PARTIAL`; the NIC
//! fills it in, or the kernel in `dev_queue_xmit` for a device without the
//! offload). A kernel that refuses the option gets the checksum computed
//! here.
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
//! - No IP fragmentation: a datagram is at most the interface's MTU, which
//!   the protocol's `mtu` (default 1408) already keeps below 1500.
//!
//! The receivers see ordinary UDP datagrams from `iface:PORT`, the
//! publication's bound socket, which is where their status messages and
//! NAKs go, as without the option.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use zerocopy::byteorder::little_endian::U16 as Le16;
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

/// The `virtio_net_hdr` a packet socket with `PACKET_VNET_HDR` takes before
/// each frame (little-endian on every host conduit builds for): here only
/// "the UDP checksum is left to the device" (`NEEDS_CSUM`, where it starts
/// and where it goes), so the frame leaves as the kernel's own UDP sends do
/// (`CHECKSUM_PARTIAL`: the NIC, or the kernel in `dev_queue_xmit` for a
/// device without the offload, fills it in; a veth hands it over unverified,
/// as for the kernel's own datagrams). It also spares the kernel probing the
/// frame's headers, which it would otherwise do for every send.
#[repr(C)]
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    hdr_len: Le16,
    gso_size: Le16,
    csum_start: Le16,
    csum_offset: Le16,
}

const _: () = assert!(std::mem::size_of::<VnetHdr>() == 10);

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const NEEDS_CSUM: u8 = 1;

/// An Ethernet header.
#[repr(C)]
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: U16,
}

const _: () = assert!(std::mem::size_of::<EthHdr>() == ETH_HLEN as usize);

/// Bytes of [`EthHdr`]; the vnet header's offsets count from its start.
const ETH_HLEN: u16 = 14;

/// What goes before each datagram's payload (the vnet header only when
/// the socket took `PACKET_VNET_HDR`).
#[repr(C)]
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
struct Prefix {
    vnet: VnetHdr,
    eth: EthHdr,
    headers: Headers,
}

const _: () = assert!(std::mem::size_of::<Prefix>() == 10 + 14 + HEADERS);

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
/// identification `id`, `ttl`, the IP checksum and the UDP checksum: whole
/// (`partial` false), or only its pseudo-header part, for the device to
/// finish over the UDP header and payload (`partial`, see [`VnetHdr`]).
fn headers(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ttl: u8,
    id: u16,
    payload: &[u8],
    partial: bool,
) -> Headers {
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
    if partial {
        // The device adds the rest and stores the complement.
        h.udp_checksum = U16::new(fold(sum));
        return h;
    }
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

/// The index and the Ethernet address of the interface that has IPv4
/// address `a`.
fn interface_with(a: Ipv4Addr) -> io::Result<(u32, [u8; 6])> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success the kernel's list is
    // freed below, once, and not used after.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut index = None;
    let mut macs = Vec::new();
    let mut p = list;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list `getifaddrs` returned, not yet
        // freed; its fields are read only.
        let ifa = unsafe { &*p };
        // SAFETY: `ifa_addr` is null or points at a sockaddr of the family it
        // names, which is checked before reading it as that family's type.
        let family = unsafe { ifa.ifa_addr.as_ref() }.map(|s| i32::from(s.sa_family));
        if family == Some(libc::AF_INET) {
            // SAFETY: an AF_INET address is a `sockaddr_in` (checked above).
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            if index.is_none() && Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == a {
                // SAFETY: `ifa_name` is the NUL-terminated name of the node's
                // interface, live until the list is freed.
                index = Some(unsafe { libc::if_nametoindex(ifa.ifa_name) });
            }
        } else if family == Some(libc::AF_PACKET) {
            // SAFETY: an AF_PACKET address is a `sockaddr_ll` (checked above).
            let ll = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_ll>() };
            let mut mac = [0u8; 6];
            if usize::from(ll.sll_halen) == mac.len() {
                mac.copy_from_slice(&ll.sll_addr[..6]);
            }
            macs.push((ll.sll_ifindex, mac));
        }
        p = ifa.ifa_next;
    }
    // SAFETY: `list` came from `getifaddrs` and is freed exactly once.
    unsafe { libc::freeifaddrs(list) };
    match index {
        Some(i) if i > 0 => {
            // An interface without an Ethernet address of six bytes (none
            // listed): zeroes, as `lo` has.
            let mac = macs
                .iter()
                .find(|(k, _)| *k as u32 == i)
                .map_or([0; 6], |(_, m)| *m);
            Ok((i, mac))
        }
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
    /// The device finishes the UDP checksum (`PACKET_VNET_HDR` was taken).
    vnet: bool,
    /// IP identification of the next datagram.
    id: u16,
    /// What goes before each frame's payload, one per frame of a batch.
    prefixes: Box<[Prefix; BATCH]>,
    /// Two per frame: its prefix (from the vnet header on, or from the IP
    /// header without one) and its payload.
    iov: Box<[libc::iovec; 2 * BATCH]>,
    msgs: Box<[libc::mmsghdr; BATCH]>,
}

// SAFETY: `iov` and `msgs` hold pointers into `prefixes` and `to` (heap and
// struct fields that move with the struct: they are set again before every
// call) and into the caller's payloads (valid only during `send`, rewritten
// before each use); nothing in them is read outside `send`.
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
        bound: SocketAddr,
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
        // The receivers answer the datagrams' source, `iface:PORT`: the bound
        // socket must hear it (bound to the wildcard or to that address).
        if !bound.ip().is_unspecified() && bound.ip() != std::net::IpAddr::V4(iface) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tx=packet: bind={bound} would not hear the receivers, who answer iface={iface}; bind to {iface} or the wildcard"
                ),
            ));
        }
        let port = bound.port();
        let (index, mac) = interface_with(iface)?;
        // Protocol 0: a socket that only sends (with ETH_P_IP it would also
        // get a copy of every IP packet the host receives). SOCK_RAW: the
        // frames carry their Ethernet header (the vnet header needs it).
        // SAFETY: plain socket creation; the descriptor is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
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
        // A kernel that refuses it: the checksum is computed here instead.
        let vnet = super::sys::setsockopt_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1).is_ok();
        // SAFETY: `sockaddr_ll` is plain data; all zeroes is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&group_mac(*dst.ip()));
        let src = SocketAddrV4::new(iface, port);
        let prefix = Prefix {
            vnet: VnetHdr {
                flags: NEEDS_CSUM,
                gso_type: 0,
                hdr_len: Le16::new(0),
                gso_size: Le16::new(0),
                csum_start: Le16::new(ETH_HLEN + 20),
                csum_offset: Le16::new(6),
            },
            eth: EthHdr {
                dst: group_mac(*dst.ip()),
                src: mac,
                ethertype: U16::new(libc::ETH_P_IP as u16),
            },
            headers: headers(src, dst, m.ttl, 0, &[], vnet),
        };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: `mmsghdr` is plain data; all zeroes is a valid value (null
        // pointers, zero lengths), filled in before each use.
        let msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Ok(PacketTx {
            fd,
            to,
            src,
            group: m.group,
            dst,
            ttl: m.ttl,
            vnet,
            id: 0,
            prefixes: Box::new([prefix; BATCH]),
            iov: Box::new([iov; 2 * BATCH]),
            msgs: Box::new([msg; BATCH]),
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
        // Frames per transmit, to count whole transmits sent.
        let mut ends = [0usize; BATCH];
        let (mut frames, mut transmits) = (0usize, 0usize);
        // Without `PACKET_VNET_HDR` the frames start at the Ethernet header.
        let skip = if self.vnet {
            0
        } else {
            std::mem::size_of::<VnetHdr>()
        };
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
                let p = &mut self.prefixes[frames];
                p.headers = headers(self.src, self.dst, self.ttl, self.id, d, self.vnet);
                self.id = self.id.wrapping_add(1);
                self.iov[2 * frames] = libc::iovec {
                    iov_base: p.as_bytes()[skip..].as_ptr().cast_mut().cast(),
                    iov_len: std::mem::size_of::<Prefix>() - skip,
                };
                self.iov[2 * frames + 1] = libc::iovec {
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
        for (i, m) in self.msgs.iter_mut().enumerate().take(frames) {
            m.msg_hdr.msg_name = name;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            m.msg_hdr.msg_iov = self.iov[2 * i..].as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
        }
        let rc = if frames == 1 {
            // SAFETY: the header points at `self.to`, two iovecs over
            // `self.prefixes[0]` and the caller's payload, all live for the
            // call; the kernel only reads them.
            let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &self.msgs[0].msg_hdr, 0) };
            if r < 0 {
                -1
            } else {
                1
            }
        } else {
            // SAFETY: `frames` headers, each as above; the kernel only reads
            // what they point at, during the call (it writes `msg_len`).
            unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    frames as u32,
                    0,
                )
            }
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

/// `PACKET_VNET_HDR` (`linux/if_packet.h`).
const PACKET_VNET_HDR: libc::c_int = 15;

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
            let h = headers(src, dst, 1, len as u16, &payload, false);
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
        let h = headers(src, dst, 1, 0, &payload, false);
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
        let (lo, mac) = interface_with(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(Some(lo), super::super::sys::interface_index("lo"));
        assert_eq!(mac, [0; 6]);
        assert!(interface_with([192, 0, 2, 77].into()).is_err());
    }
}
