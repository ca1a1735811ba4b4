//! What the null stream means to an entry point, and the macro that exports
//! an entry point together with its per-thread twin: code compiled with
//! `--default-stream per-thread` calls the `_ptsz` (stream argument) and
//! `_ptds` (synchronous) variants, which differ from the plain ones only in
//! that the null stream is the calling thread's default stream.

use crate::driver::CuStream;
use std::ffi::c_void;

/// `CU_STREAM_PER_THREAD`: the handle of the thread's default stream.
const STREAM_PER_THREAD: usize = 0x2;

/// What the null stream names to an entry point.
#[derive(Clone, Copy)]
pub enum NullStream {
    /// The legacy default stream (the plain entry points).
    Legacy,
    /// The calling thread's per-thread default stream (the `_ptsz` and
    /// `_ptds` entry points).
    PerThread,
}

impl NullStream {
    /// The stream an entry point's `stream` argument names.
    pub fn resolve(self, stream: *mut c_void) -> CuStream {
        match self {
            NullStream::PerThread if stream.is_null() => STREAM_PER_THREAD as CuStream,
            _ => stream,
        }
    }

    /// The stream a synchronous call (no stream argument) is ordered on:
    /// none for the legacy entry points, which use the driver's synchronous
    /// calls; the thread's default stream for the per-thread ones, which wait
    /// for it before returning.
    pub fn synchronous(self) -> Option<CuStream> {
        match self {
            NullStream::Legacy => None,
            NullStream::PerThread => Some(self.resolve(std::ptr::null_mut())),
        }
    }
}

/// Exports C entry points in pairs: a plain one and its per-thread twin.
/// `body(arguments) => { plain / twin; ... }` gives both of each pair those
/// arguments, and each runs `body` with them and its [`NullStream`] inside
/// [`entry`](crate::state::entry), so a failure is the thread's last error.
/// The plain one carries the docs written above the pair (its `# Safety`
/// included); the twin's say it is the plain one with the thread's default
/// stream.
macro_rules! null_stream_entry_points {
    ($(
        $body:ident $arguments:tt => {
            $( $(#[$doc:meta])* $legacy:ident / $per_thread:ident; )+
        }
    )*) => {
        $($(
            null_stream_entry_points!(@pair [$(#[$doc])*] $legacy / $per_thread $arguments => $body);
        )+)*
    };
    (@pair [$(#[$doc:meta])*] $legacy:ident / $per_thread:ident
        ($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $legacy($($arg: $ty),*) -> $crate::state::CudaError {
            $crate::state::entry(|| $body($($arg,)* $crate::null_stream::NullStream::Legacy))
        }

        #[doc = concat!("[`", stringify!($legacy), "`] in code compiled with `--default-stream per-thread`:")]
        #[doc = "the null stream is the calling thread's default stream."]
        #[doc = ""]
        #[doc = "# Safety"]
        #[doc = concat!("As [`", stringify!($legacy), "`].")]
        #[no_mangle]
        pub unsafe extern "C" fn $per_thread($($arg: $ty),*) -> $crate::state::CudaError {
            $crate::state::entry(|| $body($($arg,)* $crate::null_stream::NullStream::PerThread))
        }
    };
}

pub(crate) use null_stream_entry_points;
