//! `libcurand.so` with SONAME `libcurand.so.10` (what `-lcurand` records)
//! and the link `libcurand.so.10 -> libcurand.so` beside it, linked against
//! `libcuda.so.1` for the emulator's private ABI.

#[path = "../private/build_support.rs"]
mod build_support;

fn main() {
    build_support::soname_and_links("libcurand.so", "libcurand.so.10", &["libcurand.so.10"]);
    build_support::link_against_libcuda();
}
