//! `libcublasLt.so` with SONAME `libcublasLt.so.13` (what `-lcublasLt`
//! records) and the link `libcublasLt.so.13 -> libcublasLt.so` beside it,
//! linked against `libcuda.so.1` for the emulator's private ABI.

#[path = "../private/build_support.rs"]
mod build_support;

fn main() {
    build_support::soname_and_links("libcublasLt.so", "libcublasLt.so.13", &["libcublasLt.so.13"]);
    build_support::link_against_libcuda();
}
