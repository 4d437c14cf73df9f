//! The progress thread's adaptive polling (see [`PollConfig`]).

use std::time::{Duration, Instant};

use crate::config::PollConfig;

/// What the progress thread does before its next poll.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Poll again at once.
    Spin,
    /// Give the core away once, then poll.
    Yield,
    /// Wait this long for a command, then poll.
    Sleep(Duration),
}

/// Tracks how long the progress thread has been idle.
pub(crate) struct Backoff {
    poll: PollConfig,
    idle_since: Instant,
    sleep: Duration,
}

/// The first sleep once spinning and yielding are over.
const FIRST_SLEEP: Duration = Duration::from_micros(10);

impl Backoff {
    pub(crate) fn new(poll: PollConfig) -> Backoff {
        Backoff {
            poll,
            idle_since: Instant::now(),
            sleep: FIRST_SLEEP,
        }
    }

    /// Something happened: start spinning again.
    pub(crate) fn active(&mut self) {
        self.idle_since = Instant::now();
        self.sleep = FIRST_SLEEP;
    }

    /// Nothing happened in the last poll: how to pause before the next.
    pub(crate) fn idle(&mut self) -> Pause {
        self.pause_after(self.idle_since.elapsed())
    }

    fn pause_after(&mut self, idle: Duration) -> Pause {
        if idle < self.poll.spin {
            Pause::Spin
        } else if idle < self.poll.spin + self.poll.yield_for {
            Pause::Yield
        } else {
            let sleep = self.sleep.min(self.poll.max_sleep);
            self.sleep = (self.sleep * 2).min(self.poll.max_sleep);
            Pause::Sleep(sleep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_then_yields_then_sleeps_longer_up_to_the_cap() {
        let poll = PollConfig {
            spin: Duration::from_micros(50),
            yield_for: Duration::from_micros(100),
            max_sleep: Duration::from_micros(35),
        };
        let mut backoff = Backoff::new(poll);
        assert_eq!(backoff.pause_after(Duration::from_micros(10)), Pause::Spin);
        assert_eq!(backoff.pause_after(Duration::from_micros(60)), Pause::Yield);
        let sleeps: Vec<_> = (0..4)
            .map(|_| backoff.pause_after(Duration::from_micros(200)))
            .collect();
        let us = |n| Pause::Sleep(Duration::from_micros(n));
        assert_eq!(sleeps, vec![us(10), us(20), us(35), us(35)]);
        backoff.active();
        assert_eq!(backoff.pause_after(Duration::from_micros(200)), us(10));
    }
}
