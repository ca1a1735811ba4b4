//! The package ships `generated/` (PTX and bindings made from `cuda/`) so that
//! dependents build without nvcc or libclang. A copy that no longer matches
//! `cuda/` would ship stale kernels: this test fails on it, naming the
//! command that refreshes it. (`build.rs` makes the same comparison; on a
//! machine with nvcc it then builds from `cuda/` and only warns.)

#[path = "../build/stamp.rs"]
#[allow(dead_code)]
mod stamp;

use std::path::Path;

#[test]
fn shipped_generated_copy_matches_cuda_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wanted = stamp::stamp(&root.join("cuda"), stamp::SHIPPED_COMPUTE_CAP).expect("read cuda/");
    let shipped = std::fs::read_to_string(root.join("generated/SOURCES")).unwrap_or_default();
    assert!(
        shipped == wanted,
        "generated/ does not match cuda/:\n{}\nrun `{}` and commit generated/",
        stamp::differences(&shipped, &wanted).join("\n"),
        stamp::REFRESH_COMMAND
    );
}

#[test]
fn every_kernel_source_has_its_shipped_ptx() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kernels = std::fs::read_dir(root.join("cuda")).expect("read cuda/");
    for entry in kernels.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "cu") {
            let stem = path.file_stem().expect("file name").to_string_lossy().into_owned();
            let ptx = root.join("generated/ptx").join(format!("{stem}.ptx"));
            let text = std::fs::read_to_string(&ptx)
                .unwrap_or_else(|e| panic!("{}: {e}; run `{}`", ptx.display(), stamp::REFRESH_COMMAND));
            let target = format!(".target sm_{}", stamp::kernel_compute_cap(&stem, stamp::SHIPPED_COMPUTE_CAP));
            assert!(text.contains(&format!("{target}\n")), "{} is not `{target}` PTX", ptx.display());
            let absolute = text.lines().find(|l| l.trim_start().starts_with(".file") && l.contains(" \"/"));
            assert!(absolute.is_none(), "{} names a build machine's path: {absolute:?}", ptx.display());
        }
    }
}

#[test]
fn hopper_sources_compile_for_sm_90a_only() {
    assert_eq!(stamp::kernel_compute_cap("forward_sm90a", "80"), "90a");
    assert_eq!(stamp::kernel_compute_cap("forward_sm90a", "86"), "90a");
    assert_eq!(stamp::kernel_compute_cap("forward", "86"), "86");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wanted = stamp::stamp(&root.join("cuda"), stamp::SHIPPED_COMPUTE_CAP).expect("read cuda/");
    assert!(wanted.contains("hopper_compute_cap 90a"), "the Hopper target is part of the stamp");
}

#[test]
fn stamp_notices_an_edited_source() {
    let dir = std::env::temp_dir().join(format!("fused-lora-stamp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("k.cu"), "__global__ void k() {}\n").expect("write");
    let before = stamp::stamp(&dir, "80").expect("stamp");
    std::fs::write(dir.join("k.cu"), "__global__ void k() { }\n").expect("write");
    let after = stamp::stamp(&dir, "80").expect("stamp");
    std::fs::remove_dir_all(&dir).ok();
    assert_ne!(before, after);
    assert_eq!(stamp::differences(&before, &after).len(), 2, "one line removed, one added");
    assert_ne!(stamp::stamp(Path::new("/nonexistent-dir-for-stamp"), "80").ok(), Some(before));
}
