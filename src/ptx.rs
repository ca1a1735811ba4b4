//! The PTX of every kernel family, compiled by `build.rs` from `cuda/*.cu`.
include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
