//! A reader of fuzz input that never fails: past the end every read is zero.

/// Runs the program `data` encodes: `op` decodes and runs one operation at a
/// time (checking its invariants), until the input is used up or `max_ops`
/// operations ran.
pub fn run_ops(data: &[u8], max_ops: usize, mut op: impl FnMut(&mut Input<'_>)) {
    let mut inp = Input::new(data);
    for _ in 0..max_ops {
        if inp.is_empty() {
            break;
        }
        op(&mut inp);
    }
}

/// Bytes of a fuzz input, read front to back.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    /// A byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A flag (lowest bit of a byte).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A length below `max`, from a u16.
    pub fn below(&mut self, max: usize) -> usize {
        usize::from(self.u16()) % max.max(1)
    }

    /// A 64-bit value near `base` most of the time (so positions land in the
    /// windows the handlers care about), near the top of the range sometimes,
    /// raw otherwise; a multiple of 8 (positions must be) unless raw.
    pub fn near(&mut self, base: u64) -> u64 {
        match self.u8() % 8 {
            0 => self.u64(),
            1 => (u64::MAX - u64::from(self.u16())) & !7,
            2 => base.wrapping_sub(u64::from(self.u16()) & !7),
            _ => base.wrapping_add(u64::from(self.u16()) & !7),
        }
    }
}
