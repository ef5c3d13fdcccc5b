//! The adaptive bound on the attempts in flight (AIMD).

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// What an attempt tells the concurrency limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// The endpoint answered with a usable completion.
    Answered,
    /// HTTP 429.
    RateLimited,
}

/// An adaptive bound on the attempts in flight, on top of a semaphore.
///
/// The semaphore holds `limit + debt` permits in all (available or held). Lowering the limit
/// forgets the permits that are available and records the rest as `debt`, paid by forgetting
/// permits as attempts give them back; raising it cancels debt first, then adds a permit. Each
/// decrease starts a new `epoch`: 429s of attempts let through before it were answered at the
/// old limit and do not lower the limit again (one halving per wave of rejections).
#[derive(Debug)]
pub(super) struct Limiter {
    permits: Semaphore,
    pub(super) max: usize,
    pub(super) grow_after: u32,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    limit: usize,
    debt: usize,
    epoch: u64,
    /// Answered attempts since the last 429 or change of limit.
    streak: u32,
}

/// One attempt's place in the limiter; gives the permit back (or pays debt with it) on drop.
pub(super) struct Slot<'a> {
    limiter: &'a Limiter,
    permit: Option<SemaphorePermit<'a>>,
    epoch: u64,
}

impl Limiter {
    pub(super) fn new(max: usize, grow_after: u32) -> Self {
        Self {
            permits: Semaphore::new(max),
            max,
            grow_after: grow_after.max(1),
            state: Mutex::new(LimitState {
                limit: max,
                debt: 0,
                epoch: 0,
                streak: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn limit(&self) -> usize {
        self.lock().limit
    }

    pub(super) async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        Slot {
            limiter: self,
            permit: Some(permit),
            epoch: self.lock().epoch,
        }
    }

    /// Adjusts the limit after an attempt; returns `(from, to)` when it changed.
    pub(super) fn observe(&self, slot: &Slot<'_>, event: Event) -> Option<(usize, usize)> {
        let mut state = self.lock();
        let from = state.limit;
        match event {
            Event::RateLimited => {
                state.streak = 0;
                if slot.epoch != state.epoch || from == 1 {
                    return None;
                }
                let to = (from / 2).max(1);
                let cut = from - to;
                let forgotten = self.permits.forget_permits(cut);
                state.debt += cut - forgotten;
                state.limit = to;
                state.epoch += 1;
                Some((from, to))
            }
            Event::Answered => {
                if from >= self.max {
                    return None;
                }
                state.streak += 1;
                if state.streak < self.grow_after {
                    return None;
                }
                state.streak = 0;
                state.limit += 1;
                if state.debt > 0 {
                    state.debt -= 1;
                } else {
                    self.permits.add_permits(1);
                }
                Some((from, from + 1))
            }
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut state = self.limiter.lock();
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_halves_once_per_wave_pays_debt_and_grows_back() {
        let limiter = Limiter::new(4, 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let slots: Vec<Slot<'_>> = (0..4).map(|_| rt.block_on(limiter.acquire())).collect();
        assert_eq!(limiter.permits.available_permits(), 0);

        // Four 429s of the same wave: one halving.
        assert_eq!(limiter.observe(&slots[0], Event::RateLimited), Some((4, 2)));
        for slot in &slots[1..] {
            assert_eq!(limiter.observe(slot, Event::RateLimited), None);
        }
        assert_eq!(limiter.lock().debt, 2);
        drop(slots);
        // Two permits paid the debt, two came back.
        assert_eq!(limiter.permits.available_permits(), 2);
        assert_eq!(limiter.lock().debt, 0);

        // The next wave halves again; a lone 429 at 1 changes nothing.
        let slot = rt.block_on(limiter.acquire());
        assert_eq!(limiter.observe(&slot, Event::RateLimited), Some((2, 1)));
        drop(slot);
        assert_eq!(limiter.permits.available_permits(), 1);
        let slot = rt.block_on(limiter.acquire());
        assert_eq!(limiter.observe(&slot, Event::RateLimited), None);

        // Two answers in a row grow the limit by one; a 429 in between restarts the count.
        assert_eq!(limiter.observe(&slot, Event::Answered), None);
        let fresh = Slot {
            limiter: &limiter,
            permit: None,
            epoch: limiter.lock().epoch,
        };
        assert_eq!(limiter.observe(&fresh, Event::RateLimited), None);
        assert_eq!(limiter.observe(&slot, Event::Answered), None);
        assert_eq!(limiter.observe(&slot, Event::Answered), Some((1, 2)));
        drop(slot);
        assert_eq!(limiter.permits.available_permits(), 2);
        for _ in 0..2 {
            limiter.observe(&fresh, Event::Answered);
        }
        for _ in 0..2 {
            limiter.observe(&fresh, Event::Answered);
        }
        assert_eq!(limiter.limit(), 4);
        assert_eq!(limiter.permits.available_permits(), 4);
        // Never above the maximum.
        for _ in 0..10 {
            assert_eq!(limiter.observe(&fresh, Event::Answered), None);
        }
        assert_eq!(limiter.permits.available_permits(), 4);
    }
}
