//! Racecheck's shadow of one CTA's shared memory: per byte, the last writer
//! and up to two readers since the last CTA-wide barrier, each with the
//! warp-synchronisation epoch of its warp at the time (so accesses of one
//! warp separated by `bar.warp.sync` or a collective do not conflict).

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Cell {
    /// CTA barrier epoch the rest of the cell belongs to; older = empty.
    epoch: u32,
    writer: u32,
    writer_wsync: u32,
    reader: [u32; 2],
    reader_wsync: [u32; 2],
    /// Thread whose `cp.async` to this byte has not landed yet, or NONE.
    pending: u32,
}

const EMPTY: Cell =
    Cell { epoch: 0, writer: NONE, writer_wsync: 0, reader: [NONE; 2], reader_wsync: [0; 2], pending: NONE };

/// What racecheck found about one access.
pub(crate) enum Conflict {
    /// Another thread's access, not ordered with this one.
    With { other: u32, other_wrote: bool },
    /// A read of bytes an unfinished `cp.async` of `other` will write.
    AsyncPending { other: u32 },
}

pub(crate) struct RaceShadow {
    cells: Vec<Cell>,
    epoch: u32,
}

impl RaceShadow {
    pub(crate) fn new() -> Self {
        RaceShadow { cells: Vec::new(), epoch: 1 }
    }

    /// Forgets all history (a new CTA with `size` bytes of shared memory).
    pub(crate) fn reset(&mut self, size: usize) {
        self.cells.clear();
        self.cells.resize(size, EMPTY);
        self.epoch = 1;
    }

    /// A CTA-wide barrier: every earlier access is ordered before every later one.
    pub(crate) fn barrier(&mut self) {
        self.epoch += 1;
    }

    /// Records an access by thread `tid` (warp `tid / 32`, whose sync epoch
    /// is `wsync`; `wsync_of` gives the current epoch of any warp) and returns
    /// the first conflict.
    pub(crate) fn access(&mut self, off: usize, tid: u32, write: bool, wsync_now: u32) -> Option<Conflict> {
        let epoch = self.epoch;
        let cell = self.cells.get_mut(off)?;
        if cell.epoch != epoch {
            let pending = cell.pending;
            *cell = EMPTY;
            cell.epoch = epoch;
            cell.pending = pending;
        }
        if cell.pending != NONE {
            return Some(Conflict::AsyncPending { other: cell.pending });
        }
        // Unordered: another thread, and not an earlier access of the same
        // warp separated from now by a warp synchronisation.
        let unordered = |other: u32, other_wsync: u32| {
            other != NONE && other != tid && !(other / 32 == tid / 32 && wsync_now > other_wsync)
        };
        if unordered(cell.writer, cell.writer_wsync) {
            return Some(Conflict::With { other: cell.writer, other_wrote: true });
        }
        if write {
            for k in 0..2 {
                if unordered(cell.reader[k], cell.reader_wsync[k]) {
                    return Some(Conflict::With { other: cell.reader[k], other_wrote: false });
                }
            }
            cell.writer = tid;
            cell.writer_wsync = wsync_now;
        } else if cell.reader[0] == NONE || cell.reader[0] == tid {
            cell.reader[0] = tid;
            cell.reader_wsync[0] = wsync_now;
        } else {
            cell.reader[1] = tid;
            cell.reader_wsync[1] = wsync_now;
        }
        None
    }

    /// Marks bytes as the destination of an unfinished `cp.async` of `tid`.
    pub(crate) fn set_pending(&mut self, off: usize, tid: u32) {
        if let Some(c) = self.cells.get_mut(off) {
            c.pending = tid;
        }
    }

    pub(crate) fn clear_pending(&mut self, off: usize) {
        if let Some(c) = self.cells.get_mut(off) {
            c.pending = NONE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_need_two_threads_one_writing_and_no_sync() {
        let mut s = RaceShadow::new();
        s.reset(16);
        assert!(s.access(0, 1, true, 0).is_none());
        assert!(s.access(0, 1, false, 0).is_none(), "same thread");
        assert!(matches!(s.access(0, 40, false, 0), Some(Conflict::With { other: 1, other_wrote: true })));
        s.barrier();
        assert!(s.access(0, 40, false, 0).is_none());
        assert!(s.access(0, 41, false, 0).is_none(), "two readers");
        assert!(matches!(s.access(0, 2, true, 0), Some(Conflict::With { other: 40, other_wrote: false })));
        // Same warp: ordered by a warp sync in between.
        assert!(s.access(4, 3, true, 5).is_none());
        assert!(s.access(4, 4, false, 6).is_none());
        assert!(s.access(5, 3, true, 5).is_none());
        assert!(s.access(5, 4, false, 5).is_some());
        s.set_pending(8, 7);
        assert!(matches!(s.access(8, 7, false, 0), Some(Conflict::AsyncPending { other: 7 })));
        s.clear_pending(8);
        assert!(s.access(8, 7, true, 0).is_none());
    }
}
