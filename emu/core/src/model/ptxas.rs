//! A kernel's real registers and static shared memory, as ptxas reports them
//! for one architecture (`ptxas -arch=sm_XX -v`). ptxas is looked for as
//! `$PTX_EMU_PTXAS`, else `ptxas` on `PATH` (scripts/setup.sh puts the
//! toolchain's there). Each module text is compiled once per architecture
//! and process; the answers are cached in memory.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// What ptxas said about one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtxasEntry {
    pub registers: u32,
    pub static_shared_bytes: u32,
}

type Report = Result<HashMap<String, PtxasEntry>, String>;

fn cache() -> &'static Mutex<HashMap<(u64, String), Report>> {
    static CACHE: OnceLock<Mutex<HashMap<(u64, String), Report>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `arch`, or its architecture-specific form (`sm_90a`) when the module
/// targets that: ptxas assembles `.target sm_90a` PTX (wgmma, setmaxnreg)
/// only for `-arch=sm_90a`, the same GPU's registers.
fn specific_arch(ptx: &str, arch: &str) -> String {
    let specific = format!("{arch}a");
    let target = ptx.lines().find_map(|line| line.trim_start().strip_prefix(".target"));
    match target {
        Some(rest) if rest.split(|c: char| c == ',' || c.is_whitespace()).any(|t| t == specific) => specific,
        _ => arch.to_string(),
    }
}

fn ptxas_program() -> PathBuf {
    std::env::var_os("PTX_EMU_PTXAS").map_or_else(|| PathBuf::from("ptxas"), PathBuf::from)
}

/// ptxas's registers and static shared memory for `kernel` of the module
/// whose PTX is `ptx`, compiled for `arch`; an error says why there is none
/// (no ptxas, the PTX does not assemble for that architecture, no such entry).
pub fn entry(ptx: &str, arch: &str, kernel: &str) -> Result<PtxasEntry, String> {
    let arch = &specific_arch(ptx, arch);
    let mut h = DefaultHasher::new();
    ptx.hash(&mut h);
    let key = (h.finish(), arch.to_string());
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    let report = cache.entry(key.clone()).or_insert_with(|| run(ptx, arch, key.0));
    match report {
        Ok(entries) => {
            entries.get(kernel).copied().ok_or_else(|| format!("ptxas reported no entry {kernel} for {arch}"))
        }
        Err(e) => Err(e.clone()),
    }
}

fn run(ptx: &str, arch: &str, hash: u64) -> Report {
    let path = std::env::temp_dir().join(format!("ptx-emu-{}-{hash:016x}-{arch}.ptx", std::process::id()));
    std::fs::write(&path, ptx).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let output = Command::new(ptxas_program())
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg("-o")
        .arg("/dev/null")
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let output = output.map_err(|e| format!("cannot run ptxas: {e}"))?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let first = text.lines().find(|l| l.contains("error")).unwrap_or("").trim().to_string();
        return Err(format!("ptxas -arch={arch} failed: {first}"));
    }
    Ok(parse(&text))
}

/// Entries of `ptxas -v` output: "Compiling entry function 'k' for 'sm_80'"
/// starts an entry; its "Used N registers, ... M bytes smem" line follows.
pub fn parse(text: &str) -> HashMap<String, PtxasEntry> {
    let mut entries = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().map(str::to_string);
            continue;
        }
        let Some(name) = &current else { continue };
        let Some(used) = line.split("Used ").nth(1) else {
            continue;
        };
        let registers = used.split_whitespace().next().and_then(|n| n.parse().ok());
        let smem = line
            .split(',')
            .find(|part| part.trim_end().ends_with("bytes smem"))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if let Some(registers) = registers {
            entries.insert(name.clone(), PtxasEntry { registers, static_shared_bytes: smem });
        }
        current = None;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registers_and_static_shared_per_entry() {
        let text = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'a' for 'sm_80'\n\
            ptxas info    : Function properties for a\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 96 registers, used 1 barriers, 720 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'b' for 'sm_80'\n\
            ptxas info    : Used 40 registers, used 1 barriers, 4352 bytes smem, 380 bytes cmem[0]\n";
        let e = parse(text);
        assert_eq!(e["a"], PtxasEntry { registers: 96, static_shared_bytes: 0 });
        assert_eq!(e["b"], PtxasEntry { registers: 40, static_shared_bytes: 4352 });
    }

    #[test]
    fn architecture_specific_targets_assemble_for_their_arch() {
        assert_eq!(specific_arch(".version 8.0\n.target sm_90a\n", "sm_90"), "sm_90a");
        assert_eq!(specific_arch(".version 8.0\n.target sm_80\n", "sm_90"), "sm_90");
        assert_eq!(specific_arch(".target sm_90a\n", "sm_80"), "sm_80");
    }
}
