//! Progress output: one indicatif bar per stage on a terminal, plain lines otherwise. Everything
//! goes to stderr so `--json` on stdout stays clean.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    running: Mutex<BTreeMap<String, Vec<String>>>,
    quiet: bool,
}

impl Progress {
    /// `stage_totals`: each stage with the number of nodes that will run.
    pub fn new(stage_totals: &[(String, u64)], quiet: bool) -> Self {
        let bars = (std::io::stderr().is_terminal() && !quiet).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{prefix:>12.bold} [{bar:24}] {pos}/{len} {wide_msg}")
                    .expect("valid template")
                    .progress_chars("=> ");
            let map = stage_totals
                .iter()
                .map(|(stage, total)| {
                    let bar = multi.add(ProgressBar::new(*total));
                    bar.set_style(style.clone());
                    bar.set_prefix(stage.clone());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    (stage.clone(), bar)
                })
                .collect();
            (multi, map)
        });
        Self {
            bars,
            running: Mutex::new(BTreeMap::new()),
            quiet,
        }
    }

    fn refresh(&self, stage: &str) {
        if let Some((_, bars)) = &self.bars
            && let Some(bar) = bars.get(stage)
        {
            let running = self.running.lock().expect("progress lock");
            let names = running.get(stage).map(|v| v.join(", ")).unwrap_or_default();
            bar.set_message(names);
        }
    }

    pub fn started(&self, stage: &str, id: &str) {
        self.running
            .lock()
            .expect("progress lock")
            .entry(stage.to_string())
            .or_default()
            .push(id.to_string());
        self.refresh(stage);
    }

    /// A node finished; `state` is done, restored, failed or skipped.
    pub fn finished(&self, stage: &str, id: &str, state: &str, detail: &str) {
        if let Some(v) = self.running.lock().expect("progress lock").get_mut(stage) {
            v.retain(|x| x != id);
        }
        match &self.bars {
            Some((multi, bars)) => {
                if let Some(bar) = bars.get(stage) {
                    bar.inc(1);
                }
                // Bars count what finished well; lines say the rest.
                if !matches!(state, "done" | "restored") {
                    let _ = multi.println(format!("{state:>8} {id} {detail}"));
                }
                self.refresh(stage);
            }
            None if !self.quiet => eprintln!("{state:>8} {id} {detail}"),
            None => {}
        }
    }

    /// A note that must not go unseen (a retry, a backoff, a replay mismatch).
    pub fn note(&self, text: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(format!("    note {text}"));
            }
            // Notes (retries, backoff, replay mismatches) are never silenced, not even by --json.
            None => eprintln!("    note {text}"),
        }
    }

    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.values() {
                bar.finish_and_clear();
            }
        }
    }
}

impl crate::stages::Notes for Progress {
    fn note(&self, text: &str) {
        Progress::note(self, text);
    }
}
