//! State of the providers that outlives a poll (UQPay's access tokens, one per credential set,
//! and their mint pauses). The scheduler owns one [`SharedState`] and hands it to every
//! provider it builds, across polls and reloads; nothing of it is process-wide.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One part per provider type that needs one, created on first use. Each provider keeps its
/// own type here, so this layer knows none of them.
#[derive(Default)]
pub struct SharedState {
    parts: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl SharedState {
    /// The part of type `T`, the same one every time for this state.
    pub fn part<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        // Only a map of handles: still consistent after a panic elsewhere.
        let mut parts = crate::sync::lock(&self.parts);
        let part = parts
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        part.downcast::<T>()
            .unwrap_or_else(|_| unreachable!("parts are keyed by their type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicU32);

    #[test]
    fn each_state_has_its_own_part_of_each_type() {
        let state = SharedState::default();
        let a = state.part::<Counter>();
        a.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(Arc::ptr_eq(&a, &state.part::<Counter>()));
        let other = SharedState::default();
        assert!(!Arc::ptr_eq(&a, &other.part::<Counter>()));
        assert!(!Arc::ptr_eq(
            &state.part::<Counter>(),
            &Arc::new(Counter::default())
        ));
    }
}
