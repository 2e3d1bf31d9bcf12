//! Attacker processes for the UDP system tests. Every mode has a deadline
//! after which it exits with status 3.
//!
//! - `udp_attack forge SRC>DST[,SRC>DST...] DEADLINE_SECS`: sends forged
//!   protocol frames (setups of every version and size, setup replies,
//!   heartbeats, NAKs, status, closes, and data whose records carry the
//!   marker type id [`MARKER_TYPE`]) with forged IPv4 source addresses
//!   (`SRC`, through a raw socket with `IP_HDRINCL`; port 0 in `SRC` means
//!   a random port per datagram) to each `DST`. Session ids, positions and
//!   lengths are random (some extreme), stream ids mostly the default (1),
//!   checksums valid.
//!   Prints `forging`.
//! - `udp_attack pub URI DEADLINE_SECS`: a real conduit publication (the
//!   URI's `bind=` picks its address) that offers marked messages (type
//!   [`MARKER_TYPE`], 32 bytes of 0xEE) whenever it is connected, and
//!   reopens when refused or disconnected. Prints `publishing`, and
//!   `connected` each time a subscription accepted it.
//!
//! Nothing the attacker sends can pass the subscriber of `udp_node sub`:
//! its messages are type 1 with a sequence check.

use std::net::SocketAddrV4;
use std::process::exit;
use std::time::{Duration, Instant};

use conduit::{Error, Publication};
use conduit_proto::frame::seal;

/// The type id of every message the attacker hopes to get delivered.
const MARKER_TYPE: u32 = 0x0BAD_0BAD;

fn deadline_watch(secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("udp_attack: deadline of {secs}s reached");
        exit(3);
    });
}

struct Rnd(u64);

impl Rnd {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A position: small, random, or near the top of the range.
    fn position(&mut self) -> u64 {
        match self.next() % 4 {
            0 => self.next() % 1_000_000,
            1 => u64::MAX - self.next() % 4096,
            2 => (self.next() % (1 << 62)) & !7,
            _ => self.next(),
        }
    }
}

/// One forged frame in `buf`: a 16-byte header (version, kind, flags,
/// session, stream, checksum) and a body by kind; returns its length.
fn forge_frame(r: &mut Rnd, buf: &mut [u8; 1400]) -> usize {
    let kind = [1u8, 1, 2, 3, 3, 4, 5, 6, 8][(r.next() % 9) as usize];
    let version = [1u8, 2, 2, 3][(r.next() % 4) as usize];
    let flags = [0u16, 1, 2, 4, 8, 16, 32][(r.next() % 7) as usize];
    buf.fill(0);
    buf[0] = version;
    buf[1] = kind;
    buf[2..4].copy_from_slice(&flags.to_le_bytes());
    buf[4..8].copy_from_slice(&(r.next() as u32).to_le_bytes());
    // The default stream id (1) mostly: it is no secret.
    let stream = if r.next() % 4 == 0 {
        r.next() as u32
    } else {
        1
    };
    buf[8..12].copy_from_slice(&stream.to_le_bytes());
    let put =
        |buf: &mut [u8; 1400], at: usize, v: u64| buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let len = match kind {
        // Setup (v1: 40 bytes; v2: 72 with a nonce and a cookie).
        1 => {
            buf[16..18].copy_from_slice(&1u16.to_le_bytes());
            buf[18..20].copy_from_slice(&2u16.to_le_bytes());
            buf[20..22].copy_from_slice(&1408u16.to_le_bytes());
            buf[24..28].copy_from_slice(&(r.next() as u32).to_le_bytes());
            let p = r.position();
            put(buf, 32, p);
            for b in &mut buf[40..72] {
                *b = r.next() as u8;
            }
            if r.next() % 2 == 0 {
                40
            } else {
                72
            }
        }
        // Data: one record per datagram, or several, with the marker.
        3 => {
            let p = r.position();
            put(buf, 16, p);
            let mut at = 24;
            for _ in 0..1 + r.next() % 8 {
                buf[at..at + 2].copy_from_slice(&32u16.to_le_bytes());
                buf[at + 2] = 0x80 | 0x40;
                buf[at + 4..at + 8].copy_from_slice(&MARKER_TYPE.to_le_bytes());
                buf[at + 8..at + 40].fill(0xEE);
                at += 40;
            }
            at
        }
        // NAK: a count and up to 32 ranges.
        5 => {
            let n = (r.next() % 33) as usize;
            buf[16..18].copy_from_slice(&(n as u16).to_le_bytes());
            for i in 0..n {
                let from = r.position();
                put(buf, 24 + i * 16, from);
                put(buf, 32 + i * 16, from.wrapping_add(r.next() % (1 << 24)));
            }
            24 + n * 16
        }
        // Setup reply, heartbeat, status, close: positions and ids.
        _ => {
            for at in [16, 24, 32, 40, 48, 56, 64] {
                let p = r.position();
                put(buf, at, p);
            }
            [24, 32, 40, 72][(r.next() % 4) as usize]
        }
    };
    seal(&mut buf[..len], true);
    len
}

/// The one's-complement sum used by the IPv4 header checksum.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    !(s as u16)
}

fn forge(pairs: &str) {
    let pairs: Vec<(SocketAddrV4, SocketAddrV4)> = pairs
        .split(',')
        .map(|p| {
            let (s, d) = p.split_once('>').expect("SRC>DST");
            (s.parse().expect("SRC"), d.parse().expect("DST"))
        })
        .collect();
    // SAFETY: a plain socket(2) call; checked below. IPPROTO_RAW implies
    // IP_HDRINCL: we write the IPv4 header ourselves.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        eprintln!("raw socket: {}", std::io::Error::last_os_error());
        exit(1);
    }
    let mut r = Rnd(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut frame = [0u8; 1400];
    let mut pkt = [0u8; 1428];
    println!("forging");
    let mut n = 0u64;
    loop {
        for (src, dst) in &pairs {
            let len = forge_frame(&mut r, &mut frame);
            let sport = if src.port() == 0 {
                1024 + (r.next() % 60000) as u16
            } else {
                src.port()
            };
            let total = 28 + len;
            pkt[..28].fill(0);
            pkt[0] = 0x45;
            pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            pkt[4..6].copy_from_slice(&(r.next() as u16).to_be_bytes());
            pkt[8] = 64;
            pkt[9] = libc::IPPROTO_UDP as u8;
            pkt[12..16].copy_from_slice(&src.ip().octets());
            pkt[16..20].copy_from_slice(&dst.ip().octets());
            let c = ip_checksum(&pkt[..20]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
            pkt[20..22].copy_from_slice(&sport.to_be_bytes());
            pkt[22..24].copy_from_slice(&dst.port().to_be_bytes());
            pkt[24..26].copy_from_slice(&((8 + len) as u16).to_be_bytes());
            // UDP checksum 0: none (allowed for IPv4).
            pkt[28..total].copy_from_slice(&frame[..len]);
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `pkt` holds `total` initialized bytes and `to` is a
            // live sockaddr_in of the size passed; the kernel only reads.
            unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    total,
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
            }
        }
        n += 1;
        if n % 32 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn publish(uri: &str) {
    println!("publishing");
    let msg = [0xEEu8; 32];
    loop {
        let mut p = match Publication::open(uri) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("udp_attack pub: open: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let tried = Instant::now();
        while !p.is_connected() && tried.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !p.is_connected() {
            continue;
        }
        println!("connected");
        loop {
            match p.offer(MARKER_TYPE, &msg) {
                Ok(_) => {}
                Err(Error::BackPressured) => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => break,
            }
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        a.get(i).map(|s| s.as_str()).unwrap_or_else(|| {
            eprintln!("usage: see the module docs of udp_attack");
            exit(2)
        })
    };
    let num = |i: usize| -> u64 { arg(i).parse().expect("number") };
    match arg(0) {
        "forge" => {
            deadline_watch(num(2));
            forge(arg(1));
        }
        "pub" => {
            deadline_watch(num(2));
            publish(arg(1));
        }
        other => {
            eprintln!("unknown mode {other}");
            exit(2);
        }
    }
}
