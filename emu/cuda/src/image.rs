//! Recognising what `cuModuleLoadData` was handed. The emulator runs PTX
//! text only; cubin (ELF) and fatbin images, which a real driver would
//! accept, are refused with `CUDA_ERROR_INVALID_IMAGE` rather than misread.

use crate::result::{DriverResult, CUDA_ERROR_INVALID_IMAGE};
use std::ffi::{c_char, CStr};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// A fatbin's header magic, little-endian.
const FATBIN_MAGIC: [u8; 4] = 0xBA55_ED50u32.to_le_bytes();
/// The magic of the wrapper struct nvcc puts around an embedded fatbin.
const FATBIN_WRAPPER_MAGIC: [u8; 4] = 0x4662_43B1u32.to_le_bytes();

/// The PTX text of a module image, or `CUDA_ERROR_INVALID_IMAGE`.
///
/// # Safety
/// `image` must be non-null and point to either a NUL-terminated string or a
/// binary image at least 4 bytes long (what the driver API requires).
pub unsafe fn ptx_text_of_image<'a>(image: *const c_char) -> DriverResult<&'a str> {
    // Binary images carry no length, so look at the first bytes one at a
    // time, stopping at a NUL: never read past the end of a short string.
    let mut head = [0u8; 4];
    for (index, slot) in head.iter_mut().enumerate() {
        *slot = *image.add(index).cast::<u8>();
        if *slot == 0 {
            break;
        }
    }
    if [ELF_MAGIC, FATBIN_MAGIC, FATBIN_WRAPPER_MAGIC].contains(&head) {
        return Err(CUDA_ERROR_INVALID_IMAGE);
    }
    ptx_text(CStr::from_ptr(image).to_bytes())
}

/// Accepts `bytes` as PTX if it is UTF-8 text with `.version` and `.target`
/// directives (every module nvcc writes starts with both).
pub fn ptx_text(bytes: &[u8]) -> DriverResult<&str> {
    let text = std::str::from_utf8(bytes).map_err(|_| CUDA_ERROR_INVALID_IMAGE)?;
    if has_directive(text, ".version") && has_directive(text, ".target") {
        Ok(text)
    } else {
        Err(CUDA_ERROR_INVALID_IMAGE)
    }
}

fn has_directive(text: &str, directive: &str) -> bool {
    text.lines()
        .any(|line| line.trim_start().strip_prefix(directive).is_some_and(|rest| rest.starts_with(char::is_whitespace)))
}

/// `.version X.Y` as `X*10+Y` (what `CU_FUNC_ATTRIBUTE_PTX_VERSION` reports); 0 if absent.
pub fn ptx_version(text: &str) -> i32 {
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix(".version"))
        .and_then(|rest| {
            let (major, minor) = rest.trim().split_once('.')?;
            let minor = minor.split(|c: char| !c.is_ascii_digit()).next()?;
            Some(major.parse::<i32>().ok()? * 10 + minor.parse::<i32>().ok()?)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "//\n// Generated\n.version 9.0\n.target sm_80\n.address_size 64\n";

    #[test]
    fn accepts_ptx_text() {
        assert_eq!(ptx_text(PTX.as_bytes()), Ok(PTX));
        let c_text = std::ffi::CString::new(PTX).unwrap();
        assert_eq!(unsafe { ptx_text_of_image(c_text.as_ptr()) }, Ok(PTX));
    }

    #[test]
    fn refuses_binary_images() {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend_from_slice(b"\x02\x01\x01\0.version 9.0\n.target sm_80\n\0");
        assert_eq!(unsafe { ptx_text_of_image(elf.as_ptr().cast()) }, Err(CUDA_ERROR_INVALID_IMAGE));
        let mut fatbin = FATBIN_MAGIC.to_vec();
        fatbin.extend_from_slice(&[1, 0, 0x10, 0, 0, 0, 0, 0]);
        assert_eq!(unsafe { ptx_text_of_image(fatbin.as_ptr().cast()) }, Err(CUDA_ERROR_INVALID_IMAGE));
    }

    #[test]
    fn refuses_text_without_directives_and_short_strings() {
        assert_eq!(ptx_text(b".target sm_80\n"), Err(CUDA_ERROR_INVALID_IMAGE));
        assert_eq!(ptx_text(b"// .version 9.0 in a comment\n.target sm_80\n"), Err(CUDA_ERROR_INVALID_IMAGE));
        assert_eq!(ptx_text(b".versionX 9.0\n.target sm_80\n"), Err(CUDA_ERROR_INVALID_IMAGE));
        assert_eq!(ptx_text(&[0xff, 0xfe, b'\n']), Err(CUDA_ERROR_INVALID_IMAGE));
        // A two-byte string: the sniffing must stop at its NUL.
        assert_eq!(unsafe { ptx_text_of_image(c"x".as_ptr()) }, Err(CUDA_ERROR_INVALID_IMAGE));
    }

    #[test]
    fn reads_the_ptx_version() {
        assert_eq!(ptx_version(PTX), 90);
        assert_eq!(ptx_version(".version 8.5 // comment\n"), 85);
        assert_eq!(ptx_version(".target sm_80\n"), 0);
    }
}
