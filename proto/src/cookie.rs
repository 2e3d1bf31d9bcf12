//! Unpredictable values (session ids, initial positions, nonces, secrets) and the stateless
//! setup cookie.
//!
//! Real endpoints take their values from the OS's CSPRNG; seeded ones (the simulator, tests)
//! from a [`Rng`], so that a run can be replayed. The cookie is the first 16 bytes of
//! HMAC-SHA256 under a receiver secret of the setup's source address, session id, stream id,
//! sender nonce and a one-second time bucket: the receiver recomputes it and stores nothing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::canonical;
use super::frame::{COOKIE_LEN, NONCE_LEN};
use super::rng::Rng;

/// Where an endpoint's unpredictable values come from.
#[derive(Debug)]
pub(crate) enum Entropy {
    /// Reproducible: derived from a seed (simulation and tests).
    Seeded(Rng),
    /// The operating system's CSPRNG.
    Os,
}

impl Entropy {
    /// Fills `out`.
    pub(crate) fn fill(&mut self, out: &mut [u8]) -> Result<(), String> {
        match self {
            Entropy::Seeded(rng) => {
                for chunk in out.chunks_mut(8) {
                    let b = rng.next_u64().to_le_bytes();
                    chunk.copy_from_slice(&b[..chunk.len()]);
                }
                Ok(())
            }
            Entropy::Os => SystemRandom::new()
                .fill(out)
                .map_err(|_| "the operating system's random source failed".to_owned()),
        }
    }

    /// A random non-zero 32-bit id.
    pub(crate) fn nonzero_u32(&mut self) -> Result<u32, String> {
        loop {
            let mut b = [0u8; 4];
            self.fill(&mut b)?;
            let v = u32::from_le_bytes(b);
            if v != 0 {
                return Ok(v);
            }
        }
    }

    /// A random stream position: a multiple of 8 below 2^62 (far from overflow, aligned).
    pub(crate) fn position(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b) & ((1 << 62) - 8))
    }
}

/// Keyed generators of one receiver: cookies and per-session nonces.
pub(crate) struct Secrets {
    cookie_key: hmac::Key,
    nonce_key: hmac::Key,
    nonces: u64,
    /// Forks made along this chain ([`Secrets::fork`]): only the newest of a chain forks.
    forks: u64,
    epoch: Instant,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl Secrets {
    /// Secrets of 32 bytes each from `entropy`; time buckets count from `epoch`.
    pub(crate) fn new(entropy: &mut Entropy, epoch: Instant) -> Result<Secrets, String> {
        let mut k = [0u8; 64];
        entropy.fill(&mut k)?;
        Ok(Secrets {
            cookie_key: hmac::Key::new(hmac::HMAC_SHA256, &k[..32]),
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &k[32..]),
            nonces: 0,
            forks: 0,
            epoch,
        })
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn mac(
        &self,
        bucket: u64,
        from: SocketAddr,
        sid: u32,
        stream: u32,
        nonce: &[u8; NONCE_LEN],
    ) -> [u8; COOKIE_LEN] {
        let mut ctx = hmac::Context::with_key(&self.cookie_key);
        let from = canonical(from);
        match from.ip() {
            IpAddr::V4(ip) => ctx.update(&ip.octets()),
            IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&from.port().to_le_bytes());
        ctx.update(&sid.to_le_bytes());
        ctx.update(&stream.to_le_bytes());
        ctx.update(nonce);
        ctx.update(&bucket.to_le_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
        out
    }

    /// The cookie for a setup from `from` now.
    pub(crate) fn cookie(
        &self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        stream: u32,
        nonce: &[u8; NONCE_LEN],
    ) -> [u8; COOKIE_LEN] {
        self.mac(self.bucket(now), from, sid, stream, nonce)
    }

    /// Whether `cookie` was issued for this setup in the current or the previous bucket.
    pub(crate) fn verify(
        &self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        stream: u32,
        nonce: &[u8; NONCE_LEN],
        cookie: &[u8; COOKIE_LEN],
    ) -> bool {
        let b = self.bucket(now);
        let current = ct_eq(&self.mac(b, from, sid, stream, nonce), cookie);
        let previous = b > 0 && ct_eq(&self.mac(b - 1, from, sid, stream, nonce), cookie);
        current | previous
    }

    /// The same cookie and nonce keys for another receiver of the same subscription (one per
    /// session, see `Sessions`): cookies one issues the others accept. Its nonce counter
    /// starts in a range of its own, so no two of them draw the same nonce.
    pub(crate) fn fork(&mut self) -> Secrets {
        self.forks += 1;
        Secrets {
            cookie_key: self.cookie_key.clone(),
            nonce_key: self.nonce_key.clone(),
            nonces: self.forks << 40,
            // Forks of a chain (each acceptor forks the next, see `Sessions`) stay distinct.
            forks: self.forks,
            epoch: self.epoch,
        }
    }

    /// A fresh nonce for a session (a PRF of a counter under a random key: unpredictable,
    /// never repeated, and no call to the OS on the receive path).
    pub(crate) fn nonce(&mut self, sid: u32) -> [u8; NONCE_LEN] {
        self.nonces += 1;
        let mut ctx = hmac::Context::with_key(&self.nonce_key);
        ctx.update(&self.nonces.to_le_bytes());
        ctx.update(&sid.to_le_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        out
    }
}

/// Compares without an early exit (a cookie is not guessed byte by byte from timing).
fn ct_eq(a: &[u8; COOKIE_LEN], b: &[u8; COOKIE_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cookies_bind_address_session_and_time() {
        let t0 = Instant::now();
        let s = Secrets::new(&mut Entropy::Seeded(Rng::new(1)), t0).unwrap();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let n = [7u8; NONCE_LEN];
        let c = s.cookie(t0, a, 9, 1, &n);
        assert!(s.verify(t0, a, 9, 1, &n, &c));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        assert!(s.verify(t0, mapped, 9, 1, &n, &c));
        assert!(s.verify(t0 + Duration::from_millis(1999), a, 9, 1, &n, &c));
        assert!(!s.verify(t0 + Duration::from_secs(2), a, 9, 1, &n, &c));
        assert!(!s.verify(t0, "10.0.0.1:5001".parse().unwrap(), 9, 1, &n, &c));
        assert!(!s.verify(t0, a, 8, 1, &n, &c));
        assert!(!s.verify(t0, a, 9, 2, &n, &c));
        assert!(!s.verify(t0, a, 9, 1, &[8; NONCE_LEN], &c));
        assert!(!s.verify(t0, a, 9, 1, &n, &[0; COOKIE_LEN]));
        let other = Secrets::new(&mut Entropy::Seeded(Rng::new(2)), t0).unwrap();
        assert!(!other.verify(t0, a, 9, 1, &n, &c));
    }

    #[test]
    fn positions_are_aligned_and_far_from_overflow() {
        let mut e = Entropy::Os;
        for _ in 0..100 {
            let p = e.position().unwrap();
            assert!(p % 8 == 0 && p < 1 << 62);
        }
        assert_ne!(e.nonzero_u32().unwrap(), 0);
    }
}
