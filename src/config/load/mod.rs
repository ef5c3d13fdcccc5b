//! Pipeline file -> validated [`Pipeline`], with every problem reported at once. Each section of
//! the file has its own loader file; [`ctx`] holds the state they share.

mod agent;
mod command;
mod ctx;
mod files;
mod models;
mod order;
pub mod providers;
mod round;
mod stages;
mod tasks;

use std::path::Path;

use self::ctx::{Loader, root};
use super::Pipeline;
use super::check::section;
use super::raw::RawTop;
use crate::base::diag::Diag;
use crate::base::limits;
use crate::source::SourceDoc;

/// When the pipeline is loaded for a run, a missing API-key variable is an error; for `validate`
/// it is a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Validate,
    Run,
}

/// Loads and validates a pipeline file. `Err` holds every error found (and the warnings);
/// `Ok` carries the warnings in [`Pipeline::warnings`].
pub fn load(file: &Path, purpose: Purpose) -> Result<Pipeline, Vec<Diag>> {
    let doc = SourceDoc::load(file).map_err(|d| vec![d])?;
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut l = Loader {
        doc: &doc,
        dir,
        diags: Vec::new(),
        missing_var_fails: purpose == Purpose::Run,
        provider_keys: Vec::new(),
    };
    let pipeline = l.pipeline();
    if let Some(p) = &pipeline {
        l.diags.extend(plan_too_large(&doc, p));
    }
    let has_errors = l.diags.iter().any(Diag::is_error);
    match pipeline {
        Some(mut p) if !has_errors => {
            p.warnings = l.diags;
            Ok(p)
        }
        _ => Err(l.diags),
    }
}

/// A round whose plan would pass [`MAX_PLAN_NODES`](limits::MAX_PLAN_NODES) nodes or
/// [`MAX_PLAN_EDGES`](limits::MAX_PLAN_EDGES) edges is refused before it is expanded (10,000
/// models judging each other are 100,000,000 judgments), pointing at the stage that makes most.
fn plan_too_large(doc: &SourceDoc, p: &Pipeline) -> Option<Diag> {
    let size = crate::config::size::size(p);
    let (what, count, limit) = if size.nodes > limits::MAX_PLAN_NODES {
        ("nodes", size.nodes, limits::MAX_PLAN_NODES)
    } else if size.edges > limits::MAX_PLAN_EDGES {
        (
            "dependencies between nodes",
            size.edges,
            limits::MAX_PLAN_EDGES,
        )
    } else {
        return None;
    };
    let (stage, nodes) = &size.largest;
    Some(
        doc.error_at(
            &root().key("stages").key(stage),
            format!(
                "this round expands to {count} {what}, over pipe's limit of {limit}; stage `{stage}` alone makes {nodes} nodes ({} models, {} samples, {} task(s))",
                p.models.len(),
                p.round.samples,
                p.tasks.len()
            ),
            true,
        )
        .help("pipe plans every node of a round before it runs any: split the round into several pipelines (fewer models, samples or tasks each)"),
    )
}

impl Loader<'_> {
    fn pipeline(&mut self) -> Option<Pipeline> {
        if !self.doc.value.is_object() {
            self.err(&root(), "a pipeline file must be a table of sections");
            return None;
        }
        self.diags.extend(self.doc.non_finite_errors());
        // Unknown top-level sections; `round` missing is reported here too.
        section::<RawTop>(self.doc, &root(), "the pipeline file", &mut self.diags);
        let round = self.round();
        let providers = self.providers();
        self.provider_keys = providers
            .values()
            .filter_map(|p| match &p.kind {
                crate::config::ProviderKind::OpenAi {
                    api_key_env: Some(k),
                    ..
                } => Some((p.name.clone(), k.clone())),
                _ => None,
            })
            .collect();
        let models = self.models(&providers);
        let stages = self.stages();
        let tasks = round.as_ref().and_then(|(_, dirs)| self.tasks(dirs));
        if let (Some(stages), Some(tasks)) = (&stages, &tasks) {
            for task in tasks {
                self.check_agent(&models, stages, task);
            }
        }
        let (round, _) = round?;
        let mut stages = stages?;
        let tasks = tasks?;
        if tasks.len() > 1 {
            self.suite_checks(&mut stages);
        }
        Some(Pipeline::new(
            self.doc.file.clone(),
            round,
            providers,
            models,
            stages,
            tasks,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::providers::{DEFAULT_RETRY_BASE_MS, DEFAULT_RETRY_MAX_MS};
    use super::*;
    use crate::config::{BuildStage, CommandHarness, Harness, ProviderKind, StageKind};

    /// Loads the mini fixture with one extra `openai` provider whose body is `provider`;
    /// returns the pipeline's openai settings, or the errors.
    fn with_provider(provider: &str) -> Result<ProviderKind, Vec<Diag>> {
        let (_dir, file) = mini_copy();
        let text = std::fs::read_to_string(&file).unwrap().replacen(
            "[[models]]",
            &format!(
                "[providers.api]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n{provider}\n\n[[models]]"
            ),
            1,
        );
        std::fs::write(&file, text).unwrap();
        load(&file, Purpose::Validate).map(|p| p.providers["api"].kind.clone())
    }

    /// The mini fixture's build stage with `lines` added to its table; the build's kind.
    fn with_build(lines: &str) -> Result<StageKind, Vec<Diag>> {
        let (_dir, file) = mini_copy();
        let text = std::fs::read_to_string(&file).unwrap().replacen(
            "prompt = \"build.md.j2\"\n",
            &format!("prompt = \"build.md.j2\"\n{lines}\n"),
            1,
        );
        std::fs::write(&file, text).unwrap();
        load(&file, Purpose::Validate).map(|p| p.stage("build").unwrap().kind.clone())
    }

    fn build_errors(lines: &str) -> Vec<(String, String)> {
        with_build(lines)
            .expect_err("the pipeline must be refused")
            .into_iter()
            .filter(Diag::is_error)
            .map(|d| (d.path, d.message))
            .collect()
    }

    #[test]
    fn the_command_table_goes_with_the_command_harness_only() {
        let StageKind::Build(BuildStage {
            harness, command, ..
        }) = with_build(
            "harness = \"command\"\n[stages.build.command]\nrun = \"agent {{ model.slug }}\"\nnetwork = false",
        )
        .unwrap()
        else {
            panic!("not a build")
        };
        assert_eq!(harness, Harness::Command);
        let command = command.unwrap();
        assert!(!command.network);
        assert_eq!(command.timeout_secs, CommandHarness::DEFAULT_TIMEOUT_SECS);
        assert_eq!(
            build_errors("harness = \"command\""),
            [(
                "stages.build.harness".to_string(),
                "`harness = \"command\"` needs a `command` table saying what to run".to_string()
            )]
        );
        assert_eq!(
            build_errors("[stages.build.command]\nrun = \"agent\"\nnetwork = true"),
            [(
                "stages.build.command".to_string(),
                "a `command` table is read only by the command harness".to_string()
            )]
        );
        assert_eq!(
            build_errors(
                "harness = \"command\"\n[stages.build.command]\nrun = \" \"\nnetwork = true\ntimeout_secs = 0"
            ),
            [
                (
                    "stages.build.command.run".to_string(),
                    "run is empty".to_string()
                ),
                (
                    "stages.build.command.timeout_secs".to_string(),
                    "`timeout_secs` is 0; it must be between 1 and 86400 seconds".to_string()
                ),
            ]
        );
    }

    const COMMAND: &str =
        "harness = \"command\"\n[stages.build.command]\nrun = \"qwen --yolo\"\nnetwork = false";

    #[test]
    fn with_names_the_image_of_its_agent_clis() {
        let image_of = |lines: &str| {
            let StageKind::Build(b) = with_build(&format!("{COMMAND}\n{lines}")).unwrap() else {
                panic!("not a build")
            };
            let c = b.command.unwrap();
            (c.with.clone(), c.image.clone())
        };
        assert_eq!(image_of(""), (vec![], None));
        let (with, image) = image_of("with = [\"qwen-code\", \"opencode\"]");
        assert_eq!(with, ["qwen-code", "opencode"]);
        assert_eq!(
            image.as_deref(),
            Some(crate::sandbox::clis::image_for(&with).as_str())
        );
        assert!(
            image
                .unwrap()
                .starts_with("pipe-sandbox/cli-opencode-qwen-code:")
        );
    }

    #[test]
    fn with_refuses_unknown_and_repeated_clis() {
        let errors = |lines: &str| build_errors(&format!("{COMMAND}\n{lines}"));
        assert_eq!(
            errors("with = [\"qwen\", \"opencode\", \"opencode\"]"),
            [
                (
                    "stages.build.command.with[0]".to_string(),
                    "unknown agent CLI `qwen`".to_string()
                ),
                (
                    "stages.build.command.with[2]".to_string(),
                    "`opencode` is listed twice".to_string()
                ),
            ]
        );
        assert_eq!(
            errors("with = []"),
            [(
                "stages.build.command.with".to_string(),
                "`with` names no agent CLI".to_string()
            )]
        );
    }

    /// A copy of the mini fixture round; returns its directory (kept alive) and pipeline file.
    fn mini_copy() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini");
        for entry in walkdir::WalkDir::new(&fixture) {
            let entry = entry.unwrap();
            let dest = dir
                .path()
                .join(entry.path().strip_prefix(&fixture).unwrap());
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(dest).unwrap();
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
        let file = dir.path().join("pipeline.toml");
        (dir, file)
    }

    fn backoff_of(kind: &ProviderKind) -> (u64, u64) {
        match kind {
            ProviderKind::OpenAi {
                retry_base_ms,
                retry_max_ms,
                ..
            } => (*retry_base_ms, *retry_max_ms),
            ProviderKind::Replay { .. } => panic!("not openai"),
        }
    }

    fn errors(provider: &str) -> Vec<(String, usize, String)> {
        let diags = with_provider(provider).expect_err("the pipeline must be refused");
        diags
            .into_iter()
            .filter(Diag::is_error)
            .map(|d| (d.path, d.line, d.message))
            .collect()
    }

    #[test]
    fn retry_backoff_defaults_and_settings() {
        assert_eq!(
            backoff_of(&with_provider("").unwrap()),
            (DEFAULT_RETRY_BASE_MS, DEFAULT_RETRY_MAX_MS)
        );
        assert_eq!(
            backoff_of(&with_provider("retry_base_ms = 250\nretry_max_ms = 250").unwrap()),
            (250, 250)
        );
        assert_eq!(
            backoff_of(&with_provider("retry_max_ms = 5000").unwrap()),
            (DEFAULT_RETRY_BASE_MS, 5000)
        );
    }

    #[test]
    fn retry_backoff_errors_are_located() {
        // The provider table starts on line 10 of the edited fixture: its settings on 13 and 14.
        assert_eq!(
            errors("retry_base_ms = 0\nretry_max_ms = 0"),
            [
                (
                    "providers.api.retry_base_ms".to_string(),
                    13,
                    "retry_base_ms must be at least 1".to_string()
                ),
                (
                    "providers.api.retry_max_ms".to_string(),
                    14,
                    "retry_max_ms must be at least 1".to_string()
                ),
            ]
        );
        assert_eq!(
            errors("retry_base_ms = 500\nretry_max_ms = 100"),
            [(
                "providers.api.retry_base_ms".to_string(),
                13,
                "retry_base_ms 500 exceeds retry_max_ms 100".to_string()
            )]
        );
        assert_eq!(
            errors("retry_base_ms = 90000"),
            [(
                "providers.api.retry_base_ms".to_string(),
                13,
                "retry_base_ms 90000 exceeds retry_max_ms (60000, the default)".to_string()
            )]
        );
        assert_eq!(
            errors("retry_max_ms = 10"),
            [(
                "providers.api.retry_max_ms".to_string(),
                13,
                "retry_max_ms 10 is below retry_base_ms (1000, the default)".to_string()
            )]
        );
        assert_eq!(
            errors("retry_base_ms = -1").len(),
            1,
            "a negative wait is a type error"
        );
    }
}
