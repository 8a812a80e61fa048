//! A generation-checked handle registry: handles are plain integers that
//! carry a kind bit, a generation and a slot index, so a stale, foreign or
//! made-up handle is an error, never a crash.

use std::sync::{Arc, RwLock};

const INDEX_BITS: u32 = 24;
const GEN_BITS: u32 = 28;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
/// Bit 52: 0 for one registry kind, 1 for the other. Every handle stays below
/// 2^53, so it is exact as a JavaScript number.
const KIND_SHIFT: u32 = INDEX_BITS + GEN_BITS;

struct Slot<T> {
    generation: u64,
    value: Option<Arc<T>>,
}

pub struct Registry<T> {
    kind: u64,
    inner: RwLock<Inner<T>>,
}

struct Inner<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
}

impl<T> Registry<T> {
    /// `kind` is 0 or 1; two registries of different kinds never accept each
    /// other's handles.
    pub const fn new(kind: u64) -> Self {
        Registry {
            kind: kind & 1,
            inner: RwLock::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    fn encode(&self, index: usize, generation: u64) -> u64 {
        (self.kind << KIND_SHIFT) | ((generation & GEN_MASK) << INDEX_BITS) | (index as u64 + 1)
    }

    fn decode(&self, handle: u64) -> Option<(usize, u64)> {
        if handle >> KIND_SHIFT != self.kind {
            return None;
        }
        let index = (handle & INDEX_MASK).checked_sub(1)? as usize;
        Some((index, (handle >> INDEX_BITS) & GEN_MASK))
    }

    /// Stores `value`; `None` when all 2^24-1 slots are in use.
    pub fn insert(&self, value: Arc<T>) -> Option<u64> {
        self.insert_with(|_| value)
    }

    /// Stores the value `make` builds from its own handle.
    pub fn insert_with(&self, make: impl FnOnce(u64) -> Arc<T>) -> Option<u64> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = inner.free.pop() {
            let slot = &mut inner.slots[index];
            // Generation 0 is skipped so a zeroed handle field never matches.
            slot.generation = (slot.generation + 1) & GEN_MASK;
            if slot.generation == 0 {
                slot.generation = 1;
            }
            let handle = self.encode(index, slot.generation);
            inner.slots[index].value = Some(make(handle));
            return Some(handle);
        }
        let index = inner.slots.len();
        if index as u64 >= INDEX_MASK {
            return None;
        }
        let handle = self.encode(index, 1);
        inner.slots.push(Slot {
            generation: 1,
            value: Some(make(handle)),
        });
        Some(handle)
    }

    pub fn get(&self, handle: u64) -> Option<Arc<T>> {
        let (index, generation) = self.decode(handle)?;
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let slot = inner.slots.get(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.value.clone()
    }

    /// Frees the handle; later lookups of it fail even when the slot is reused.
    pub fn remove(&self, handle: u64) -> Option<Arc<T>> {
        let (index, generation) = self.decode(handle)?;
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let slot = inner.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let value = slot.value.take()?;
        inner.free.push(index);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_nonzero_below_2_53_and_kind_checked() {
        let a: Registry<u32> = Registry::new(0);
        let b: Registry<u32> = Registry::new(1);
        let ha = a.insert(Arc::new(1)).unwrap();
        let hb = b.insert(Arc::new(2)).unwrap();
        assert!(ha != 0 && hb != 0 && ha < 1 << 53 && hb < 1 << 53);
        assert!(a.get(hb).is_none() && b.get(ha).is_none());
        assert_eq!(*a.get(ha).unwrap(), 1);
        assert!(a.get(0).is_none() && a.get(u64::MAX).is_none() && a.get(12345).is_none());
    }

    #[test]
    fn freed_handles_stay_invalid_when_slots_are_reused() {
        let r: Registry<u32> = Registry::new(0);
        let h1 = r.insert(Arc::new(1)).unwrap();
        assert_eq!(*r.remove(h1).unwrap(), 1);
        assert!(r.remove(h1).is_none());
        let h2 = r.insert(Arc::new(2)).unwrap();
        assert_ne!(h1, h2);
        assert_eq!(h1 & INDEX_MASK, h2 & INDEX_MASK, "slot reused");
        assert!(r.get(h1).is_none());
        assert_eq!(*r.get(h2).unwrap(), 2);
    }

    #[test]
    fn many_handles_round_trip() {
        let r: Registry<usize> = Registry::new(1);
        let hs: Vec<u64> = (0..1000).map(|i| r.insert(Arc::new(i)).unwrap()).collect();
        for (i, h) in hs.iter().enumerate() {
            assert_eq!(*r.get(*h).unwrap(), i);
        }
        for h in hs.iter().step_by(2) {
            r.remove(*h).unwrap();
        }
        for (i, h) in hs.iter().enumerate() {
            assert_eq!(r.get(*h).is_some(), i % 2 == 1);
        }
    }
}
