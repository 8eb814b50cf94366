//! Per-device constants: small tensors made from host data (a quantizer's branch parameters,
//! the candidate bit widths of a distribution, an index range), built once per device and key
//! and then reused.
//!
//! Building such a tensor on a CUDA device is a host-to-device copy, and a copy from pageable
//! host memory makes the host wait for the stream. Done per layer per step (the reference
//! builds them per call as well), that is dozens of small copies and host stalls per step.
//! [`cached`] builds each constant once and hands out clones (a candle tensor is a
//! reference-counted handle, so a clone is free and shares the device memory).
//!
//! The cache is keyed by the device's [`DeviceLocation`] and a caller-chosen `(tag, key)`, and
//! a hit must also be the *same* device (`Device::same_device`): two `Device::new_cuda(0)`
//! handles are different devices to candle, and mixing their tensors is an error. Constants
//! are never mutated (they are plain tensors, not `Var`s), so sharing them is safe. Entries
//! live for the life of the process; there are only a few per device (one per distinct bit
//! list and tag).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::{Device, DeviceLocation, Tensor};

use crate::error::{Error, Result};

type Key = (DeviceLocation, &'static str, Vec<u32>);

fn cache() -> &'static Mutex<HashMap<Key, Vec<Tensor>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Vec<Tensor>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The constant `(tag, key)` on `device`: built by `build(device)` on first use, then the same
/// tensor (a clone of the handle) on every later call with an equal tag, key and device.
///
/// `tag` names what the constant is (e.g. `"hwgq.branch_params"`) and `key` the values it
/// depends on (e.g. the bit widths); together they must determine the tensor completely.
pub fn cached(
    device: &Device,
    tag: &'static str,
    key: &[u32],
    build: impl FnOnce(&Device) -> Result<Tensor>,
) -> Result<Tensor> {
    let k = (device.location(), tag, key.to_vec());
    let poisoned = || Error::msg("edmips constant cache poisoned (a thread panicked while holding it)");
    {
        let guard = cache().lock().map_err(|_| poisoned())?;
        if let Some(t) = guard.get(&k).and_then(|v| v.iter().find(|t| t.device().same_device(device))) {
            return Ok(t.clone());
        }
    }
    // Built outside the lock (it may launch device work); a concurrent builder of the same
    // constant just adds an equal tensor, which is harmless.
    let t = build(device)?;
    cache().lock().map_err(|_| poisoned())?.entry(k).or_default().push(t.clone());
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn built_once_per_device_and_key() {
        let dev = Device::Cpu;
        let mut builds = 0;
        let mut get = |key: &[u32]| {
            cached(&dev, "test.consts", key, |d| {
                builds += 1;
                Ok(Tensor::new(key, d)?.to_dtype(DType::F32)?)
            })
            .unwrap()
        };
        let a = get(&[1, 2]);
        let b = get(&[1, 2]);
        let c = get(&[2, 1]);
        assert_eq!(a.id(), b.id(), "the second call returns the cached tensor");
        assert_ne!(a.id(), c.id());
        assert_eq!(c.to_vec1::<f32>().unwrap(), vec![2.0, 1.0]);
        assert_eq!(builds, 2);
    }
}
