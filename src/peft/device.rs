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
    /// Packs `adapters` (name, adapter), slot l for the l-th, on `stream`.
    /// Every adapter must have the same modules, each of the same N and K
    /// in every adapter.
    ///
    /// # Errors
    /// [`LoraError::InvalidArgument`] for no adapters or a name given twice;
    /// [`LoraError::InAdapter`] wrapping a [`LoraError::PeftFormat`] for an
    /// adapter whose modules, N or K differ from the first adapter's;
    /// [`LoraError::Driver`] from the copies.
    pub fn pack(stream: &Arc<CudaStream>, adapters: &[(&str, &PeftAdapter<T>)]) -> Result<Self> {
        let Some((_, first)) = adapters.first() else {
            return Err(LoraError::InvalidArgument {
                what: "adapters",
                value: "[]".into(),
                reason: "must not be empty",
            });
        };
        let mut index = HashMap::new();
        for (slot, (name, adapter)) in adapters.iter().enumerate() {
            if index.insert((*name).to_owned(), slot).is_some() {
                return Err(LoraError::InvalidArgument {
                    what: "adapter name",
                    value: (*name).to_owned(),
                    reason: "given twice",
                });
            }
            check_same_modules(first, adapter)
                .map_err(|error| LoraError::InAdapter { adapter: slot, error: Box::new(error) })?;
        }
        let mut layers = BTreeMap::new();
        for (module, reference) in &first.modules {
            let uploaded: Vec<DeviceModule<T>> =
                adapters.iter().map(|(_, adapter)| adapter.modules[module].upload(stream)).collect::<Result<_>>()?;
            let views: Vec<Adapter<'_, T>> = uploaded.iter().map(DeviceModule::adapter).collect();
            // The packing copies are stream-ordered: the uploads may be freed
            // once they are enqueued, as cudarc frees on the stream too.
            layers.insert(module.clone(), PackedAdapters::pack(stream, reference.n, reference.k, &views)?);
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

/// `adapter` has `first`'s modules, with the same N and K.
fn check_same_modules<T>(first: &PeftAdapter<T>, adapter: &PeftAdapter<T>) -> Result<()> {
    let file = adapter.config.file.clone();
    let format = |item: &str, reason: String| LoraError::PeftFormat { file: file.clone(), item: item.into(), reason };
    for (name, module) in &first.modules {
        let Some(other) = adapter.modules.get(name) else {
            return Err(format(
                name,
                "module missing: every adapter of a serving set must have the same modules".into(),
            ));
        };
        if (other.n, other.k) != (module.n, module.k) {
            return Err(format(
                name,
                format!("[n, k] = [{}, {}], but the first adapter's is [{}, {}]", other.n, other.k, module.n, module.k),
            ));
        }
    }
    if let Some(extra) = adapter.modules.keys().find(|name| !first.modules.contains_key(*name)) {
        return Err(format(
            extra,
            "module not in the first adapter: every adapter of a serving set must have the same modules".into(),
        ));
    }
    Ok(())
}
