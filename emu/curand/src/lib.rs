//! cuRAND's host API on the emulated device: `libcurand.so` (SONAME
//! `libcurand.so.10`) with the C ABI of `curand.h` for what cudarc's
//! `curand` module and candle call — generators, seed, offset, stream,
//! uniform and normal numbers in f32 and f64.
//!
//! Every pseudo-random generator type is served by one counter-based
//! generator (Philox4x32-10, [`philox`]): element `i` of a generator's
//! sequence depends only on the seed and `i`, so results are deterministic
//! per seed and offset, and each call continues where the previous one
//! stopped, as cuRAND's do. The values are not NVIDIA's (cuRAND's XORWOW
//! and its Philox stream layout are not reproduced): code may rely on the
//! distributions, not on the numbers. Uniform values lie in (0, 1], as
//! cuRAND's; normal values come from Box-Muller on pairs of uniforms, so a
//! normal request must be of even length (`LENGTH_NOT_MULTIPLE`, as cuRAND).
//! The numbers are written on the generator's stream through the emulator's
//! private ABI, with memcheck: an output range past its allocation is a
//! finding.

#![allow(non_camel_case_types)]

mod generator;
mod philox;

use generator::{Distribution, Generator};
use ptx_emu_private::{on_stream, write, Access, DevicePtr, Region};
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub type curandStatus_t = u32;
pub type curandGenerator_t = *mut c_void;

pub const CURAND_STATUS_SUCCESS: curandStatus_t = 0;
pub const CURAND_STATUS_NOT_INITIALIZED: curandStatus_t = 101;
pub const CURAND_STATUS_TYPE_ERROR: curandStatus_t = 103;
pub const CURAND_STATUS_OUT_OF_RANGE: curandStatus_t = 104;
pub const CURAND_STATUS_LENGTH_NOT_MULTIPLE: curandStatus_t = 105;
pub const CURAND_STATUS_LAUNCH_FAILURE: curandStatus_t = 201;
pub const CURAND_STATUS_INTERNAL_ERROR: curandStatus_t = 999;

/// cuRAND 10.4.0 (CUDA 13.0).
const VERSION: c_int = 10_400;

type Status = Result<(), curandStatus_t>;

fn guard(body: impl FnOnce() -> Status) -> curandStatus_t {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => CURAND_STATUS_SUCCESS,
        Ok(Err(status)) => status,
        Err(_) => CURAND_STATUS_INTERNAL_ERROR,
    }
}

#[derive(Default)]
struct Table {
    next: usize,
    generators: HashMap<usize, Generator>,
}

/// Generators by handle (small non-zero integers disguised as pointers, so a
/// destroyed or forged one is an error, not a crash).
fn table() -> MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn with_generator<T>(handle: curandGenerator_t, f: impl FnOnce(&mut Generator) -> Result<T, u32>) -> Result<T, u32> {
    f(table().generators.get_mut(&(handle as usize)).ok_or(CURAND_STATUS_NOT_INITIALIZED)?)
}

fn update(handle: curandGenerator_t, change: impl FnOnce(&mut Generator)) -> Status {
    with_generator(handle, |g| {
        change(g);
        Ok(())
    })
}

/// # Safety
/// `generator` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn curandCreateGenerator(generator: *mut curandGenerator_t, rng_type: c_int) -> curandStatus_t {
    guard(|| {
        if generator.is_null() {
            return Err(CURAND_STATUS_NOT_INITIALIZED);
        }
        // CURAND_RNG_PSEUDO_DEFAULT, XORWOW, MRG32K3A, MTGP32, MT19937,
        // PHILOX4_32_10; the quasi-random types (2xx) are not emulated.
        if !matches!(rng_type, 100 | 101 | 121 | 141 | 142 | 161) {
            return Err(CURAND_STATUS_TYPE_ERROR);
        }
        let mut table = table();
        table.next += 0x10;
        let handle = 0x1000 + table.next;
        table.generators.insert(handle, Generator::default());
        generator.write(handle as curandGenerator_t);
        Ok(())
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn curandDestroyGenerator(generator: curandGenerator_t) -> curandStatus_t {
    guard(|| table().generators.remove(&(generator as usize)).map(|_| ()).ok_or(CURAND_STATUS_NOT_INITIALIZED))
}

/// Also restarts the sequence at the generator's offset, as in cuRAND.
///
/// # Safety
/// Any values may be passed.
#[no_mangle]
pub unsafe extern "C" fn curandSetPseudoRandomGeneratorSeed(generator: curandGenerator_t, seed: u64) -> curandStatus_t {
    guard(|| update(generator, |g| g.set_seed(seed)))
}

/// # Safety
/// Any values may be passed.
#[no_mangle]
pub unsafe extern "C" fn curandSetGeneratorOffset(generator: curandGenerator_t, offset: u64) -> curandStatus_t {
    guard(|| update(generator, |g| g.set_offset(offset)))
}

/// # Safety
/// Any values may be passed; the stream is checked when numbers are written.
#[no_mangle]
pub unsafe extern "C" fn curandSetStream(generator: curandGenerator_t, stream: *mut c_void) -> curandStatus_t {
    guard(|| update(generator, |g| g.stream = stream as usize))
}

/// # Safety
/// `version` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn curandGetVersion(version: *mut c_int) -> curandStatus_t {
    guard(|| {
        if version.is_null() {
            return Err(CURAND_STATUS_OUT_OF_RANGE);
        }
        version.write(VERSION);
        Ok(())
    })
}

/// Draws `n` numbers of `distribution` and writes them at `output` on the
/// generator's stream; the generator advances only if they were written.
fn generate<T: ptx_emu_private::Element>(
    call: &'static CStr,
    handle: curandGenerator_t,
    output: DevicePtr,
    n: usize,
    distribution: Distribution,
    convert: impl Fn(f64) -> T,
) -> Status {
    let (stream, values) = with_generator(handle, |g| {
        if matches!(distribution, Distribution::Normal { .. }) && n % 2 != 0 {
            return Err(CURAND_STATUS_LENGTH_NOT_MULTIPLE);
        }
        Ok((g.stream, g.peek(distribution, n)))
    })?;
    let data: Vec<T> = values.into_iter().map(convert).collect();
    on_stream(stream, || write(Access { call, operand: c"outputPtr" }, Region::contiguous(output, n), &data))
        .map_err(|_| CURAND_STATUS_LAUNCH_FAILURE)?;
    update(handle, |g| g.advance(n))
}

/// # Safety
/// `output` is a device address of `n` floats.
#[no_mangle]
pub unsafe extern "C" fn curandGenerateUniform(
    generator: curandGenerator_t,
    output: *mut f32,
    n: usize,
) -> curandStatus_t {
    guard(|| {
        generate(c"curandGenerateUniform", generator, output as DevicePtr, n, Distribution::Uniform32, |x| x as f32)
    })
}

/// # Safety
/// `output` is a device address of `n` doubles.
#[no_mangle]
pub unsafe extern "C" fn curandGenerateUniformDouble(
    generator: curandGenerator_t,
    output: *mut f64,
    n: usize,
) -> curandStatus_t {
    guard(|| {
        generate(c"curandGenerateUniformDouble", generator, output as DevicePtr, n, Distribution::Uniform64, |x| x)
    })
}

/// # Safety
/// `output` is a device address of `n` floats.
#[no_mangle]
pub unsafe extern "C" fn curandGenerateNormal(
    generator: curandGenerator_t,
    output: *mut f32,
    n: usize,
    mean: f32,
    stddev: f32,
) -> curandStatus_t {
    let distribution = Distribution::Normal { mean: f64::from(mean), stddev: f64::from(stddev) };
    guard(|| generate(c"curandGenerateNormal", generator, output as DevicePtr, n, distribution, |x| x as f32))
}

/// # Safety
/// `output` is a device address of `n` doubles.
#[no_mangle]
pub unsafe extern "C" fn curandGenerateNormalDouble(
    generator: curandGenerator_t,
    output: *mut f64,
    n: usize,
    mean: f64,
    stddev: f64,
) -> curandStatus_t {
    let distribution = Distribution::Normal { mean, stddev };
    guard(|| generate(c"curandGenerateNormalDouble", generator, output as DevicePtr, n, distribution, |x| x))
}

/// Raw 32-bit values.
///
/// # Safety
/// `output` is a device address of `n` 32-bit words.
#[no_mangle]
pub unsafe extern "C" fn curandGenerate(generator: curandGenerator_t, output: *mut u32, n: usize) -> curandStatus_t {
    guard(|| generate(c"curandGenerate", generator, output as DevicePtr, n, Distribution::Bits32, |x| x as u32))
}
