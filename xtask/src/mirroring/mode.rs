//! What a vendoring run does with the lock: which digests it copies.

/// Which digests a run copies, and what it does with the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The lock's digests; tags it lacks are resolved and added. `whole_list`: the run covers
    /// the whole list, so lock entries the list no longer names are dropped.
    Default { whole_list: bool },
    /// The lock's digests only; the lock is never written.
    Locked,
    /// Resolve the tags of these images (all when empty) anew and rewrite the lock.
    Update(Vec<String>),
    /// Compare upstream, lock and destination.
    Check,
}
