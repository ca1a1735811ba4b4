//! Per-launch counters (docs/emulator.md, "Counters"). Deterministic: the same
//! launch gives the same counts whatever the number of host threads.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub kernel: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Sum over threads of instructions executed (predicated-off ones included, as nvprof's inst_executed_thread does not; see `by_class`).
    pub thread_instructions: u64,
    /// Warp-level instructions issued (one per group of lanes executing an instruction together).
    pub warp_instructions: u64,
    /// Warp instructions by class: "int", "fp32", "fp16", "fp64", "conversion", "control",
    /// "memory_global", "memory_shared", "memory_local", "memory_param", "tensor", "sync", "collective", "special", "other".
    pub warp_instructions_by_class: BTreeMap<String, u64>,
    /// Warp-level tensor-core instructions by shape/type, e.g. "mma.m16n8k16.f32.bf16.bf16.f32".
    pub tensor_instructions: BTreeMap<String, u64>,
    /// Warp-level global memory requests.
    pub global_load_requests: u64,
    pub global_store_requests: u64,
    /// Distinct 32-byte sectors touched, summed over requests (coalescing: an
    /// ideal 4-byte-per-lane warp load is 4 sectors per request).
    pub global_load_sectors: u64,
    pub global_store_sectors: u64,
    /// Distinct global bytes read / written over the whole launch (DRAM floor proxy).
    pub global_bytes_read: u64,
    pub global_bytes_written: u64,
    /// Warp-level shared-memory requests (ld/st/atom/ldmatrix/stmatrix/cp.async destination).
    pub shared_requests: u64,
    /// Shared-memory wavefronts (1 per conflict-free request).
    pub shared_wavefronts: u64,
    /// Wavefronts beyond the ideal, from bank conflicts (ordinary accesses).
    pub shared_bank_conflicts: u64,
    /// Of which from ldmatrix/stmatrix.
    pub ldmatrix_bank_conflicts: u64,
    /// CTA barriers executed (warp-level: one per warp per barrier instruction).
    pub barriers: u64,
    /// Bulk (TMA) copies issued (`cp.async.bulk{.tensor}`), and the bytes they
    /// moved through shared memory (their global sectors and shared wavefronts
    /// are in the counts above).
    pub bulk_copies: u64,
    pub bulk_bytes: u64,
    /// Warp-level requests to another CTA's shared memory of the cluster
    /// (`ld/st.shared::cluster`, generic accesses through `mapa`), and the
    /// bytes they moved (not in the shared counts above).
    pub cluster_shared_requests: u64,
    pub cluster_shared_bytes: u64,
    /// CTAs in the grid, and CTAs actually executed (equal unless sampled).
    pub total_ctas: u64,
    pub sampled_ctas: u64,
    /// Whether only a sample of the CTAs ran; every count above is then the
    /// extrapolation to the whole grid (`PTX_EMU_SAMPLE_CTAS`).
    pub sampled: bool,
}

impl Counters {
    /// One JSON object on one line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        let mut j = String::with_capacity(512);
        j.push('{');
        j.push_str(&format!("\"kernel\":{}", json_string(&self.kernel)));
        j.push_str(&format!(",\"grid\":[{},{},{}]", self.grid[0], self.grid[1], self.grid[2]));
        j.push_str(&format!(",\"block\":[{},{},{}]", self.block[0], self.block[1], self.block[2]));
        let mut num = |name: &str, v: u64| j.push_str(&format!(",\"{name}\":{v}"));
        num("thread_instructions", self.thread_instructions);
        num("warp_instructions", self.warp_instructions);
        j.push_str(&format!(",\"warp_instructions_by_class\":{}", json_map(&self.warp_instructions_by_class)));
        j.push_str(&format!(",\"tensor_instructions\":{}", json_map(&self.tensor_instructions)));
        let fields = [
            ("global_load_requests", self.global_load_requests),
            ("global_store_requests", self.global_store_requests),
            ("global_load_sectors", self.global_load_sectors),
            ("global_store_sectors", self.global_store_sectors),
            ("global_bytes_read", self.global_bytes_read),
            ("global_bytes_written", self.global_bytes_written),
            ("shared_requests", self.shared_requests),
            ("shared_wavefronts", self.shared_wavefronts),
            ("shared_bank_conflicts", self.shared_bank_conflicts),
            ("ldmatrix_bank_conflicts", self.ldmatrix_bank_conflicts),
            ("barriers", self.barriers),
            ("bulk_copies", self.bulk_copies),
            ("bulk_bytes", self.bulk_bytes),
            ("cluster_shared_requests", self.cluster_shared_requests),
            ("cluster_shared_bytes", self.cluster_shared_bytes),
        ];
        for (name, v) in fields {
            j.push_str(&format!(",\"{name}\":{v}"));
        }
        j.push_str(&format!(
            ",\"total_ctas\":{},\"sampled_ctas\":{},\"sampled\":{}",
            self.total_ctas, self.sampled_ctas, self.sampled
        ));
        j.push('}');
        j
    }
}

fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_map(m: &BTreeMap<String, u64>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{}:{v}", json_string(k))).collect();
    format!("{{{}}}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_every_field_and_escapes() {
        let mut c =
            Counters { kernel: "k\"1".into(), grid: [2, 1, 1], block: [64, 1, 1], barriers: 7, ..Default::default() };
        c.warp_instructions_by_class.insert("int".into(), 3);
        c.tensor_instructions.insert("mma.m16n8k16.f32.bf16.bf16.f32".into(), 5);
        let j = c.to_json_line();
        assert!(j.starts_with("{\"kernel\":\"k\\\"1\",\"grid\":[2,1,1],\"block\":[64,1,1]"), "{j}");
        assert!(j.contains("\"warp_instructions_by_class\":{\"int\":3}"));
        assert!(j.contains("\"tensor_instructions\":{\"mma.m16n8k16.f32.bf16.bf16.f32\":5}"));
        assert!(j.contains(",\"barriers\":7,"));
        assert!(j.ends_with(",\"total_ctas\":0,\"sampled_ctas\":0,\"sampled\":false}"), "{j}");
        assert!(!j.contains('\n'));
    }
}
