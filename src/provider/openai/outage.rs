//! An outage is one event, not N.
//!
//! When an attempt cannot reach the endpoint at all (the connection is refused: the endpoint or
//! the proxy in front of it is down or restarting), the provider enters an outage. From then on
//! one call at a time probes the endpoint, paced by a growing wait; every other call waits for
//! the probe's news instead of hammering a closed port, and no call spends its retries on the
//! outage. The first answer of any kind ends it and every waiting call goes on. Past the
//! tolerance (`outage_secs`) the waiting calls give up, naming how long the endpoint was gone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::hints::backoff_ceiling;

/// Longest wait between two probes: a restarted endpoint is noticed within this.
pub(super) const PROBE_MAX: Duration = Duration::from_secs(5);

/// The endpoint's reachability, shared by every call of one provider.
#[derive(Debug)]
pub(super) struct Outage {
    state: Mutex<State>,
    changed: Notify,
    /// How long an outage may last before calls give up.
    tolerance: Duration,
    /// First wait between probes; doubles per failed probe up to `probe_max`.
    probe_base: Duration,
    probe_max: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// When the outage began; none while the endpoint is reachable.
    since: Option<Instant>,
    /// A call is probing now.
    probing: bool,
    /// Failed probes (and failed attempts) since the outage began.
    failures: u32,
    /// No probe starts before this.
    next_probe: Option<Instant>,
    /// What the last failed attempt said.
    last: String,
}

/// What a call may do now.
#[derive(Debug)]
pub(super) enum Turn<'a> {
    /// The endpoint is reachable (as far as anyone knows): go ahead.
    Clear,
    /// There is an outage and this call is the one probe: go ahead, and report back.
    Probe { _guard: ProbeGuard<'a> },
}

/// The endpoint stayed unreachable for the whole tolerance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GaveUp {
    pub(super) down_for: Duration,
    pub(super) last: String,
}

/// The probe's place; dropped (the probe answered, failed or was cancelled) another call may
/// probe next.
#[derive(Debug)]
pub(super) struct ProbeGuard<'a> {
    outage: &'a Outage,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.outage.lock().probing = false;
        self.outage.changed.notify_waiters();
    }
}

impl Outage {
    pub(super) fn new(tolerance: Duration, probe_base: Duration, probe_max: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            tolerance,
            probe_base,
            probe_max: probe_max.max(probe_base),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long an outage may last before calls give up.
    pub(super) fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Whether an outage is on now.
    #[cfg(test)]
    pub(super) fn is_down(&self) -> bool {
        self.lock().since.is_some()
    }

    /// Waits until the call may make an attempt: at once while the endpoint is reachable;
    /// during an outage, when it is this call's turn to probe or the outage is over. Fails when
    /// the outage has lasted the whole tolerance.
    pub(super) async fn turn(&self) -> Result<Turn<'_>, GaveUp> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut st = self.lock();
                let Some(since) = st.since else {
                    return Ok(Turn::Clear);
                };
                let down_for = since.elapsed();
                if down_for >= self.tolerance {
                    return Err(GaveUp {
                        down_for,
                        last: st.last.clone(),
                    });
                }
                let left = self.tolerance.saturating_sub(down_for);
                let now = Instant::now();
                match st.next_probe {
                    _ if st.probing => left,
                    Some(at) if at > now => (at - now).min(left),
                    _ => {
                        st.probing = true;
                        return Ok(Turn::Probe {
                            _guard: ProbeGuard { outage: self },
                        });
                    }
                }
            };
            // Woken by news (the outage ended, the probe left), or when the next probe is due.
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// An attempt could not reach the endpoint (`last` says how). Returns true when this
    /// begins an outage.
    pub(super) fn unreachable(&self, last: &str) -> bool {
        let mut st = self.lock();
        let now = Instant::now();
        let began = st.since.is_none();
        if began {
            st.since = Some(now);
            st.failures = 0;
        }
        st.failures += 1;
        st.next_probe = Some(now + backoff_ceiling(self.probe_base, self.probe_max, st.failures));
        st.last = last.to_string();
        began
    }

    /// The endpoint answered (anything at all). Returns how long it was down when this ends an
    /// outage.
    pub(super) fn reachable(&self) -> Option<Duration> {
        let down_for = {
            let mut st = self.lock();
            let since = st.since.take()?;
            st.next_probe = None;
            st.failures = 0;
            since.elapsed()
        };
        self.changed.notify_waiters();
        Some(down_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn outage(tolerance_ms: u64) -> Arc<Outage> {
        Arc::new(Outage::new(
            Duration::from_millis(tolerance_ms),
            Duration::from_millis(20),
            Duration::from_millis(40),
        ))
    }

    #[tokio::test]
    async fn without_an_outage_every_call_goes_ahead() {
        let o = outage(1000);
        assert!(matches!(o.turn().await, Ok(Turn::Clear)));
        assert_eq!(o.reachable(), None);
    }

    #[tokio::test]
    async fn during_an_outage_one_call_probes_and_the_rest_wait_for_its_news() {
        let o = outage(5000);
        assert!(o.unreachable("connection refused"));
        assert!(!o.unreachable("connection refused"), "one outage, not two");
        let probes = Arc::new(AtomicUsize::new(0));
        let max_probes = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for _ in 0..8 {
            let (o, probes, max_probes) = (o.clone(), probes.clone(), max_probes.clone());
            calls.push(tokio::spawn(async move {
                let mut attempts = 0;
                loop {
                    match o.turn().await.unwrap() {
                        Turn::Clear => return attempts,
                        Turn::Probe { _guard: guard } => {
                            attempts += 1;
                            let now = probes.fetch_add(1, Ordering::SeqCst) + 1;
                            max_probes.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            probes.fetch_sub(1, Ordering::SeqCst);
                            o.unreachable("connection refused");
                            drop(guard);
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let down = o.reachable().expect("the outage was on");
        assert!(down >= Duration::from_millis(300), "{down:?}");
        let mut total = 0;
        for c in calls {
            total += c.await.unwrap();
        }
        assert_eq!(max_probes.load(Ordering::SeqCst), 1, "one probe at a time");
        // Paced at 20, 40, 40, ... ms: a handful of probes in 300 ms, not eight calls' worth of
        // tight loops.
        assert!((3..=12).contains(&total), "{total} probes");
        assert!(!o.is_down());
    }

    #[tokio::test]
    async fn past_the_tolerance_every_waiting_call_gives_up_with_the_last_error() {
        let o = outage(150);
        o.unreachable("connection refused (port 9)");
        let t = Instant::now();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let o = o.clone();
                tokio::spawn(async move {
                    loop {
                        match o.turn().await {
                            Ok(Turn::Probe { .. }) => {
                                o.unreachable("connection refused (port 9)");
                            }
                            Ok(Turn::Clear) => panic!("the endpoint never came back"),
                            Err(gave_up) => return gave_up,
                        }
                    }
                })
            })
            .collect();
        for w in waiters {
            let gave_up = w.await.unwrap();
            assert!(gave_up.down_for >= Duration::from_millis(150));
            assert_eq!(gave_up.last, "connection refused (port 9)");
        }
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_cancelled_probe_hands_the_turn_on() {
        let o = outage(5000);
        o.unreachable("refused");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let Ok(Turn::Probe { _guard: guard }) = o.turn().await else {
            panic!("the probe is due")
        };
        let next = {
            let o = o.clone();
            tokio::spawn(async move { matches!(o.turn().await, Ok(Turn::Probe { .. })) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), next)
                .await
                .expect("the waiting call takes the probe")
                .unwrap()
        );
    }
}
