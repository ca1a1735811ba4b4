//! PEFT LoRA adapters, loaded as PEFT saves them: an adapter directory's
//! `adapter_config.json` and `adapter_model.safetensors` become, per module,
//! A `[r, K]` and B `[N, r]` with the rank and scale PEFT gives the module
//! (`rank_pattern`, `alpha_pattern`, rsLoRA), converted to the element type
//! asked for; several adapters become a [`ServingSet`], packed per module
//! for the multi-adapter entry points.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fused_lora::cudarc::driver::CudaContext;
//! use fused_lora::half::bf16;
//! use fused_lora::peft::{PeftAdapter, ServingSet};
//!
//! let stream = CudaContext::new(0)?.default_stream();
//! let math = PeftAdapter::<bf16>::load("adapters/math")?;
//! let code = PeftAdapter::<bf16>::load("adapters/code")?;
//! let q = math.module("model.layers.0.self_attn.q_proj").expect("targeted");
//! println!("rank {}, scale {}", q.rank, q.scale);
//! let set = ServingSet::pack(&stream, &[("math", &math), ("code", &code)])?;
//! let stack = set.layer("model.layers.0.self_attn.q_proj").expect("packed").stack();
//! let row_index = set.index_of("code"); // Some(1): the index rows using `code` carry
//! # let _ = (stack, row_index);
//! # Ok(())
//! # }
//! ```
//!
//! Not supported, and refused by name: DoRA (`use_dora`), trained biases
//! (`bias`, `lora_bias`), `modules_to_save`, `target_parameters`, other PEFT types, weights in a
//! `.bin` pickle, embedding or convolution adapters.

mod adapter;
pub mod config;
mod device;
pub mod pattern;
pub mod tensors;

pub use adapter::{base_weight_to_nk, PeftAdapter, PeftModule};
pub use config::PeftConfig;
pub use device::{DeviceModule, ServingSet};
