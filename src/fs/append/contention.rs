//! Sharing an object's end with writers elsewhere: cheap and fair.
//!
//! A writer learns where another host's appends left the object's end only from a 409 (or its
//! own success right after). If every writer that lost a race tried again at once, the losers
//! would race each other again, and strict turn-taking would cost a 409 for every line. So:
//! - a loser tries again at once at the end the 409 named; after further losses it first
//!   pauses a random fraction of two of its round trips (spreading the losers), though never
//!   on every attempt, see [`after_lost_race`];
//! - the winner keeps the end for a run of at most [`RUN`] chunks while others are known to
//!   be appending, then steps aside for a few round trips ([`Contention::before_send`]), so
//!   no writer is starved and the cost of learning the end is shared by a run of chunks.
//!
//! Owned by one append stream (used under its send lock).

use std::time::{Duration, Instant};

/// Chunks a writer appends in a row while others are known to be appending.
pub const RUN: u32 = 8;
/// How long after the last lost race other writers count as active.
const ACTIVE_FOR: Duration = Duration::from_secs(1);
/// Round trips a writer steps aside after its run.
const STEP_ASIDE: u32 = 6;

/// Lost races of one chunk after which a loser stops pausing every time.
const SPREAD_UNTIL: u32 = 5;

/// The pause before trying again at the end a 409 named, after `losses` lost races of one
/// chunk. None after the first: the end is freshest right after the 409. After losses 2 to
/// [`SPREAD_UNTIL`], other losers are likely racing too: a random fraction of two round trips
/// of the lost attempt. After that, none on every other loss: a writer that never loses (so
/// never steps aside) leaves only short gaps between its chunks, which only an immediate
/// retry can use. It never grows: a loser that waited longer would miss the winner's stepping
/// aside (measured: growing pauses starved writers).
pub fn after_lost_race(round_trip: Duration, losses: u32) -> Duration {
    let immediate = losses == 1 || (losses > SPREAD_UNTIL && losses % 2 == 1);
    if immediate {
        return Duration::ZERO;
    }
    (round_trip * 2).mul_f64(rand::random::<f64>())
}

/// What one stream knows of the other writers of its object.
#[derive(Debug, Default)]
pub struct Contention {
    /// When a chunk of this stream last lost a race.
    last_loss: Option<Instant>,
    /// Chunks landed in a row since.
    run: u32,
    /// The round trip of the last attempt.
    round_trip: Duration,
}

impl Contention {
    /// The pause to take before the next chunk: none, unless others are appending and this
    /// writer has had its run.
    pub fn before_send(&mut self) -> Option<Duration> {
        let active = self.last_loss.is_some_and(|t| t.elapsed() < ACTIVE_FOR);
        if active && self.run >= RUN {
            self.run = 0;
            Some(self.round_trip * STEP_ASIDE)
        } else {
            None
        }
    }

    /// Records how a chunk went: the races it lost and its last attempt's round trip.
    pub fn landed(&mut self, lost_races: u32, round_trip: Duration) {
        self.round_trip = round_trip;
        if lost_races > 0 {
            self.last_loss = Some(Instant::now());
            self.run = 1;
        } else {
            self.run += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_never_pauses() {
        let mut c = Contention::default();
        for _ in 0..100 {
            assert_eq!(c.before_send(), None);
            c.landed(0, Duration::from_millis(1));
        }
    }

    #[test]
    fn with_others_a_run_ends_by_stepping_aside() {
        let mut c = Contention::default();
        c.landed(2, Duration::from_millis(1));
        for _ in 1..RUN {
            assert_eq!(c.before_send(), None);
            c.landed(0, Duration::from_millis(1));
        }
        assert_eq!(
            c.before_send(),
            Some(Duration::from_millis(STEP_ASIDE as u64))
        );
        // The next run starts after stepping aside.
        assert_eq!(c.before_send(), None);
    }

    #[test]
    fn a_lost_race_pauses_at_most_two_round_trips() {
        let rtt = Duration::from_millis(2);
        for losses in 1..100 {
            let p = after_lost_race(rtt, losses);
            assert!(p <= rtt * 2);
            if losses == 1 || (losses > SPREAD_UNTIL && losses % 2 == 1) {
                assert_eq!(p, Duration::ZERO, "after {losses} losses");
            }
        }
    }
}
