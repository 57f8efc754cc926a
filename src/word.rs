//! The slot word: a slot's state and generation packed into one `u32`.
//!
//! ```text
//!  31                                                   2   1   0
//! +-------------------------------------------------------+-------+
//! |                generation (30 bits)                   | state |
//! +-------------------------------------------------------+-------+
//!   state: 0 empty, 1 available, 2 in_use, 3 draining
//! ```
//!
//! The generation names one *connection instance*: it advances (mod 2^30) exactly when a slot
//! leaves `empty` (an `add`, or a `reserve` that will be filled), and stays put while the same
//! connection is acquired and returned. So every `(state, generation)` value a slot takes is
//! taken during one contiguous stretch of one connection's life, a compare-and-swap from an
//! exact expected word can only succeed while the slot still holds the connection the caller
//! saw, and a [`ConnId`](crate::ConnId) or token of a closed connection matches nothing until
//! the slot has held 2^30 further connections (the *horizon*: at one new connection per
//! second on one slot, 34 years; at 1,000 per second, 12 days — and a stale id must also be
//! kept that long and then used).
//!
//! `in_use` and `draining` differ only in [`DRAINING_BIT`], so "held by the token with
//! generation g" is one mask and one compare: `word & !DRAINING_BIT == pack(InUse, g)`.

/// Bits that hold the state.
pub(crate) const STATE_BITS: u32 = 2;
/// Mask of the state bits (the low bits of the word).
pub(crate) const STATE_MASK: u32 = (1 << STATE_BITS) - 1;
/// Where the generation starts.
pub(crate) const GEN_SHIFT: u32 = STATE_BITS;
/// Bits that hold the generation.
pub(crate) const GEN_BITS: u32 = u32::BITS - STATE_BITS;
/// Largest generation; the next one after it is 0.
pub(crate) const GEN_MAX: u32 = (1 << GEN_BITS) - 1;
/// The bit that tells `draining` from `in_use` (and `available` from `empty`).
pub(crate) const DRAINING_BIT: u32 = 1;

const _: () = assert!(STATE_BITS + GEN_BITS == u32::BITS);
const _: () = assert!(
    GEN_BITS >= 30,
    "the design promises 2^30 generations per slot"
);
const _: () = assert!(SlotState::Draining as u32 == SlotState::InUse as u32 | DRAINING_BIT);

/// The lifecycle of a slot.
///
/// | from | to | transition | who | success ordering |
/// |---|---|---|---|---|
/// | `Empty(g)` | `InUse(g+1)` | `add` / `reserve` | adder | `Acquire` |
/// | `Available(g)` | `InUse(g)` | `acquire`, or a drainer taking an idle connection | acquirer | `Acquire` |
/// | `InUse(g)` | `Available(g)` | `release(keep = true)` | holder | `SeqCst` (Release + wake-up protocol) |
/// | `InUse(g)` | `Draining(g)` | `drain`, `drain_all` | anyone | `Relaxed` |
/// | `InUse(g)` / `Draining(g)` | `Empty(g)` | `release(keep = false)`, release of a draining slot | holder | `SeqCst` (Release + wake-up protocol) |
///
/// No other transition exists: `Available` is never closed in place (a drainer first moves it
/// to `InUse`, becoming its holder), and `Draining` never returns to `Available`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// No connection; `add` or `reserve` may claim it.
    Empty = 0,
    /// An idle connection; `acquire` may claim it.
    Available = 1,
    /// Held by exactly one token (or reservation).
    InUse = 2,
    /// Held, and to be closed by the holder's release.
    Draining = 3,
}

/// Packs a state and a generation into a slot word.
#[inline(always)]
pub(crate) const fn pack(state: SlotState, gen: u32) -> u32 {
    debug_assert!(gen <= GEN_MAX);
    (gen << GEN_SHIFT) | state as u32
}

/// The state of a slot word.
#[inline(always)]
pub(crate) const fn state_of(word: u32) -> SlotState {
    match word & STATE_MASK {
        0 => SlotState::Empty,
        1 => SlotState::Available,
        2 => SlotState::InUse,
        _ => SlotState::Draining,
    }
}

/// The generation of a slot word.
#[inline(always)]
pub(crate) const fn gen_of(word: u32) -> u32 {
    word >> GEN_SHIFT
}

/// The generation after `gen`, wrapping after [`GEN_MAX`].
#[inline(always)]
pub(crate) const fn next_gen(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_MAX
}

/// The same generation with another state.
#[inline(always)]
pub(crate) const fn with_state(word: u32, state: SlotState) -> u32 {
    (word & !STATE_MASK) | state as u32
}

/// Whether `word` is held (`InUse` or `Draining`) by the holder whose word is `held`
/// (`held` is always an `InUse` word).
#[inline(always)]
pub(crate) const fn is_held_by(word: u32, held: u32) -> bool {
    word & !DRAINING_BIT == held
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SlotState; 4] = [
        SlotState::Empty,
        SlotState::Available,
        SlotState::InUse,
        SlotState::Draining,
    ];

    #[test]
    fn layout_widths_are_pinned() {
        assert_eq!(STATE_BITS, 2);
        assert_eq!(GEN_BITS, 30);
        assert_eq!(GEN_MAX, (1 << 30) - 1);
        assert_eq!(STATE_MASK, 0b11);
    }

    #[test]
    fn pack_round_trips_every_state_and_edge_generation() {
        for state in ALL {
            for gen in [0, 1, 2, 0x0123_4567, GEN_MAX - 1, GEN_MAX] {
                let w = pack(state, gen);
                assert_eq!(state_of(w), state);
                assert_eq!(gen_of(w), gen);
            }
        }
    }

    #[test]
    fn next_gen_wraps_only_after_2_pow_30() {
        assert_eq!(next_gen(0), 1);
        assert_eq!(next_gen(GEN_MAX - 1), GEN_MAX);
        assert_eq!(next_gen(GEN_MAX), 0);
    }

    #[test]
    fn with_state_keeps_generation() {
        let w = pack(SlotState::InUse, 77);
        assert_eq!(
            with_state(w, SlotState::Draining),
            pack(SlotState::Draining, 77)
        );
        assert_eq!(with_state(w, SlotState::Empty), pack(SlotState::Empty, 77));
    }

    #[test]
    fn held_check_accepts_in_use_and_draining_of_same_generation_only() {
        let held = pack(SlotState::InUse, 5);
        assert!(is_held_by(pack(SlotState::InUse, 5), held));
        assert!(is_held_by(pack(SlotState::Draining, 5), held));
        assert!(!is_held_by(pack(SlotState::Available, 5), held));
        assert!(!is_held_by(pack(SlotState::Empty, 5), held));
        assert!(!is_held_by(pack(SlotState::InUse, 6), held));
        assert!(!is_held_by(pack(SlotState::Draining, 4), held));
    }
}
