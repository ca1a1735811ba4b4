//! `libcudart.so` with SONAME `libcudart.so.13` (what `-lcudart` records)
//! and the link `libcudart.so.13 -> libcudart.so` beside it, linked against
//! `libcuda.so.1`, whose driver API it calls.

#[path = "../private/build_support.rs"]
mod build_support;
#[path = "src/driver_names.rs"]
mod driver_names;

fn main() {
    println!("cargo:rerun-if-changed=src/driver_names.rs");
    build_support::soname_and_links("libcudart.so", "libcudart.so.13", &["libcudart.so.13"]);
    build_support::link_against_libcuda_calling(&driver_names::DRIVER_FUNCTIONS);
}
