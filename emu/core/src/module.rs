//! A loaded PTX module: parsed once, lowered to a compact form fast to execute,
//! validated (every instruction known and supported) before any launch.

use std::collections::HashMap;

use crate::memory::GlobalMemory;
use crate::ptx::ir::{Kernel, Space};
use crate::ptx::lexer::tokenize;
use crate::ptx::lower::{initial_bytes, lower_kernel, ModuleScope, Sym};
use crate::ptx::parser::{parse, VarSpace};

// Defined by the front end, which reports them; part of this module's API.
pub use crate::ptx::info::{KernelInfo, LoadError, ParamInfo};

/// A loaded module. Module-scope `.global`/`.const` variables live in device
/// global memory from load until `unload`.
pub struct Module {
    pub(crate) kernels: Vec<Kernel>,
    /// Module-scope `.global`/`.const` variables: name → (address, size).
    globals: HashMap<String, (u64, u64)>,
    /// The PTX text by line, for naming instructions in findings.
    pub(crate) lines: Vec<String>,
}

impl Module {
    /// Parses, lowers and validates `ptx`, allocating its module-scope
    /// variables in `mem` (with their initialisers written).
    pub fn load(ptx: &str, mem: &GlobalMemory) -> Result<Module, LoadError> {
        let tokens = tokenize(ptx)?;
        let tree = parse(&tokens)?;
        let mut globals = HashMap::new();
        let mut syms = HashMap::new();
        let mut allocated = Vec::new();
        let result = (|| {
            for v in tree.vars.iter().filter(|v| matches!(v.space, VarSpace::Global | VarSpace::Const)) {
                if v.is_extern {
                    return Err(LoadError {
                        line: v.line,
                        message: format!("extern variable `{}` cannot be resolved", v.name),
                    });
                }
                if v.size_bytes() > mem.capacity() {
                    return Err(LoadError {
                        line: v.line,
                        message: format!("`{}` does not fit in device memory", v.name),
                    });
                }
                let bytes = initial_bytes(v)?;
                let addr = mem
                    .alloc_named(bytes.len().max(1) as u64, Some(&format!("module global `{}`", v.name)))
                    .map_err(|e| LoadError { line: v.line, message: format!("allocating `{}`: {e}", v.name) })?;
                allocated.push(addr);
                mem.write(addr, &bytes).map_err(|e| LoadError { line: v.line, message: e.to_string() })?;
                globals.insert(v.name.clone(), (addr, bytes.len() as u64));
                syms.insert(v.name.clone(), Sym { space: Space::Global, addr });
            }
            let scope = ModuleScope { globals: &syms, vars: &tree.vars, funcs: &tree.funcs };
            tree.funcs.iter().filter(|f| f.is_entry).map(|f| lower_kernel(f, &scope)).collect::<Result<Vec<_>, _>>()
        })();
        match result {
            Ok(kernels) => Ok(Module { kernels, globals, lines: ptx.lines().map(|l| l.trim().to_string()).collect() }),
            Err(e) => {
                for a in allocated {
                    let _ = mem.free(a);
                }
                Err(e)
            }
        }
    }

    /// Kernel entries (`.entry`), in order of appearance.
    pub fn kernels(&self) -> Vec<&KernelInfo> {
        self.kernels.iter().map(|k| &k.info).collect()
    }

    pub fn kernel(&self, name: &str) -> Option<&KernelInfo> {
        self.find_kernel(name).map(|k| &k.info)
    }

    pub(crate) fn find_kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.info.name == name)
    }

    /// The module's PTX text.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The PTX text of 1-based `line`.
    pub(crate) fn line_text(&self, line: u32) -> &str {
        self.lines.get(line.wrapping_sub(1) as usize).map_or("", |s| s.as_str())
    }

    /// A module-scope `.global` or `.const` variable: `(device address, size)`.
    pub fn global(&self, name: &str) -> Option<(u64, u64)> {
        self.globals.get(name).copied()
    }

    /// The module-scope variable whose storage holds `addr`, if any.
    pub fn global_containing(&self, addr: u64) -> Option<&str> {
        self.globals
            .iter()
            .find(|(_, (base, size))| addr >= *base && addr < base + (*size).max(1))
            .map(|(n, _)| n.as_str())
    }

    /// Frees the module's variables.
    pub fn unload(self, mem: &GlobalMemory) {
        for (addr, _) in self.globals.values() {
            let _ = mem.free(*addr);
        }
    }
}
