//! The one source of every decision a simulation makes.
//!
//! Latencies, load jitter, crash victims and times, partitions, which fault kinds a
//! swarm run enables, which in-flight frames a failure loses, and (when exploring)
//! which enabled action happens next: all of them are a call to
//! [`Chooser::choose`]. Drawing them from a seeded generator gives a random run;
//! feeding back a recorded list replays it exactly; enumerating every value
//! depth-first explores every run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a choice decides. Recorded with each choice so a replay can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChoiceKind {
    /// Which of the enabled actions happens next (exhaustive exploration).
    NextAction,
    /// A frame's network latency.
    Latency,
    /// Whether a fault kind is enabled in this swarm run.
    FaultKind,
    /// Whether, or which, node crashes.
    CrashVictim,
    /// When a fault happens.
    FaultTime,
    /// Which side of a partition a node falls on.
    PartitionSide,
    /// How many in-flight frames of a failed link are still delivered.
    InFlightKept,
    /// How long a node takes to notice a failure.
    DetectionDelay,
    /// Which link breaks, who suspects whom, or which node pauses.
    FaultVictim,
    /// Whether a delivered frame is delivered once more.
    Duplicate,
}

/// Picks every value a simulation needs.
///
/// ```
/// use herald_sim::{ChoiceKind, Chooser, RandomChooser, ReplayChooser};
/// let mut random = RandomChooser::new(7).recording();
/// let first = random.choose(ChoiceKind::Latency, 1000);
/// let second = random.choose(ChoiceKind::CrashVictim, 4);
/// let mut replay = ReplayChooser::new(random.recorded().to_vec());
/// assert_eq!(replay.choose(ChoiceKind::Latency, 1000), first);
/// assert_eq!(replay.choose(ChoiceKind::CrashVictim, 4), second);
/// ```
pub trait Chooser {
    /// A value in `0..options`. `options` is at least 1; with exactly one option
    /// the answer is 0 and nothing is drawn.
    fn choose(&mut self, kind: ChoiceKind, options: u64) -> u64;

    /// A value in `low..=high` (or `low` when `high <= low`).
    fn choose_between(&mut self, kind: ChoiceKind, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.choose(kind, high - low + 1)
    }

    /// True with probability `numerator / denominator`.
    fn choose_chance(&mut self, kind: ChoiceKind, numerator: u64, denominator: u64) -> bool {
        denominator > 0 && self.choose(kind, denominator) < numerator
    }
}

/// Random mode: every choice drawn from a `ChaCha8Rng` seeded explicitly.
#[derive(Clone, Debug)]
pub struct RandomChooser {
    rng: ChaCha8Rng,
    record: Option<Vec<u64>>,
}

impl RandomChooser {
    /// A generator seeded with `seed`: the same seed gives the same choices.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            record: None,
        }
    }

    /// The same generator, also keeping every value it returns for
    /// [`ReplayChooser`].
    pub fn recording(mut self) -> Self {
        self.record = Some(Vec::new());
        self
    }

    /// The values returned so far (empty unless [`recording`](Self::recording)).
    pub fn recorded(&self) -> &[u64] {
        self.record.as_deref().unwrap_or(&[])
    }
}

impl Chooser for RandomChooser {
    fn choose(&mut self, _kind: ChoiceKind, options: u64) -> u64 {
        let value = if options <= 1 {
            0
        } else {
            self.rng.random_range(0..options)
        };
        if let Some(record) = &mut self.record {
            record.push(value);
        }
        value
    }
}

/// Replay mode: returns a recorded list of choices in order.
///
/// A value out of range for the question asked is reduced modulo the number of
/// options, and once the list is used up every answer is 0: so any edited or
/// truncated list (as a shrinker makes) still drives a valid run.
#[derive(Clone, Debug, Default)]
pub struct ReplayChooser {
    choices: Vec<u64>,
    position: usize,
}

impl ReplayChooser {
    /// Replays `choices` from the first.
    pub fn new(choices: Vec<u64>) -> Self {
        Self {
            choices,
            position: 0,
        }
    }

    /// How many recorded choices have been used.
    pub fn used(&self) -> usize {
        self.position
    }
}

impl Chooser for ReplayChooser {
    fn choose(&mut self, _kind: ChoiceKind, options: u64) -> u64 {
        let value = self.choices.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        if options <= 1 { 0 } else { value % options }
    }
}

/// Answers exactly one [`ChoiceKind::NextAction`] question with a fixed value: the
/// exhaustive explorer steps a cloned state with it once per enabled action.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForcedAction {
    pub(crate) action: u64,
    pub(crate) asked: u32,
}

impl Chooser for ForcedAction {
    fn choose(&mut self, kind: ChoiceKind, options: u64) -> u64 {
        debug_assert_eq!(
            kind,
            ChoiceKind::NextAction,
            "an untimed step asks nothing else"
        );
        self.asked += 1;
        self.action.min(options.saturating_sub(1))
    }
}
