//! Exhaustive exploration: every interleaving of deliveries, invocation and task
//! completions, requests, crashes, losses and failure detections, depth first, with
//! visited states deduplicated by hash.

use std::collections::HashSet;
use std::rc::Rc;

use crate::chooser::ForcedAction;
use crate::trace::TraceMode;
use crate::world::{Action, World};
use crate::{Protocol, ReplayChooser, Scenario, SimError, Violation};

/// How far an exploration may go before it gives up.
#[derive(Clone, Copy, Debug)]
pub struct ExploreLimits {
    /// Distinct states at most.
    pub max_states: usize,
}

impl Default for ExploreLimits {
    fn default() -> Self {
        Self {
            max_states: 5_000_000,
        }
    }
}

/// What an exploration covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exploration {
    /// Distinct states reached (each checked).
    pub states: u64,
    /// Actions performed, counting those that reached a known state.
    pub transitions: u64,
    /// Distinct states where nothing more can happen (each given the end checks).
    pub terminal_states: u64,
    /// The longest path explored, in actions.
    pub max_depth: usize,
}

/// A path to a broken invariant: the choice made at each step (an index into the
/// enabled actions of that state, replayable with [`replay_exploration`]) and the
/// actions they picked.
#[derive(Clone, Debug)]
pub struct Counterexample {
    /// What broke.
    pub violations: Vec<Violation>,
    /// The choice at each step.
    pub choices: Vec<u64>,
    /// The action each choice picked.
    pub path: Vec<Action>,
}

/// Why an exploration did not finish clean.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ExploreError {
    /// An invariant broke.
    #[error("invariant broken: {}; path ({} steps): {:?}", .0.violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), .0.path.len(), .0.path)]
    Violation(Box<Counterexample>),
    /// More distinct states than the limit.
    #[error("more than {0} distinct states; shrink the scenario")]
    TooManyStates(usize),
    /// The scenario is invalid.
    #[error(transparent)]
    Invalid(#[from] SimError),
}

struct Frame<P> {
    world: World<P>,
    options: u64,
    next: u64,
}

/// Explores every run of `scenario` (untimed: latencies and load times play no
/// part, every order is tried), checking the invariants after every action and the
/// end-of-run checks in every terminal state.
///
/// ```
/// use herald_core::{Node, NodeId};
/// use herald_sim::{explore, ExploreLimits, Scenario, Script};
/// let scenario = Scenario::new(2).with_request(NodeId(1), 0, Script::new("lib"));
/// let exploration = explore::<Node>(&scenario, ExploreLimits::default())?;
/// assert!(exploration.states > 5);
/// # Ok::<(), herald_sim::ExploreError>(())
/// ```
pub fn explore<P: Protocol>(
    scenario: &Scenario,
    limits: ExploreLimits,
) -> Result<Exploration, ExploreError> {
    let root = World::<P>::new(Rc::new(scenario.clone()), false, TraceMode::Off)?;
    let mut visited = HashSet::from([root.state_hash()]);
    let mut report = Exploration {
        states: 1,
        ..Exploration::default()
    };
    let mut stack = vec![Frame {
        options: root.enabled_actions().len() as u64,
        world: root,
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        if top.next >= top.options {
            stack.pop();
            continue;
        }
        let choice = top.next;
        top.next += 1;
        let mut world = top.world.clone();
        world.step_untimed(&mut ForcedAction {
            action: choice,
            asked: 0,
        });
        report.transitions += 1;
        world.check_message_bound();
        if !world.violations.is_empty() {
            return Err(counterexample(scenario, &stack, choice, world.violations));
        }
        if !visited.insert(world.state_hash()) {
            continue;
        }
        report.states += 1;
        if visited.len() > limits.max_states {
            return Err(ExploreError::TooManyStates(limits.max_states));
        }
        let options = world.enabled_actions().len() as u64;
        if options == 0 {
            report.terminal_states += 1;
            world.final_checks();
            if !world.violations.is_empty() {
                return Err(counterexample(scenario, &stack, choice, world.violations));
            }
            continue;
        }
        stack.push(Frame {
            world,
            options,
            next: 0,
        });
        report.max_depth = report.max_depth.max(stack.len() - 1);
    }
    Ok(report)
}

/// Replays a path of choices from the initial state of `scenario`; returns the
/// actions taken and the violations found (end checks included when the path ends
/// in a terminal state).
pub fn replay_exploration<P: Protocol>(
    scenario: &Scenario,
    choices: &[u64],
) -> Result<(Vec<Action>, Vec<Violation>), SimError> {
    let mut world = World::<P>::new(Rc::new(scenario.clone()), false, TraceMode::Off)?;
    let mut chooser = ReplayChooser::new(choices.to_vec());
    let mut path = Vec::new();
    while chooser.used() < choices.len() {
        let actions = world.enabled_actions();
        let Some(action) = actions.get(choices[chooser.used()] as usize).cloned() else {
            break;
        };
        if !world.step_untimed(&mut chooser) {
            break;
        }
        path.push(action);
        world.check_message_bound();
    }
    if world.enabled_actions().is_empty() {
        world.final_checks();
    }
    Ok((path, world.violations))
}

fn counterexample<P: Protocol>(
    scenario: &Scenario,
    stack: &[Frame<P>],
    last: u64,
    violations: Vec<Violation>,
) -> ExploreError {
    // The top frame's last choice is the one that broke the invariant.
    let choices: Vec<u64> = stack.iter().map(|f| f.next - 1).collect();
    debug_assert_eq!(choices.last(), Some(&last));
    let path = replay_exploration::<P>(scenario, &choices)
        .map(|(path, _)| path)
        .unwrap_or_default();
    ExploreError::Violation(Box::new(Counterexample {
        violations,
        choices,
        path,
    }))
}
