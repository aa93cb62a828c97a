//! A hash map from byte-string keys to small values, with the keys stored back to back in a
//! chunked arena instead of one heap allocation each. For the millions of album and track keys
//! of a large source this saves the per-allocation overhead and pointer (about a third of the
//! registry's memory) and keeps lookups to one slot probe plus one key comparison.
//!
//! The table is open addressing with linear probing over one array of slots. A slot holds a
//! 32-bit tag from the key's hash (0 marks an empty slot), an 8-byte reference (chunk, offset)
//! to the key in the arena, and the value; the key's length sits in the arena in front of the
//! key, on the cache line the comparison reads anyway. Owning the layout is what allows
//! [`KeyMap::prefetch`]: at tens of millions of rows the track map is far larger than the CPU
//! caches, and a probe costs two cache misses (slot, then key). The normaliser hashes a block of
//! rows first and asks for their slots and keys ahead of the probes, so the misses overlap.

use anyhow::Result;
use hashbrown::DefaultHashBuilder;
use std::hash::BuildHasher;

/// Arena chunk size: large enough that chunk bookkeeping is noise, small enough that growing
/// never copies much.
const CHUNK: usize = 4 << 20;

#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
}

/// Where a key starts in the arena: its 4-byte little-endian length, then its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct KeyRef {
    chunk: u32,
    offset: u32,
}

impl Arena {
    fn get(&self, k: KeyRef) -> &[u8] {
        let c = &self.chunks[k.chunk as usize];
        let at = k.offset as usize;
        let len = u32::from_le_bytes(c[at..at + 4].try_into().expect("4 bytes")) as usize;
        &c[at + 4..at + 4 + len]
    }

    fn addr(&self, k: KeyRef) -> *const u8 {
        self.chunks[k.chunk as usize][k.offset as usize..].as_ptr()
    }

    fn push(&mut self, key: &[u8]) -> KeyRef {
        let need = key.len() + 4;
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= need);
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK.max(need)));
        }
        let chunk = self.chunks.len() - 1;
        let c = &mut self.chunks[chunk];
        let offset = c.len();
        c.extend_from_slice(&(key.len() as u32).to_le_bytes());
        c.extend_from_slice(key);
        KeyRef {
            chunk: chunk as u32,
            offset: offset as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot<V> {
    /// From the high half of the key's hash, never 0; 0 marks an empty slot.
    tag: u32,
    key: KeyRef,
    value: V,
}

/// Hints the CPU to bring the cache line at `p` in; a no-op where there is no such hint.
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32) | 1
}

/// Byte-string keys → `V`.
#[derive(Debug)]
pub struct KeyMap<V> {
    hasher: DefaultHashBuilder,
    /// A power of two long (or empty); at most [`KeyMap::max_len`] occupied.
    slots: Vec<Slot<V>>,
    len: usize,
    arena: Arena,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            slots: Vec::new(),
            len: 0,
            arena: Arena::default(),
        }
    }
}

impl<V: Copy + Default> KeyMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash a lookup of `key` uses (for [`KeyMap::prefetch`] and the `_hashed` lookups).
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Linear probing stays short while at most 3/4 of the slots are taken.
    fn max_len(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    /// Asks for the slot a lookup of `hash` starts at, and — if that slot is already in the
    /// cache and holds a key with the same tag — for the key's bytes. Call it once per key a
    /// few rows ahead of the lookup, or twice (the second time finds the slot loaded).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let i = hash as usize & (self.slots.len() - 1);
        prefetch_line(&self.slots[i] as *const Slot<V> as *const u8);
    }

    /// The second step of [`KeyMap::prefetch`]: reads the slot (by now in the cache) and asks
    /// for the key it references when its tag matches.
    #[inline]
    pub fn prefetch_key(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let s = &self.slots[hash as usize & (self.slots.len() - 1)];
        if s.tag == tag_of(hash) {
            prefetch_line(self.arena.addr(s.key));
        }
    }

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> (usize, bool) {
        let mask = self.slots.len() - 1;
        let tag = tag_of(hash);
        let mut i = hash as usize & mask;
        loop {
            let s = &self.slots[i];
            if s.tag == 0 {
                return (i, false);
            }
            if s.tag == tag && self.arena.get(s.key) == key {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the table (or makes the first one) and puts every key in its new place.
    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        let mask = cap - 1;
        for s in old.into_iter().filter(|s| s.tag != 0) {
            let hash = self.hasher.hash_one(self.arena.get(s.key));
            let mut i = hash as usize & mask;
            while self.slots[i].tag != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// The value of `key`, inserting `make()` first when the key is new. `make` may fail; then
    /// nothing is inserted.
    pub fn get_or_try_insert_with(
        &mut self,
        key: &[u8],
        make: impl FnOnce() -> Result<V>,
    ) -> Result<&mut V> {
        let hash = self.hash(key);
        self.get_or_try_insert_hashed(hash, key, make)
    }

    /// [`KeyMap::get_or_try_insert_with`] with `hash` = [`KeyMap::hash`] of `key` (another
    /// hash would put the key where growing the table does not find it again).
    pub(crate) fn get_or_try_insert_hashed(
        &mut self,
        hash: u64,
        key: &[u8],
        make: impl FnOnce() -> Result<V>,
    ) -> Result<&mut V> {
        if self.len >= self.max_len() {
            self.grow();
        }
        let (i, found) = self.find(hash, key);
        if !found {
            let value = make()?;
            let key = self.arena.push(key);
            self.slots[i] = Slot {
                tag: tag_of(hash),
                key,
                value,
            };
            self.len += 1;
        }
        Ok(&mut self.slots[i].value)
    }

    /// The value of `key`, if present.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let hash = self.hash(key);
        self.get_mut_hashed(hash, key)
    }

    /// [`KeyMap::get_mut`] with `hash` = [`KeyMap::hash`] of `key`.
    #[inline]
    pub(crate) fn get_mut_hashed(&mut self, hash: u64, key: &[u8]) -> Option<&mut V> {
        if self.slots.is_empty() {
            return None;
        }
        match self.find(hash, key) {
            (i, true) => Some(&mut self.slots[i].value),
            _ => None,
        }
    }

    /// Bytes held: table slots plus arena chunks (for logs and the benchmark notes).
    pub fn approx_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot<V>>()
            + self
                .arena
                .chunks
                .iter()
                .map(|c| c.capacity())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_once_and_finds_again_across_chunks() {
        let mut m: KeyMap<u64> = KeyMap::default();
        let mut made = 0;
        for round in 0..2 {
            for i in 0..200_000u64 {
                let key = format!("key number {i} with some text to fill chunks");
                let v = *m
                    .get_or_try_insert_with(key.as_bytes(), || {
                        made += 1;
                        Ok(i)
                    })
                    .unwrap();
                assert_eq!(v, i, "round {round}");
            }
        }
        assert_eq!(made, 200_000);
        assert_eq!(m.len(), 200_000);
        assert!(m.arena.chunks.len() > 1, "keys span several chunks");
        // a failing constructor inserts nothing
        assert!(m
            .get_or_try_insert_with(b"new", || Err(anyhow::anyhow!("no")))
            .is_err());
        assert_eq!(m.len(), 200_000);
        assert_eq!(m.get_mut(b"new"), None);
        // keys differing only in case or trailing space are different keys
        *m.get_or_try_insert_with(b"A", || Ok(1)).unwrap() += 0;
        assert_eq!(*m.get_or_try_insert_with(b"a", || Ok(2)).unwrap(), 2);
        assert_eq!(*m.get_or_try_insert_with(b"A ", || Ok(3)).unwrap(), 3);
        assert_eq!(*m.get_or_try_insert_with(b"A", || Ok(9)).unwrap(), 1);
    }

    #[test]
    fn a_key_larger_than_a_chunk() {
        let mut m: KeyMap<u8> = KeyMap::default();
        assert_eq!(m.get_mut(b"nothing yet"), None);
        let big = vec![b'x'; CHUNK + 10];
        m.get_or_try_insert_with(&big, || Ok(1)).unwrap();
        assert_eq!(*m.get_or_try_insert_with(&big, || Ok(2)).unwrap(), 1);
        assert_eq!(*m.get_or_try_insert_with(b"small", || Ok(3)).unwrap(), 3);
        // the empty key is a key of its own
        assert_eq!(*m.get_or_try_insert_with(b"", || Ok(4)).unwrap(), 4);
        assert_eq!(*m.get_or_try_insert_with(b"", || Ok(5)).unwrap(), 4);
        assert_eq!(m.get_mut(&big).copied(), Some(1));
        assert_eq!(m.get_mut(b"absent"), None);
    }

    #[test]
    fn colliding_hashes_keep_keys_apart() {
        // Keys forced onto the same start slot and tag (as many as the first table holds
        // without growing, which would re-place them by their real hashes): linear probing,
        // wrapping around the end, and the key comparison alone must keep them apart.
        let mut m: KeyMap<u32> = KeyMap::default();
        for i in 0..12u32 {
            let v = *m
                .get_or_try_insert_hashed(13, &i.to_le_bytes(), || Ok(i))
                .unwrap();
            assert_eq!(v, i);
        }
        assert_eq!(m.slots.len(), 16, "no growth");
        for i in 0..12u32 {
            assert_eq!(m.get_mut_hashed(13, &i.to_le_bytes()).copied(), Some(i));
        }
        assert_eq!(m.get_mut_hashed(13, b"other"), None);
        assert_eq!(m.len(), 12);
        // prefetching is only a hint: any hash, present or not, is harmless
        for h in [0, 13, u64::MAX, 12345] {
            m.prefetch(h);
            m.prefetch_key(h);
        }
    }

    #[test]
    fn slots_stay_small() {
        // the registry's values are 12 bytes aligned to 4: tag + key reference + value
        assert_eq!(std::mem::size_of::<Slot<[u32; 3]>>(), 24);
        assert_eq!(std::mem::size_of::<Slot<i64>>(), 24);
    }
}
