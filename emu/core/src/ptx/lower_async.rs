//! Lowering of sm_90's asynchronous-proxy instructions (`async_ir::AsyncOp`):
//! `mbarrier.*`, `cp.async.bulk{.tensor}*`, `fence.proxy.*`, `elect.sync`,
//! `setmaxnreg`, `griddepcontrol`, `barrier.cluster.*`, `mapa`, `getctarank`.

use super::{one_type, Class, Decoded, Mods, Op, Opd, OpdCx, Space};
use crate::ptx::ir::AsyncOp;
use crate::ptx::parser::Operand;
use crate::types::ScalarType as T;

/// Whether `decode` handles this opcode.
pub(super) fn handles(base: &str, m: &Mods) -> bool {
    let has = |s: &str| m.parts.contains(&s);
    match base {
        "mbarrier" | "elect" | "setmaxnreg" | "griddepcontrol" | "mapa" | "getctarank" => true,
        "cp" => m.parts.first() == Some(&"async") && m.parts.get(1) == Some(&"bulk"),
        "barrier" => has("cluster"),
        "fence" => has("proxy") || has("mbarrier_init"),
        _ => false,
    }
}

fn nop(class: Class) -> Decoded {
    (Op::Nop, T::B32, Opd::Sink, Opd::Sink, vec![], class)
}

fn asy(op: AsyncOp, d: Opd, d2: Opd, s: Vec<Opd>, class: Class) -> Decoded {
    (Op::Async(op), T::B64, d, d2, s, class)
}

/// The state space of an mbarrier or bulk-copy address: `.shared{::cta,::cluster}`
/// (the executing CTA's own bytes either way) or generic.
fn shared_or_generic(m: &mut Mods) -> Space {
    if m.one_of(&["shared", "shared::cta", "shared::cluster"]).is_some() {
        Space::Shared
    } else {
        Space::Generic
    }
}

pub(super) fn decode(base: &str, m: &mut Mods, all: &[&Operand], ctx: &super::Ctx) -> Result<Decoded, String> {
    let n = all.len();
    let want = |k: usize| if n == k { Ok(()) } else { Err(format!("expected {k} operands, found {n}")) };
    let cx = |space, ty| OpdCx { ctx, space, ty };
    match base {
        "mbarrier" => mbarrier(m, all, ctx),
        "cp" => bulk(m, all, ctx),
        "fence" => {
            let proxy_async = m.has("proxy") && m.has("async");
            m.parts.clear();
            Ok(if proxy_async {
                asy(AsyncOp::FenceProxyAsync, Opd::Sink, Opd::Sink, vec![], Class::Sync)
            } else {
                nop(Class::Sync)
            })
        }
        "setmaxnreg" | "griddepcontrol" => {
            // Register reallocation and programmatic dependent launch order
            // nothing in a launch that runs alone.
            m.parts.clear();
            Ok(nop(Class::Other))
        }
        "elect" => {
            if !m.has("sync") {
                return Err("elect needs .sync".into());
            }
            want(2)?;
            let c = cx(Space::Generic, T::B32);
            let (d, d2) = c.dst_pair(all[0])?;
            Ok((Op::Async(AsyncOp::Elect), T::B32, d, d2, vec![c.src(all[1])?], Class::Collective))
        }
        "barrier" => {
            m.has("cluster");
            m.has("aligned");
            let wait = if m.has("wait") {
                m.has("acquire");
                true
            } else if m.has("arrive") {
                m.one_of(&["release", "relaxed"]);
                false
            } else {
                return Err("barrier.cluster needs .arrive or .wait".into());
            };
            m.has("aligned");
            want(0)?;
            Ok(asy(AsyncOp::ClusterBarrier { wait }, Opd::Sink, Opd::Sink, vec![], Class::Sync))
        }
        "mapa" | "getctarank" => {
            let space = shared_or_generic(m);
            let ty = one_type(&m.types())?;
            let c = cx(space, ty);
            if base == "mapa" {
                want(3)?;
                let s = vec![c.src(all[1])?, cx(Space::Generic, T::U32).src(all[2])?];
                Ok((Op::Async(AsyncOp::Mapa), ty, c.dst(all[0])?, Opd::Sink, s, Class::Other))
            } else {
                want(2)?;
                let d = cx(Space::Generic, T::U32).dst(all[0])?;
                Ok((Op::Async(AsyncOp::GetCtaRank), T::U32, d, Opd::Sink, vec![c.src(all[1])?], Class::Other))
            }
        }
        _ => Err("unknown opcode".into()),
    }
}

fn mbarrier(m: &mut Mods, all: &[&Operand], ctx: &super::Ctx) -> Result<Decoded, String> {
    let n = all.len();
    let cx = |space, ty| OpdCx { ctx, space, ty };
    let int = cx(Space::Generic, T::U32);
    m.drop_hints();
    let space = shared_or_generic(m);
    let op = m
        .one_of(&[
            "init",
            "inval",
            "arrive",
            "arrive_drop",
            "expect_tx",
            "complete_tx",
            "test_wait",
            "try_wait",
            "pending_count",
        ])
        .ok_or("unknown mbarrier operation")?;
    if one_type(&m.types())? != T::B64 {
        return Err("mbarrier operations are .b64".into());
    }
    let a = cx(space, T::B64);
    let class = Class::Sync;
    let range = |lo: usize, hi: usize| {
        if (lo..=hi).contains(&n) {
            Ok(())
        } else {
            Err(format!("expected {lo} to {hi} operands, found {n}"))
        }
    };
    Ok(match op {
        "init" => {
            range(2, 2)?;
            asy(AsyncOp::MbarInit, Opd::Sink, Opd::Sink, vec![a.src(all[0])?, int.src(all[1])?], class)
        }
        "inval" => {
            range(1, 1)?;
            asy(AsyncOp::MbarInval, Opd::Sink, Opd::Sink, vec![a.src(all[0])?], class)
        }
        "arrive" | "arrive_drop" => {
            let expect_tx = m.has("expect_tx");
            let no_complete = m.has("noComplete");
            range(2 + expect_tx as usize, 3 + expect_tx as usize)?;
            let mut s = vec![a.src(all[1])?];
            s.extend(all[2..].iter().map(|o| int.src(o)).collect::<Result<Vec<_>, _>>()?);
            let op = AsyncOp::MbarArrive { drop: op == "arrive_drop", expect_tx, no_complete };
            asy(op, cx(Space::Generic, T::B64).dst(all[0])?, Opd::Sink, s, class)
        }
        "expect_tx" | "complete_tx" => {
            range(2, 2)?;
            let op = AsyncOp::MbarTx { complete: op == "complete_tx" };
            asy(op, Opd::Sink, Opd::Sink, vec![a.src(all[0])?, int.src(all[1])?], class)
        }
        "test_wait" | "try_wait" => {
            let parity = m.has("parity");
            range(3, 4)?;
            // The suspend-time hint (a fourth operand) bounds how long the
            // wait may block; blocking until the phase completes is allowed.
            let s = vec![a.src(all[1])?, cx(Space::Generic, T::B64).src(all[2])?];
            let op = AsyncOp::MbarWait { parity, blocking: op == "try_wait" };
            (Op::Async(op), T::Pred, cx(Space::Generic, T::Pred).dst(all[0])?, Opd::Sink, s, class)
        }
        _ => {
            range(2, 2)?;
            let s = vec![cx(Space::Generic, T::B64).src(all[1])?];
            (Op::Async(AsyncOp::MbarPendingCount), T::U32, int.dst(all[0])?, Opd::Sink, s, class)
        }
    })
}

/// `[map, {c0, c1, ...}]` as the parser gives it (a two-element list).
fn tensor_operand(o: &Operand, c: &OpdCx, dims: u8) -> Result<(Opd, Opd), String> {
    match o {
        Operand::List(v) if v.len() == 2 => {
            let coords = c.src(&v[1])?;
            match &coords {
                Opd::Vec(x) if x.len() == dims as usize => {}
                _ => return Err(format!("expected {dims} tensor coordinates")),
            }
            Ok((c.src(&v[0])?, coords))
        }
        _ => Err("expected `[tensorMap, {coordinates}]`".into()),
    }
}

fn bulk(m: &mut Mods, all: &[&Operand], ctx: &super::Ctx) -> Result<Decoded, String> {
    let n = all.len();
    let cx = |space, ty| OpdCx { ctx, space, ty };
    m.has("async");
    m.has("bulk");
    let int = cx(Space::Generic, T::U32);
    let g = cx(Space::Generic, T::B64);
    if m.has("commit_group") {
        return Ok(asy(AsyncOp::BulkCommit, Opd::Sink, Opd::Sink, vec![], Class::Sync));
    }
    if m.has("wait_group") {
        m.has("read");
        let keep = match all {
            [Operand::Int(v)] => *v as u32,
            _ => return Err("wait_group needs an immediate".into()),
        };
        return Ok(asy(AsyncOp::BulkWait { keep }, Opd::Sink, Opd::Sink, vec![], Class::Sync));
    }
    if m.has("prefetch") {
        m.parts.clear();
        return Ok(nop(Class::MemGlobal));
    }
    let policy = m.has("L2::cache_hint") as usize;
    let multicast = m.has("multicast::cluster") as usize;
    let tensor = m.has("tensor");
    let dims = if tensor {
        match m.one_of(&["1d", "2d", "3d", "4d", "5d"]) {
            Some(d) => d.as_bytes()[0] - b'0',
            None => return Err("cp.async.bulk.tensor needs .1d to .5d".into()),
        }
    } else {
        0
    };
    if tensor && m.has("im2col") {
        return Err("im2col mode is not supported (only .tile)".into());
    }
    m.has("tile");
    // Destination space first, then source space, in the order written.
    let spaces: Vec<&'static str> = m
        .parts
        .iter()
        .filter_map(|p| ["shared::cluster", "shared::cta", "global"].into_iter().find(|s| s == p))
        .collect();
    let [dst, src] = spaces[..] else {
        return Err("expected a destination and a source state space".into());
    };
    m.has(dst);
    m.has(src);
    let mbar = m.has("mbarrier::complete_tx::bytes");
    let group = m.has("bulk_group");
    let sh = cx(Space::Shared, T::B32);
    let extra = policy + multicast;
    match (dst, src) {
        ("shared::cluster" | "shared::cta", "global") if mbar => {
            // A trailing multicast CTA mask and cache policy change nothing
            // in a cluster of one CTA (larger clusters refuse multicast, see
            // `launch::refuse_multicast`).
            if tensor {
                if n != 3 + extra {
                    return Err(format!("expected {} operands, found {n}", 3 + extra));
                }
                let (map, coords) = tensor_operand(all[1], &g, dims)?;
                let s = vec![sh.src(all[0])?, map, coords, sh.src(all[2])?];
                Ok(asy(AsyncOp::TensorLoad { dims }, Opd::Sink, Opd::Sink, s, Class::MemGlobal))
            } else {
                if n != 4 + extra {
                    return Err(format!("expected {} operands, found {n}", 4 + extra));
                }
                let s = vec![sh.src(all[0])?, g.src(all[1])?, int.src(all[2])?, sh.src(all[3])?];
                Ok(asy(AsyncOp::BulkLoad { from_shared: false }, Opd::Sink, Opd::Sink, s, Class::MemGlobal))
            }
        }
        ("shared::cluster", "shared::cta") if mbar && !tensor => {
            if n != 4 {
                return Err(format!("expected 4 operands, found {n}"));
            }
            let s = vec![sh.src(all[0])?, sh.src(all[1])?, int.src(all[2])?, sh.src(all[3])?];
            Ok(asy(AsyncOp::BulkLoad { from_shared: true }, Opd::Sink, Opd::Sink, s, Class::MemShared))
        }
        ("global", "shared::cta") if group => {
            if tensor {
                if n != 2 + policy {
                    return Err(format!("expected {} operands, found {n}", 2 + policy));
                }
                let (map, coords) = tensor_operand(all[0], &g, dims)?;
                Ok(asy(
                    AsyncOp::TensorStore { dims },
                    Opd::Sink,
                    Opd::Sink,
                    vec![map, coords, sh.src(all[1])?],
                    Class::MemGlobal,
                ))
            } else {
                if n != 3 + policy {
                    return Err(format!("expected {} operands, found {n}", 3 + policy));
                }
                let s = vec![g.src(all[0])?, sh.src(all[1])?, int.src(all[2])?];
                Ok(asy(AsyncOp::BulkStore, Opd::Sink, Opd::Sink, s, Class::MemGlobal))
            }
        }
        _ => Err("unsupported cp.async.bulk direction or completion mechanism".into()),
    }
}
