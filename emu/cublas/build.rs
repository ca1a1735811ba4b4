//! `libcublas.so` with SONAME `libcublas.so.13` (what `-lcublas` records)
//! and the link `libcublas.so.13 -> libcublas.so` beside it, linked against
//! `libcuda.so.1` for the emulator's private ABI.

#[path = "../private/build_support.rs"]
mod build_support;

fn main() {
    build_support::soname_and_links("libcublas.so", "libcublas.so.13", &["libcublas.so.13"]);
    build_support::link_against_libcuda();
}
