//! A kernel's real registers and static shared memory, as ptxas reports them
//! for one architecture (`ptxas -arch=sm_XX -v`). ptxas is looked for as
//! `$PTX_EMU_PTXAS`, else `ptxas` on `PATH` (scripts/setup.sh puts the
//! toolchain's there). Each kernel is compiled alone (its module with every
//! other entry left out: the crate's backward module is 31 MB of 43 entries,
//! 20 s of ptxas whole and about a tenth of a second per entry), once per
//! architecture and process; the answers are cached in memory.

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

type Report = Result<PtxasEntry, String>;

/// Keyed by the module text's hash, the architecture and the entry.
type Key = (u64, String, String);

fn cache() -> &'static Mutex<HashMap<Key, Report>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Report>>> = OnceLock::new();
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
    let key = (h.finish(), arch.to_string(), kernel.to_string());
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.entry(key.clone()).or_insert_with(|| run(ptx, arch, kernel, key.0)).clone()
}

fn run(ptx: &str, arch: &str, kernel: &str, hash: u64) -> Report {
    let alone = only_entry(ptx, kernel).ok_or_else(|| format!("the module has no entry {kernel}"))?;
    let path = std::env::temp_dir().join(format!("ptx-emu-{}-{hash:016x}-{arch}-{kernel}.ptx", std::process::id()));
    std::fs::write(&path, alone).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
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
        return Err(format!("ptxas -arch={arch} failed on {kernel}: {first}"));
    }
    parse(&text).remove(kernel).ok_or_else(|| format!("ptxas reported no entry {kernel} for {arch}"))
}

/// The name a line declares an entry of (`.visible .entry name(`), if it does.
fn entry_name(line: &str) -> Option<&str> {
    let code = line.split("//").next().unwrap_or("");
    let mut tokens = code.split_whitespace();
    tokens.find(|t| *t == ".entry")?;
    tokens.next().map(|t| t.split('(').next().unwrap_or(t))
}

/// `ptx` with every entry but `kernel` left out (declaration and body, up to
/// the brace that closes the body); globals and `.func`s stay. None when no
/// entry is named `kernel`.
fn only_entry(ptx: &str, kernel: &str) -> Option<String> {
    let mut kept = String::with_capacity(ptx.len().min(1 << 22));
    let mut found = false;
    // Inside an entry left out: its brace depth, and whether its body opened.
    let mut skipping: Option<(i64, bool)> = None;
    for line in ptx.split_inclusive('\n') {
        if skipping.is_none() {
            match entry_name(line) {
                Some(name) if name == kernel => found = true,
                Some(_) => skipping = Some((0, false)),
                None => {}
            }
        }
        let Some((depth, opened)) = skipping.as_mut() else {
            kept.push_str(line);
            continue;
        };
        for c in line.split("//").next().unwrap_or("").chars() {
            match c {
                '{' => {
                    *depth += 1;
                    *opened = true;
                }
                '}' => *depth -= 1,
                _ => {}
            }
        }
        if *opened && *depth == 0 {
            skipping = None;
        }
    }
    found.then_some(kept)
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
    fn one_entry_is_kept_with_the_module_around_it() {
        let ptx = ".version 8.0\n.target sm_80\n.global .align 4 .u32 g;\n\
            .func helper()\n{\n\tret;\n}\n\
            // .globl\ta\n.visible .entry a(\n\t.param .u64 p\n)\n.maxntid 128, 1, 1\n{\n\t{ // inline { braces }\n\t.reg .pred q;\n\t}\n\tret;\n}\n\
            .visible .entry b(\n\t.param .u64 p\n)\n{\n\tret;\n}\n";
        let a = only_entry(ptx, "a").unwrap();
        assert!(a.contains(".global .align 4 .u32 g;") && a.contains(".func helper()"), "{a}");
        assert!(a.contains(".entry a(") && a.contains(".maxntid 128") && !a.contains(".entry b("), "{a}");
        let b = only_entry(ptx, "b").unwrap();
        assert!(b.contains(".entry b(") && !b.contains(".entry a(") && !b.contains(".reg .pred q"), "{b}");
        assert!(b.ends_with("\tret;\n}\n") && b.contains(".func helper()\n{\n\tret;\n}\n"), "{b}");
        assert_eq!(only_entry(ptx, "c"), None);
    }

    #[test]
    fn architecture_specific_targets_assemble_for_their_arch() {
        assert_eq!(specific_arch(".version 8.0\n.target sm_90a\n", "sm_90"), "sm_90a");
        assert_eq!(specific_arch(".version 8.0\n.target sm_80\n", "sm_90"), "sm_90");
        assert_eq!(specific_arch(".target sm_90a\n", "sm_80"), "sm_80");
    }
}
