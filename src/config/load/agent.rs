//! The agent harness: a build stage's `[agent]` settings, and the task table it needs.

use std::path::Path;

use super::ctx::{Loader, root};
use crate::config::check::section;
use crate::config::raw::RawAgentSettings;
use crate::config::task::Task;
use crate::config::templates::BuildCtx;
use crate::config::{AgentSettings, BuildStage, Harness, ModelConfig, Stage, StageKind, Template};
use crate::source::KeyPath;

impl Loader<'_> {
    /// `[stages.<build>.agent]`: the settings and the agent's prompt template (when set). Every
    /// bad value is its own located error; `None` when any is bad.
    pub(super) fn agent_settings(
        &mut self,
        at: &KeyPath,
        present: bool,
    ) -> Option<(AgentSettings, Option<Template>)> {
        let mut settings = AgentSettings::default();
        if !present {
            return Some((settings, None));
        }
        let what = "the agent settings";
        let raw = section::<RawAgentSettings>(self.doc, at, what, &mut self.diags)?;
        let mut ok = true;
        let mut int = |l: &mut Self, key: &str, v: Option<i64>, min: i64, max: i64, unit: &str| {
            let v = v?;
            if (min..=max).contains(&v) {
                Some(v)
            } else {
                l.err(
                    &at.key(key),
                    format!("`{key}` is {v}; it must be between {min} and {max}{unit}"),
                )
                .help = Some(format!(
                    "set `{key}` in the range, or remove it for the default"
                ));
                ok = false;
                None
            }
        };
        if let Some(v) = int(self, "max_steps", raw.max_steps, 1, 10_000, " model calls") {
            settings.max_steps = v as u32;
        }
        if let Some(v) = int(
            self,
            "max_context_tokens",
            raw.max_context_tokens,
            1_000,
            10_000_000,
            " tokens",
        ) {
            settings.max_context_tokens = v as u64;
        }
        if let Some(v) = int(self, "wall_secs", raw.wall_secs, 1, 86_400, " seconds") {
            settings.wall_secs = v as u64;
        }
        if let Some(v) = int(
            self,
            "stagnation_steps",
            raw.stagnation_steps,
            1,
            10_000,
            " steps",
        ) {
            settings.stagnation_steps = v as u32;
        }
        if let Some(v) = int(self, "passes", raw.passes, 1, 100, "") {
            settings.passes = v as u32;
        }
        if let Some(v) = int(
            self,
            "run_timeout_secs",
            raw.run_timeout_secs,
            1,
            3_600,
            " seconds",
        ) {
            settings.run_timeout_secs = v as u64;
        }
        if let Some(n) = raw.notes_file {
            let path = Path::new(&n);
            let plain = !n.is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if plain {
                settings.notes_file = n;
            } else {
                self.err(
                    &at.key("notes_file"),
                    format!("`notes_file` `{n}` is not a plain relative path in the workspace"),
                )
                .help = Some("name a file like `NOTES.md`: no `/` at the start, no `..`".into());
                ok = false;
            }
        }
        let prompt = match raw.prompt {
            None => None,
            Some(rel) => {
                let t = self.template(&at.key("prompt"), &rel, &BuildCtx::sample());
                ok &= t.is_some();
                t
            }
        };
        ok.then_some((settings, prompt))
    }

    /// A model that builds with the agent harness needs a task that says how `done` verifies.
    pub(super) fn check_agent(&mut self, models: &[ModelConfig], stages: &[Stage], task: &Task) {
        if task.agent.is_some() {
            return;
        }
        let mut any_build = false;
        for s in stages {
            let StageKind::Build(BuildStage { harness, .. }) = &s.kind else {
                continue;
            };
            any_build = true;
            if *harness == Harness::Agent {
                let at = root().key("stages").key(&s.name).key("harness");
                self.no_agent_task(&at, &format!("build stage `{}`", s.name), task);
            }
        }
        for (i, m) in models.iter().enumerate() {
            if any_build && m.harness == Some(Harness::Agent) {
                let at = root().key("models").index(i).key("harness");
                self.no_agent_task(&at, &format!("model `{}`", m.id), task);
            }
        }
    }

    pub(super) fn no_agent_task(&mut self, at: &KeyPath, who: &str, task: &Task) {
        let msg = format!(
            "{who} builds with harness `agent`, but task `{}` declares no [agent] table",
            task.name
        );
        self.err(at, msg).help = Some(format!(
            "add `[agent]` with `verify = [...]` (a command writing JUnit XML to $PIPE_JUNIT) to {}",
            task.file.display()
        ));
    }
}
