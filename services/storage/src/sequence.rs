//! How sequential keys are spelled (shared by sequential puts and lock waiter keys).

/// Width of the zero-padded suffix of a sequential key: every u64 fits, so the lexical order
/// of sequential keys is their numeric order.
pub const SEQUENCE_DIGITS: usize = 20;
