//! `[stages.NAME]`: each kind's table, and the names a stage needs.

use std::collections::HashSet;

use super::ctx::{Loader, root};
use crate::base::diag::did_you_mean;
use crate::base::names::SafeName;
use crate::config::check::{kind_of, section};
use crate::config::raw::{
    RawAggregateStage, RawBuildStage, RawCommandStage, RawGateStage, RawJudgeStage,
    RawPublishStage, RawStageKind,
};
use crate::config::rubric::Rubric;
use crate::config::templates::{BuildCtx, JudgeCtx};
use crate::config::{
    BuildStage, CommandStage, GateStage, Harness, JudgeStage, PublishFormat, PublishStage, Stage,
    StageKind,
};
use crate::source::KeyPath;

impl Loader<'_> {
    pub(super) fn stages(&mut self) -> Option<Vec<Stage>> {
        let at = root().key("stages");
        let Some(value) = self.doc.get(&at) else {
            self.err(&root(), "the pipeline has no stages").help =
                Some("add [stages.build], [stages.gate], ...".into());
            return None;
        };
        let Some(map) = value.as_object() else {
            let msg = format!(
                "[stages] must be a table of named stages, found {}",
                kind_of(value)
            );
            self.err(&at, msg);
            return None;
        };
        let names: Vec<String> = map.keys().cloned().collect();
        let known: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut stages = Vec::new();
        let mut ok = true;
        for name in &names {
            let p = at.key(name);
            let safe = self.safe_name(
                &p,
                "stage name",
                name,
                true,
                "a stage's name is its directory under out/<round>/nodes/",
            );
            match (self.stage(&p, name, &names, &known), safe) {
                (Some(s), Some(_)) => stages.push(s),
                _ => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let sorted = self.order(stages)?;
        self.check_shape(&sorted);
        Some(sorted)
    }

    /// One stage's table: its kind's settings and the stages it needs. `None` when any of it is
    /// wrong (reported).
    fn stage(
        &mut self,
        p: &KeyPath,
        name: &str,
        names: &[String],
        known: &HashSet<&str>,
    ) -> Option<Stage> {
        let kind = self.stage_kind(p, name)?;
        let what = format!("stage `{name}`");
        let (needs, kind) = match kind.kind.as_str() {
            "build" => self.build_stage(p, &what)?,
            "gate" => self.gate_stage(p, &what)?,
            "judge" => self.judge_stage(p, &what)?,
            "aggregate" => {
                let r: RawAggregateStage = section(self.doc, p, &what, &mut self.diags)?;
                (r.needs, StageKind::Aggregate)
            }
            "publish" => self.publish_stage(p, &what)?,
            "command" => self.command_stage(p, &what)?,
            other => {
                let help = did_you_mean(other, StageKind::NAMES);
                self.err(
                    &p.key("kind"),
                    format!("stage `{name}` has unknown kind `{other}`"),
                )
                .help = help;
                return None;
            }
        };
        self.check_needs(p, name, &needs, names, known)
            .then_some(())?;
        Some(Stage {
            name: SafeName::new(name).ok()?,
            needs,
            kind,
        })
    }

    /// The stage's `kind`, a string; `None` when it is missing or not a string (reported).
    fn stage_kind(&mut self, p: &KeyPath, name: &str) -> Option<RawStageKind> {
        match self.doc.get(p).and_then(|v| v.get("kind")) {
            Some(serde_json::Value::String(k)) => Some(RawStageKind { kind: k.clone() }),
            Some(other) => {
                let msg = format!(
                    "stage `{name}`: `kind` must be a string, found {}",
                    kind_of(other)
                );
                self.err(&p.key("kind"), msg);
                None
            }
            None => {
                self.err(p, format!("stage `{name}` has no `kind`")).help = Some(format!(
                    "set kind to one of {}",
                    StageKind::NAMES.join(", ")
                ));
                None
            }
        }
    }

    fn build_stage(&mut self, p: &KeyPath, what: &str) -> Option<(Vec<String>, StageKind)> {
        let r: RawBuildStage = section(self.doc, p, what, &mut self.diags)?;
        let harness = match r.harness.as_deref() {
            None => Some(Harness::SingleShot),
            Some(h) => self.harness(&p.key("harness"), h),
        };
        let agent = self.agent_settings(&p.key("agent"), r.agent.is_some());
        let prompt = self.template(&p.key("prompt"), &r.prompt, &BuildCtx::sample());
        let command = harness.map(|h| self.command_harness(p, h));
        Some((
            r.needs,
            StageKind::Build(BuildStage {
                prompt: prompt?,
                harness: harness?,
                command: command?.ok()?,
                agent: agent.as_ref()?.0.clone(),
                agent_prompt: agent?.1,
            }),
        ))
    }

    fn gate_stage(&mut self, p: &KeyPath, what: &str) -> Option<(Vec<String>, StageKind)> {
        let r: RawGateStage = section(self.doc, p, what, &mut self.diags)?;
        self.timeout(
            &p.key("timeout_secs"),
            r.timeout_secs,
            "one run of the hidden tests",
        );
        Some((
            r.needs,
            StageKind::Gate(GateStage {
                timeout_secs: r.timeout_secs,
                repeat: r.repeat,
            }),
        ))
    }

    fn judge_stage(&mut self, p: &KeyPath, what: &str) -> Option<(Vec<String>, StageKind)> {
        let r: RawJudgeStage = section(self.doc, p, what, &mut self.diags)?;
        let rubric = self
            .file(&p.key("rubric"), &r.rubric, "rubric")
            .and_then(|f| match Rubric::load(&f) {
                Ok(r) => Some(r),
                Err(ds) => {
                    self.diags.extend(ds);
                    None
                }
            });
        let prompt = match &rubric {
            Some(rb) => self.template(&p.key("prompt"), &r.prompt, &JudgeCtx::sample(rb)),
            None => self
                .file(&p.key("prompt"), &r.prompt, "prompt template")
                .and(None),
        };
        Some((
            r.needs,
            StageKind::Judge(JudgeStage {
                prompt: prompt?,
                rubric: Box::new(rubric?),
                max_impl_bytes: r.max_impl_bytes.unwrap_or(60_000),
            }),
        ))
    }

    fn publish_stage(&mut self, p: &KeyPath, what: &str) -> Option<(Vec<String>, StageKind)> {
        let r: RawPublishStage = section(self.doc, p, what, &mut self.diags)?;
        let names = r.formats.unwrap_or_else(|| {
            ["markdown", "json", "dataset", "html"]
                .map(String::from)
                .to_vec()
        });
        let mut formats = Vec::new();
        for (i, f) in names.iter().enumerate() {
            match f.as_str() {
                "markdown" => formats.push(PublishFormat::Markdown),
                "json" => formats.push(PublishFormat::Json),
                "dataset" => formats.push(PublishFormat::Dataset),
                "html" => formats.push(PublishFormat::Html),
                other => {
                    let help = did_you_mean(other, PublishFormat::NAMES);
                    self.err(
                        &p.key("formats").index(i),
                        format!("unknown publish format `{other}`"),
                    )
                    .help = help;
                }
            }
        }
        Some((r.needs, StageKind::Publish(PublishStage { formats })))
    }

    fn command_stage(&mut self, p: &KeyPath, what: &str) -> Option<(Vec<String>, StageKind)> {
        let r: RawCommandStage = section(self.doc, p, what, &mut self.diags)?;
        if r.command.trim().is_empty() {
            self.err(&p.key("command"), "command is empty");
        }
        self.timeout(&p.key("timeout_secs"), r.timeout_secs, "the command");
        Some((
            r.needs,
            StageKind::Command(CommandStage {
                command: r.command,
                timeout_secs: r.timeout_secs.unwrap_or(300),
            }),
        ))
    }

    /// Every name in `needs` is another stage of the round. False when not (reported).
    fn check_needs(
        &mut self,
        p: &KeyPath,
        name: &str,
        needs: &[String],
        names: &[String],
        known: &HashSet<&str>,
    ) -> bool {
        let mut ok = true;
        for (i, need) in needs.iter().enumerate() {
            if need == name {
                self.err(
                    &p.key("needs").index(i),
                    format!("stage `{name}` needs itself"),
                )
                .help = Some("a stage cannot depend on its own output".into());
                ok = false;
            } else if !known.contains(need.as_str()) {
                let help = did_you_mean(need, names.iter().map(String::as_str));
                self.err(
                    &p.key("needs").index(i),
                    format!("stage `{name}` needs unknown stage `{need}`"),
                )
                .help = help;
                ok = false;
            }
        }
        ok
    }
}
