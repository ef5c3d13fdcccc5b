//! `[round]`: name, date, samples, sandbox and the task entries.

use super::ctx::{Loader, root};
use crate::base::diag::did_you_mean;
use crate::base::names::{SafeName, shown};
use crate::config::Round;
use crate::config::check::section;
use crate::config::raw::RawRound;
use crate::sandbox::SandboxChoice;
use crate::source::KeyPath;

/// The entries of `round.task` / `round.tasks`, each with where it is written.
pub(super) type TaskEntries = Vec<(KeyPath, String)>;

impl Loader<'_> {
    /// `[round]` and the task entries it names; `None` when any of it is wrong (reported).
    pub(super) fn round(&mut self) -> Option<(Round, TaskEntries)> {
        let at = root().key("round");
        let raw: RawRound = section(self.doc, &at, "[round]", &mut self.diags)?;
        let mut ok = true;
        let name = self.safe_name(
            &at.key("name"),
            "round name",
            &raw.name,
            false,
            "the round's directory is out/<name>-<date>",
        );
        let date = self.round_date(&at, raw.date.as_deref());
        let id = self.round_id(&at, name.as_ref(), date.as_ref());
        ok &= id.is_some();
        let samples = raw.samples.unwrap_or(1);
        ok &= self.samples(&at, samples, raw.representative_sample);
        let sandbox = self.sandbox(&at, raw.sandbox.as_deref());
        ok &= sandbox.is_some();
        let sandbox = sandbox.unwrap_or(SandboxChoice::Local);
        let unisolated_fallback = raw.unisolated_fallback.unwrap_or(false);
        if unisolated_fallback && sandbox != SandboxChoice::Auto {
            self.fallback_without_auto(&at, sandbox, raw.sandbox.is_some());
            ok = false;
        }
        let tasks = self.task_entries(&at, raw.task, raw.tasks);
        ok &= tasks.is_some();
        let (Some(name), Some(date), Some(id)) = (name, date, id) else {
            return None;
        };
        ok.then_some((
            Round {
                name,
                date,
                id,
                samples,
                sandbox,
                unisolated_fallback,
                representative_sample: raw.representative_sample,
                description: raw.description,
                max_cost_usd: self.cost_cap(&at.key("max_cost_usd"), raw.max_cost_usd),
            },
            tasks.unwrap_or_default(),
        ))
    }

    /// `round.date`, or today when it is left out.
    fn round_date(&mut self, at: &KeyPath, date: Option<&str>) -> Option<SafeName> {
        let Some(d) = date else {
            return SafeName::new(jiff::Zoned::now().date().to_string()).ok();
        };
        let date = crate::base::names::date(d);
        if date.is_none() {
            self.err(
                &at.key("date"),
                format!("date `{}` is not a date", shown(d)),
            )
            .help = Some("write it as YYYY-MM-DD".into());
        }
        date
    }

    /// `<name>-<date>`, the round's directory: a safe name itself.
    fn round_id(
        &mut self,
        at: &KeyPath,
        name: Option<&SafeName>,
        date: Option<&SafeName>,
    ) -> Option<SafeName> {
        let (name, date) = (name?, date?);
        match SafeName::joined(name, date) {
            Ok(id) => Some(id),
            Err(e) => {
                self.err(
                    &at.key("name"),
                    format!("the round id `{name}-{date}` is not a safe name: {e}"),
                )
                .help = Some(format!(
                    "the round's directory is out/<name>-<date>: shorten the name to {} bytes",
                    crate::base::names::MAX_NAME_BYTES - date.len() - 1
                ));
                None
            }
        }
    }

    /// `samples` at least 1, and `representative_sample` one of them. False when not (reported).
    fn samples(&mut self, at: &KeyPath, samples: u32, representative: Option<u32>) -> bool {
        let mut ok = true;
        if samples == 0 {
            self.err(&at.key("samples"), "samples must be at least 1");
            ok = false;
        }
        if let Some(r) = representative
            && (r == 0 || r > samples)
        {
            self.err(
                &at.key("representative_sample"),
                format!("representative_sample {r} is not a sample of this round (1..={samples})"),
            );
            ok = false;
        }
        ok
    }

    /// `round.sandbox` (`local` when left out); `None` for an unknown one (reported).
    fn sandbox(&mut self, at: &KeyPath, sandbox: Option<&str>) -> Option<SandboxChoice> {
        match sandbox {
            None | Some("local") => Some(SandboxChoice::Local),
            Some("docker") => Some(SandboxChoice::Docker),
            Some("unisolated") => Some(SandboxChoice::Unisolated),
            Some("auto") => Some(SandboxChoice::Auto),
            Some(other) => {
                let help = did_you_mean(other, SandboxChoice::NAMES);
                self.err(&at.key("sandbox"), format!("unknown sandbox `{other}`"))
                    .help = help;
                None
            }
        }
    }

    /// `unisolated_fallback` set with a sandbox other than `auto` (`explicit`: the file sets
    /// `sandbox`).
    fn fallback_without_auto(&mut self, at: &KeyPath, sandbox: SandboxChoice, explicit: bool) {
        let set = if explicit {
            format!("`sandbox = \"{}\"`", sandbox.name())
        } else {
            "`sandbox = \"local\"` (the default)".to_string()
        };
        self.err(
            &at.key("unisolated_fallback"),
            format!("`unisolated_fallback` applies to `sandbox = \"auto\"` only, not to {set}"),
        )
        .help = Some(match sandbox {
            SandboxChoice::Unisolated => {
                "`sandbox = \"unisolated\"` never isolates: remove `unisolated_fallback`".into()
            }
            _ => "`local` requires bubblewrap and `docker` the engine, never falling back: remove `unisolated_fallback`, or set `sandbox = \"auto\"` to fall back to no isolation where neither works".into(),
        });
    }

    /// `task` or `tasks`, exactly one of them, not empty; `None` otherwise (reported).
    fn task_entries(
        &mut self,
        at: &KeyPath,
        task: Option<String>,
        tasks: Option<Vec<String>>,
    ) -> Option<TaskEntries> {
        let (message, help) = match (task, tasks) {
            (Some(t), None) => return Some(vec![(at.key("task"), t)]),
            (None, Some(ts)) if !ts.is_empty() => {
                return Some(
                    ts.into_iter()
                        .enumerate()
                        .map(|(i, t)| (at.key("tasks").index(i), t))
                        .collect(),
                );
            }
            (None, Some(_)) => (
                (at.key("tasks"), "`tasks` is empty"),
                "name task directories or globs, e.g. tasks = [\"../tasks/humaneval/*\"]",
            ),
            (Some(_), Some(_)) => (
                (at.key("tasks"), "a round names `task` or `tasks`, not both"),
                "keep `tasks` and move the single task into its list",
            ),
            (None, None) => (
                (at.clone(), "the round names no task"),
                "add `task = \"../tasks/NAME\"` (or `tasks = [...]` for a suite) to [round]",
            ),
        };
        self.err(&message.0, message.1).help = Some(help.into());
        None
    }
}

impl Loader<'_> {
    /// A spending cap (`max_cost_usd`): a finite amount of USD, zero or more.
    pub(super) fn cost_cap(&mut self, at: &KeyPath, cap: Option<f64>) -> Option<f64> {
        let cap = cap?;
        if cap.is_finite() && cap >= 0.0 {
            return Some(cap);
        }
        self.err(at, format!("max_cost_usd {cap} is not an amount of USD"))
            .help = Some("a number of US dollars, zero or more (0 starts no model call)".into());
        None
    }
}
