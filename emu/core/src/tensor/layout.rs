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

    pub fn packed(self) -> bool {
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

    /// (row, col) in A (16 × K) of element `a_i` held by `lane`: the ISA's
    /// table as written. The emulator reads fragments through its inverse,
    /// `a_source`, which the tests check against this.
    #[cfg(test)]
    pub fn a_coord(self, lane: usize, i: usize) -> (usize, usize) {
        let (g, t) = (lane >> 2, lane % 4);
        match self {
            InputLayout::HalfK16 => (g + 8 * ((i / 2) % 2), 2 * t + (i & 1) + 8 * usize::from(i >= 4)),
            InputLayout::HalfK8 => (g + 8 * usize::from(i >= 2), 2 * t + (i & 1)),
            InputLayout::Tf32K8 => (g + 8 * (i % 2), t + 4 * usize::from(i >= 2)),
            InputLayout::Tf32K4 => (g + 8 * i, t),
        }
    }

    /// (row, col) in B (K × 8) of element `b_i` held by `lane` (the ISA's
    /// table; see `a_coord`).
    #[cfg(test)]
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

impl InputLayout {
    /// The inverse of `a_coord` (the ISA's table, kept for the tests): the
    /// (lane, element index) holding `A[row][col]`.
    pub fn a_source(self, row: usize, col: usize) -> (usize, usize) {
        let (g, upper) = (row % 8, row / 8);
        match self {
            InputLayout::HalfK16 => (4 * g + (col % 8) / 2, (col & 1) + 2 * upper + 4 * (col / 8)),
            InputLayout::HalfK8 => (4 * g + col / 2, (col & 1) + 2 * upper),
            InputLayout::Tf32K8 => (4 * g + col % 4, upper + 2 * (col / 4)),
            InputLayout::Tf32K4 => (4 * g + col, upper),
        }
    }

    /// The inverse of `b_coord`: the (lane, element index) holding `B[row][col]`.
    pub fn b_source(self, row: usize, col: usize) -> (usize, usize) {
        let g = col;
        match self {
            InputLayout::HalfK16 => (4 * g + (row % 8) / 2, (row & 1) + 2 * (row / 8)),
            InputLayout::HalfK8 => (4 * g + row / 2, row & 1),
            InputLayout::Tf32K8 => (4 * g + row % 4, row / 4),
            InputLayout::Tf32K4 => (4 * g + row, 0),
        }
    }
}

/// (row, col) in C/D (16 × 8) of element `c_i`, i in 0..4, held by `lane`;
/// for `.f32` `c_i` is register i, for `.f16` half `i & 1` of register `i / 2`.
#[cfg(test)]
pub(crate) fn cd_coord(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (g + 8 * usize::from(i >= 2), 2 * t + (i & 1))
}

/// The inverse of `cd_coord`: the (lane, element index) holding `C[row][col]`.
pub(crate) fn cd_source(row: usize, col: usize) -> (usize, usize) {
    (4 * (row % 8) + col / 2, (col & 1) + 2 * (row / 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element of A, B and C/D is held by exactly one (lane, element).
    #[test]
    fn each_layout_covers_every_element_once() {
        for layout in [InputLayout::HalfK16, InputLayout::HalfK8, InputLayout::Tf32K8, InputLayout::Tf32K4] {
            let k = layout.k();
            let mut a = vec![0u32; 16 * k];
            let mut b = vec![0u32; k * 8];
            for lane in 0..32 {
                for i in 0..layout.a_elements() {
                    let (r, c) = layout.a_coord(lane, i);
                    a[r * k + c] += 1;
                }
                for i in 0..layout.b_elements() {
                    let (r, c) = layout.b_coord(lane, i);
                    b[r * 8 + c] += 1;
                }
            }
            assert!(a.iter().all(|&n| n == 1), "{layout:?} A");
            assert!(b.iter().all(|&n| n == 1), "{layout:?} B");
        }
        let mut cd = [0u32; 128];
        for lane in 0..32 {
            for i in 0..4 {
                let (r, c) = cd_coord(lane, i);
                cd[r * 8 + c] += 1;
            }
        }
        assert!(cd.iter().all(|&n| n == 1));
        for lane in 0..32 {
            for i in 0..4 {
                let (r, c) = cd_coord(lane, i);
                assert_eq!(cd_source(r, c), (lane, i), "C[{r}][{c}]");
            }
        }
    }

    #[test]
    fn sources_invert_coordinates() {
        for layout in [InputLayout::HalfK16, InputLayout::HalfK8, InputLayout::Tf32K8, InputLayout::Tf32K4] {
            for lane in 0..32 {
                for i in 0..layout.a_elements() {
                    let (r, c) = layout.a_coord(lane, i);
                    assert_eq!(layout.a_source(r, c), (lane, i), "{layout:?} A[{r}][{c}]");
                }
                for i in 0..layout.b_elements() {
                    let (r, c) = layout.b_coord(lane, i);
                    assert_eq!(layout.b_source(r, c), (lane, i), "{layout:?} B[{r}][{c}]");
                }
            }
        }
    }

    #[test]
    fn register_counts_match_the_isa() {
        let counts = |l: InputLayout| (l.a_regs(), l.b_regs());
        assert_eq!(counts(InputLayout::HalfK16), (4, 2));
        assert_eq!(counts(InputLayout::HalfK8), (2, 1));
        assert_eq!(counts(InputLayout::Tf32K8), (4, 2));
        assert_eq!(counts(InputLayout::Tf32K4), (2, 1));
    }
}
