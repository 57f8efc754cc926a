//! The slot word: a slot's state and generation packed into one `u32`, as typed values.
//!
//! ```text
//!  31                                                   2   1   0
//! +-------------------------------------------------------+-------+
//! |                generation (30 bits)                   | state |
//! +-------------------------------------------------------+-------+
//!   state: 0 empty, 1 available, 2 in_use, 3 draining
//! ```
//!
//! Two `#[repr(transparent)]` newtypes keep the fields apart: a [`Word`] is a whole slot word
//! (what the slot's `AtomicU32` holds), a [`Generation`] is the 30-bit field alone, so one cannot
//! be passed where the other is expected. Both compile to the bare `u32` operations.
//!
//! The generation names one *connection instance* of a slot: it advances (mod 2^30) exactly
//! when a slot leaves `empty` (an `add`, or a `reserve` that will be filled), and stays put
//! while the same connection is acquired and returned. So every word value a slot takes is
//! taken during one contiguous stretch of one connection's life, and a compare-and-swap from
//! an exact expected word can only succeed while the slot still holds the connection the
//! caller saw. A [`ConnId`](crate::ConnId) of a closed connection matches nothing until the
//! slot has held 2^30 further connections (the *horizon*: at one new connection per second on
//! one slot, 34 years). Tokens do not depend on the horizon: a live token holds its slot, so
//! its word cannot move on (see the crate docs, "Safety and correctness").
//!
//! `in_use` and `draining` differ only in [`DRAINING_BIT`], so "held by the token with
//! generation g" is one mask and one compare: `word & !DRAINING_BIT == Word::new(InUse, g)`.

/// Bits that hold the state.
const STATE_BITS: u32 = 2;
/// Mask of the state bits (the low bits of the word).
const STATE_MASK: u32 = (1 << STATE_BITS) - 1;
/// Where the generation starts.
const GEN_SHIFT: u32 = STATE_BITS;
/// Bits that hold the generation.
const GEN_BITS: u32 = u32::BITS - STATE_BITS;
/// Largest generation value; the one after it is 0.
const GEN_MAX: u32 = (1 << GEN_BITS) - 1;
/// The bit that tells `draining` from `in_use` (and `available` from `empty`).
const DRAINING_BIT: u32 = 1;

const _: () = assert!(STATE_BITS + GEN_BITS == u32::BITS);
const _: () = assert!(
    GEN_BITS >= 30,
    "the design promises 2^30 generations per slot"
);
const _: () = assert!(SlotState::Draining as u32 == SlotState::InUse as u32 | DRAINING_BIT);
const _: () = assert!(SlotState::Available as u32 == SlotState::Empty as u32 | DRAINING_BIT);
const _: () = assert!(std::mem::size_of::<Word>() == 4 && std::mem::size_of::<Generation>() == 4);

/// The lifecycle of a slot.
///
/// | from | to | transition | who | success ordering |
/// |---|---|---|---|---|
/// | `Empty(g)` | `InUse(g+1)` | `add` / `reserve`, or a releaser reserving for a waiter | adder | `Acquire` |
/// | `Available(g)` | `InUse(g)` | `acquire`, a drainer or evictor taking an idle connection, or a releaser taking it back for a waiter | acquirer | `Acquire` |
/// | `InUse(g)` | `Available(g)` | `release(keep = true)` | holder | `SeqCst` (Release + wake-up protocol) |
/// | `InUse(g)` | `Draining(g)` | `drain`, `drain_all` | anyone | `Relaxed` |
/// | `InUse(g)` / `Draining(g)` | `Empty(g)` | `release(keep = false)`, release of a draining slot | holder | `SeqCst` (Release + wake-up protocol) |
///
/// No other transition exists: `Available` is never closed in place (a drainer first moves it
/// to `InUse`, becoming its holder), and `Draining` never returns to `Available`. Handing a
/// held slot to a waiter moves its token, not its word.
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

/// The generation field of a slot word: which connection instance of the slot (mod 2^30).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Generation(u32);

impl Generation {
    /// The generation of a slot that has never held a connection.
    pub(crate) const ZERO: Generation = Generation(0);
    /// The largest generation; [`next`](Generation::next) wraps it to 0.
    #[cfg(test)]
    pub(crate) const MAX: Generation = Generation(GEN_MAX);

    /// The generation after this one, wrapping after 2^30 - 1.
    #[inline(always)]
    pub(crate) const fn next(self) -> Generation {
        Generation(self.0.wrapping_add(1) & GEN_MAX)
    }

    /// The bare value (for [`ConnId::generation`](crate::ConnId::generation) and `Debug`).
    #[inline(always)]
    pub(crate) const fn get(self) -> u32 {
        self.0
    }
}

/// A whole slot word: a [`SlotState`] and a [`Generation`], as stored in the slot's atomic.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Word(u32);

impl Word {
    /// Packs a state and a generation.
    #[inline(always)]
    pub(crate) const fn new(state: SlotState, gen: Generation) -> Word {
        debug_assert!(gen.0 <= GEN_MAX);
        Word((gen.0 << GEN_SHIFT) | state as u32)
    }

    /// The word as stored in the atomic.
    #[inline(always)]
    pub(crate) const fn to_bits(self) -> u32 {
        self.0
    }

    /// A word read from the atomic (every `u32` is a valid word).
    #[inline(always)]
    pub(crate) const fn from_bits(bits: u32) -> Word {
        Word(bits)
    }

    /// The state field.
    #[inline(always)]
    pub(crate) const fn state(self) -> SlotState {
        match self.0 & STATE_MASK {
            0 => SlotState::Empty,
            1 => SlotState::Available,
            2 => SlotState::InUse,
            _ => SlotState::Draining,
        }
    }

    /// The generation field.
    #[inline(always)]
    pub(crate) const fn generation(self) -> Generation {
        Generation(self.0 >> GEN_SHIFT)
    }

    /// The same generation with another state.
    #[inline(always)]
    pub(crate) const fn with_state(self, state: SlotState) -> Word {
        Word((self.0 & !STATE_MASK) | state as u32)
    }

    /// Whether this word is held (`InUse` or `Draining`) by the holder whose word is `held`
    /// (`held` is always an `InUse` word).
    #[inline(always)]
    pub(crate) const fn is_held_by(self, held: Word) -> bool {
        self.0 & !DRAINING_BIT == held.0
    }
}

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}#{}", self.state(), self.generation().get())
    }
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

    fn gen(g: u32) -> Generation {
        Generation(g)
    }

    #[test]
    fn layout_widths_are_pinned() {
        assert_eq!(STATE_BITS, 2);
        assert_eq!(GEN_BITS, 30);
        assert_eq!(GEN_MAX, (1 << 30) - 1);
        assert_eq!(STATE_MASK, 0b11);
        assert_eq!(
            Word::new(SlotState::Draining, Generation::MAX).to_bits(),
            u32::MAX
        );
        assert_eq!(Word::new(SlotState::InUse, gen(1)).to_bits(), 0b110);
    }

    #[test]
    fn pack_round_trips_every_state_and_edge_generation() {
        for state in ALL {
            for g in [0, 1, 2, 0x0123_4567, GEN_MAX - 1, GEN_MAX] {
                let w = Word::new(state, gen(g));
                assert_eq!(w.state(), state);
                assert_eq!(w.generation(), gen(g));
                assert_eq!(Word::from_bits(w.to_bits()), w);
            }
        }
    }

    #[test]
    fn next_wraps_only_after_2_pow_30() {
        assert_eq!(Generation::ZERO.next(), gen(1));
        assert_eq!(gen(GEN_MAX - 1).next(), Generation::MAX);
        assert_eq!(Generation::MAX.next(), Generation::ZERO);
    }

    #[test]
    fn with_state_keeps_generation() {
        let w = Word::new(SlotState::InUse, gen(77));
        for state in ALL {
            assert_eq!(w.with_state(state), Word::new(state, gen(77)));
        }
    }

    #[test]
    fn held_check_accepts_in_use_and_draining_of_same_generation_only() {
        let held = Word::new(SlotState::InUse, gen(5));
        assert!(Word::new(SlotState::InUse, gen(5)).is_held_by(held));
        assert!(Word::new(SlotState::Draining, gen(5)).is_held_by(held));
        assert!(!Word::new(SlotState::Available, gen(5)).is_held_by(held));
        assert!(!Word::new(SlotState::Empty, gen(5)).is_held_by(held));
        assert!(!Word::new(SlotState::InUse, gen(6)).is_held_by(held));
        assert!(!Word::new(SlotState::Draining, gen(4)).is_held_by(held));
    }
}
