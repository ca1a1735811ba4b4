//! Loaded adapters on the device: one module alone, or a serving set of
//! several adapters packed per module into the multi-adapter stacks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::dtype::LoraDType;
use crate::error::{LoraError, Result};
use crate::merge::Adapter;
use crate::packed::PackedAdapters;
use crate::peft::adapter::{PeftAdapter, PeftModule};

/// One module's adapter on the device.
pub struct DeviceModule<T> {
    /// A `[rank, k]`.
    pub a: CudaSlice<T>,
    /// B `[n, rank]`.
    pub b: CudaSlice<T>,
    /// Rank r.
    pub rank: usize,
    /// The scale PEFT gives the module.
    pub scale: f32,
    /// Output features N.
    pub n: usize,
    /// Input features K.
    pub k: usize,
}

impl<T: LoraDType> PeftModule<T> {
    /// Copies A and B to the device on `stream`.
    ///
    /// # Errors
    /// [`LoraError::Driver`] from the allocations or copies.
    pub fn upload(&self, stream: &Arc<CudaStream>) -> Result<DeviceModule<T>> {
        Ok(DeviceModule {
            a: stream.clone_htod(&self.a)?,
            b: stream.clone_htod(&self.b)?,
            rank: self.rank,
            scale: self.scale,
            n: self.n,
            k: self.k,
        })
    }
}

impl<T> DeviceModule<T> {
    /// The adapter for the single-adapter entry points.
    pub fn adapter(&self) -> Adapter<'_, T> {
        Adapter { a: self.a.as_view(), b: self.b.as_view(), rank: self.rank, scale: self.scale }
    }
}

/// Several adapters served together: for each module, their A and B packed
/// into one [`PackedAdapters`] (slot l holds adapter l, of its own rank and
/// scale; the padding up to the largest rank is never read), and each
/// adapter's name with its slot, the index the per-row adapter tensor uses.
pub struct ServingSet<T> {
    names: Vec<String>,
    index: HashMap<String, usize>,
    layers: BTreeMap<String, PackedAdapters<T>>,
}

impl<T: LoraDType> ServingSet<T> {
    /// Packs `adapters` (name, adapter), slot l for the l-th, on `stream`:
    /// one stack per module any of them adapts. An adapter without a module
    /// gets a zero slot there (rank 1, A = B = 0, scale 0), so its rows get
    /// the base layer's output plus an exact zero, as PEFT leaves a module it
    /// does not target; [`PackedAdapters::ranks`] and
    /// [`PackedAdapters::scales`] show such a slot as rank 1, scale 0. A
    /// module must have the same N and K in every adapter that has it.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] for no adapters or a name given twice;
    /// [`LoraError::InAdapter`] wrapping a [`LoraError::PeftFormat`] naming
    /// the module, for an adapter whose N or K of a module differ from an
    /// earlier adapter's; [`LoraError::Driver`] from the copies.
    pub fn pack(stream: &Arc<CudaStream>, adapters: &[(&str, &PeftAdapter<T>)]) -> Result<Self> {
        if adapters.is_empty() {
            return Err(LoraError::InvalidArgument {
                what: "adapters",
                value: "[]".into(),
                reason: "must not be empty",
            });
        }
        let mut index = HashMap::new();
        // Each module's [n, k], from the first adapter that has it.
        let mut shapes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (slot, (name, adapter)) in adapters.iter().enumerate() {
            if index.insert((*name).to_owned(), slot).is_some() {
                return Err(LoraError::InvalidArgument {
                    what: "adapter name",
                    value: (*name).to_owned(),
                    reason: "given twice",
                });
            }
            for (module, m) in &adapter.modules {
                let (n, k) = *shapes.entry(module.as_str()).or_insert((m.n, m.k));
                if (m.n, m.k) != (n, k) {
                    let error = LoraError::PeftFormat {
                        file: adapter.config.file.clone(),
                        item: module.clone(),
                        reason: format!("[n, k] = [{}, {}], but an earlier adapter's is [{n}, {k}]", m.n, m.k),
                    };
                    return Err(LoraError::InAdapter { adapter: slot, error: Box::new(error) });
                }
            }
        }
        let mut layers = BTreeMap::new();
        for (module, &(n, k)) in &shapes {
            let uploaded: Vec<DeviceModule<T>> = adapters
                .iter()
                .map(|(_, adapter)| match adapter.modules.get(*module) {
                    Some(m) => m.upload(stream),
                    None => zero_slot(stream, n, k),
                })
                .collect::<Result<_>>()?;
            let views: Vec<Adapter<'_, T>> = uploaded.iter().map(DeviceModule::adapter).collect();
            // The packing copies are stream-ordered, and cudarc frees the
            // uploads on the same stream, after them.
            layers.insert((*module).to_owned(), PackedAdapters::pack(stream, n, k, &views)?);
        }
        Ok(ServingSet { names: adapters.iter().map(|(name, _)| (*name).to_owned()).collect(), index, layers })
    }

    /// The slot of the adapter called `name`: the index rows that use it carry.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The adapters' names, in slot order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The packed stack of `module`, for the multi-adapter entry points.
    pub fn layer(&self, module: &str) -> Option<&PackedAdapters<T>> {
        self.layers.get(module)
    }

    /// The modules and their stacks, by name.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &PackedAdapters<T>)> {
        self.layers.iter().map(|(name, packed)| (name.as_str(), packed))
    }
}

/// The slot of an adapter without the module: rank 1, zero A and B, scale 0.
fn zero_slot<T: LoraDType>(stream: &Arc<CudaStream>, n: usize, k: usize) -> Result<DeviceModule<T>> {
    Ok(DeviceModule { a: stream.alloc_zeros(k)?, b: stream.alloc_zeros(n)?, rank: 1, scale: 0.0, n, k })
}
