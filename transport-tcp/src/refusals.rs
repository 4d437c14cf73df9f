//! Connections refused before they proved the secret (scanners, garbage, stalls,
//! wrong secrets, other jobs), logged without letting a flood flood the log:
//! the first refusal of a quiet spell is logged in full, the rest are counted and
//! summed up at most once per [`SUMMARY_EVERY`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest time between two summaries while refusals keep coming.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Refusals counted since the last log line.
pub(crate) struct Refusals {
    rank: u32,
    cluster: String,
    /// Counts by reason, since the last line.
    counts: BTreeMap<String, u64>,
    last_from: Option<SocketAddr>,
    /// When the last line was logged; `None` in a quiet spell.
    last_line: Option<Instant>,
}

impl Refusals {
    pub(crate) fn new(rank: u32, cluster: &str) -> Refusals {
        Refusals {
            rank,
            cluster: cluster.to_owned(),
            counts: BTreeMap::new(),
            last_from: None,
            last_line: None,
        }
    }

    /// A connection from `from` was refused for `reason` (its kind first: the
    /// summary counts by the text before the first colon or parenthesis).
    pub(crate) fn note(&mut self, from: SocketAddr, reason: &str, now: Instant) {
        if self.last_line.is_none() {
            tracing::warn!(
                rank = self.rank,
                cluster = %self.cluster,
                %from,
                "herald-tcp: refused a connection: {reason}"
            );
            self.last_line = Some(now);
            return;
        }
        let end = reason.find([':', '(', ';']).unwrap_or(reason.len());
        let kind = reason[..end].trim_end().to_owned();
        *self.counts.entry(kind).or_default() += 1;
        self.last_from = Some(from);
    }

    /// When [`Refusals::tick`] has something to do.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.last_line.map(|at| at + SUMMARY_EVERY)
    }

    /// Logs what is counted and not yet summed up (at the end of the mesh).
    pub(crate) fn finish(&mut self, now: Instant) {
        if let Some(at) = self.last_line {
            self.summarise(now, at);
        }
    }

    /// Logs the summary if one is due; a spell with nothing to sum up ends.
    pub(crate) fn tick(&mut self, now: Instant) {
        let Some(at) = self.last_line else {
            return;
        };
        if now < at + SUMMARY_EVERY {
            return;
        }
        self.summarise(now, at);
    }

    fn summarise(&mut self, now: Instant, at: Instant) {
        if self.counts.is_empty() {
            self.last_line = None;
            return;
        }
        let total: u64 = self.counts.values().sum();
        let kinds: Vec<String> = self
            .counts
            .iter()
            .map(|(kind, n)| format!("{n} × {kind}"))
            .collect();
        tracing::warn!(
            rank = self.rank,
            cluster = %self.cluster,
            last_from = ?self.last_from,
            "herald-tcp: refused {total} more connections in the last {:.1} s: {}",
            now.duration_since(at).as_secs_f64(),
            kinds.join("; ")
        );
        self.counts.clear();
        self.last_line = Some(now);
    }
}
