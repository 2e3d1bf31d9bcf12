//! Version negotiation: the highest version both ranges contain.

/// The highest version in both inclusive ranges, or `None` when they do not overlap.
pub fn negotiate(local: (u16, u16), remote: (u16, u16)) -> Option<u16> {
    let lo = local.0.max(remote.0).max(1);
    let hi = local.1.min(remote.1).min(u16::from(u8::MAX));
    (lo <= hi).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::negotiate;

    #[test]
    fn highest_common_version() {
        assert_eq!(negotiate((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate((1, 1), (1, 1)), Some(1));
        assert_eq!(negotiate((1, 1), (2, 3)), None);
        assert_eq!(negotiate((4, 9), (1, 3)), None);
        assert_eq!(negotiate((0, 0), (0, 0)), None);
    }
}
