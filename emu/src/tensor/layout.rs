//! Where each matrix element lives in a warp's registers, transcribed from
//! the PTX ISA's "Matrix Fragments for mma.m16n8k16 / mma.m16n8k8 /
//! mma.m16n8k4" tables, with `groupID = lane >> 2` and
//! `threadID_in_group = lane % 4`.

/// The multiplicand layouts this emulator knows (all `.row.col`, M = 16, N = 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputLayout {
    /// m16n8k16, `.f16`/`.bf16`: A a0..a7 in 4 regs, B b0..b3 in 2 regs (2 per reg).
    HalfK16,
    /// m16n8k8, `.f16`/`.bf16`: A a0..a3 in 2 regs, B b0..b1 in 1 reg.
    HalfK8,
    /// m16n8k8, `.tf32`: A a0..a3 in 4 regs, B b0..b1 in 2 regs (1 per reg).
    Tf32K8,
    /// m16n8k4, `.tf32`: A a0..a1 in 2 regs, B b0 in 1 reg.
    Tf32K4,
}

/// Where one element sits: register index and, for 16-bit elements, which
/// half (0 = bits 0..15, 1 = bits 16..31; element `i` of a pair is half `i & 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub reg: usize,
    pub half: u32,
}

impl InputLayout {
    pub fn k(self) -> usize {
        match self {
            InputLayout::HalfK16 => 16,
            InputLayout::HalfK8 | InputLayout::Tf32K8 => 8,
            InputLayout::Tf32K4 => 4,
        }
    }

    fn packed(self) -> bool {
        matches!(self, InputLayout::HalfK16 | InputLayout::HalfK8)
    }

    pub fn a_elements(self) -> usize {
        16 * self.k() / 32
    }

    pub fn b_elements(self) -> usize {
        8 * self.k() / 32
    }

    pub fn a_regs(self) -> usize {
        if self.packed() {
            self.a_elements() / 2
        } else {
            self.a_elements()
        }
    }

    pub fn b_regs(self) -> usize {
        if self.packed() {
            self.b_elements() / 2
        } else {
            self.b_elements()
        }
    }

    pub fn slot(self, i: usize) -> Slot {
        if self.packed() {
            Slot { reg: i / 2, half: (i & 1) as u32 }
        } else {
            Slot { reg: i, half: 0 }
        }
    }

    /// (row, col) in A (16 × K) of element `a_i` held by `lane`.
    pub fn a_coord(self, lane: usize, i: usize) -> (usize, usize) {
        let (g, t) = (lane >> 2, lane % 4);
        match self {
            InputLayout::HalfK16 => (g + 8 * ((i / 2) % 2), 2 * t + (i & 1) + 8 * usize::from(i >= 4)),
            InputLayout::HalfK8 => (g + 8 * usize::from(i >= 2), 2 * t + (i & 1)),
            InputLayout::Tf32K8 => (g + 8 * (i % 2), t + 4 * usize::from(i >= 2)),
            InputLayout::Tf32K4 => (g + 8 * i, t),
        }
    }

    /// (row, col) in B (K × 8) of element `b_i` held by `lane`.
    pub fn b_coord(self, lane: usize, i: usize) -> (usize, usize) {
        let (g, t) = (lane >> 2, lane % 4);
        match self {
            InputLayout::HalfK16 => (2 * t + (i & 1) + 8 * usize::from(i >= 2), g),
            InputLayout::HalfK8 => (2 * t + i, g),
            InputLayout::Tf32K8 => (t + 4 * i, g),
            InputLayout::Tf32K4 => (t, g),
        }
    }
}

/// (row, col) in C/D (16 × 8) of element `c_i`, i in 0..4, held by `lane`;
/// for `.f32` `c_i` is register i, for `.f16` half `i & 1` of register `i / 2`.
pub(crate) fn cd_coord(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (g + 8 * usize::from(i >= 2), 2 * t + (i & 1))
}
