//! The `command` table of a build stage with the command harness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ctx::Loader;
use crate::config::check::section;
use crate::config::raw::RawCommandHarness;
use crate::config::templates::{self, CommandCtx};
use crate::config::{CommandHarness, Harness, Template};
use crate::source::KeyPath;

impl Loader<'_> {
    /// The `command` table of a build stage: required by `harness = "command"` (with an explicit
    /// `network`), refused with any other harness. `None` when it is wrong (reported).
    pub(super) fn command_harness(
        &mut self,
        stage: &KeyPath,
        harness: Harness,
    ) -> Result<Option<Box<CommandHarness>>, ()> {
        let at = stage.key("command");
        let present = self.doc.get(&at).is_some();
        if harness != Harness::Command {
            if present {
                self.err(&at, "a `command` table is read only by the command harness")
                    .help =
                    Some("set `harness = \"command\"` on this stage, or remove the table".into());
                return Err(());
            }
            return Ok(None);
        }
        if !present {
            self.err(
                &stage.key("harness"),
                "`harness = \"command\"` needs a `command` table saying what to run",
            )
            .help = Some(format!(
                "add [{at}] with `run = \"...\"` (the agent CLI's command line) and `network = true`"
            ));
            return Err(());
        }
        let raw: RawCommandHarness =
            section(self.doc, &at, "the command harness", &mut self.diags).ok_or(())?;
        let network = self.command_network(&at, raw.network);
        let run = Template {
            path: self.doc.file.clone(),
            text: raw.run,
        };
        let mut ok = network.is_some();
        ok &= self.command_run(&at, &run);
        ok &= self.timeout(
            &at.key("timeout_secs"),
            raw.timeout_secs,
            "the agent command",
        );
        ok &= self.pass_through_env(&at.key("env"), &raw.env);
        ok &= self.command_usage(&at, raw.usage.as_deref());
        let tools = match &raw.tools {
            Some(rel) => self.command_tools(&at, rel),
            None => Some((None, BTreeMap::new())),
        };
        let (Some(network), Some((tools, tools_digests)), true) = (network, tools, ok) else {
            return Err(());
        };
        Ok(Some(Box::new(CommandHarness {
            run,
            network,
            timeout_secs: raw
                .timeout_secs
                .unwrap_or(CommandHarness::DEFAULT_TIMEOUT_SECS),
            env: raw.env,
            usage: raw.usage,
            tools,
            tools_digests,
        })))
    }

    /// `network`, which the command harness must set; `None` when missing (reported).
    fn command_network(&mut self, at: &KeyPath, network: Option<bool>) -> Option<bool> {
        if network.is_none() {
            self.err(
                at,
                "the command harness must say whether its command gets network: `network` is missing",
            )
            .help = Some(
                "an agent CLI reaches its model over the network: add `network = true` to open the \
                 build sandbox's network (the gate stays offline), or `network = false`"
                    .into(),
            );
        }
        network
    }

    /// The `run` template: not empty, and using only what a command's context has. False when
    /// not (reported).
    fn command_run(&mut self, at: &KeyPath, run: &Template) -> bool {
        if run.text.trim().is_empty() {
            self.err(&at.key("run"), "run is empty").help = Some(
                "the agent CLI's command line, e.g. `opencode run \"$(cat $PIPE_PROMPT)\"`".into(),
            );
            return false;
        }
        let Some(d) = templates::check(run, &CommandCtx::sample()) else {
            return true;
        };
        self.err(
            &at.key("run"),
            format!("in the run template: {}", d.message),
        )
        .help = Some(d.help.unwrap_or_else(|| {
            "the run template can use `model.id`, `model.slug`, `model.provider`, \
             `model.base_url`, `task.name` and `sample`"
                .into()
        }));
        false
    }

    /// `usage`, the file the CLI writes its token counts to: a path inside the workspace. False
    /// when not (reported).
    fn command_usage(&mut self, at: &KeyPath, usage: Option<&str>) -> bool {
        let Some(usage) = usage else { return true };
        if is_plain_relative(usage) {
            return true;
        }
        self.err(
            &at.key("usage"),
            format!("usage `{usage}` must be a path inside the workspace"),
        )
        .help = Some(
            "a relative path without `..`, e.g. `usage.json`; the CLI writes it in its working directory"
                .into(),
        );
        false
    }

    /// The `tools` directory and the digest of each file in it; `None` when it cannot be read
    /// (reported).
    fn command_tools(
        &mut self,
        at: &KeyPath,
        rel: &str,
    ) -> Option<(Option<PathBuf>, BTreeMap<String, String>)> {
        let dir = self.dir.join(rel);
        let listed = if dir.is_dir() {
            crate::base::fsutil::list_files(&dir).and_then(|files| {
                files
                    .into_iter()
                    .map(|f| {
                        let digest = crate::base::fsutil::hash_file(&dir.join(&f))?;
                        Ok((f.display().to_string(), digest))
                    })
                    .collect::<std::io::Result<BTreeMap<_, _>>>()
            })
        } else {
            Err(std::io::Error::other("not a directory"))
        };
        match listed {
            Ok(digests) => Some((Some(dir), digests)),
            Err(e) => {
                self.err(
                    &at.key("tools"),
                    format!("tools directory `{rel}` cannot be read: {e}"),
                )
                .help = Some(
                    "a directory relative to the pipeline file, copied to $PIPE_WORK/tools".into(),
                );
                None
            }
        }
    }

    /// The names of host variables a command harness passes into its sandbox: well-formed, not
    /// one the sandbox sets itself, set on this host (a warning at `validate`, an error at `run`).
    pub(super) fn pass_through_env(&mut self, at: &KeyPath, names: &[String]) -> bool {
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            let here = at.index(i);
            let well_formed = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !well_formed {
                self.err(&here, format!("`{name}` is not a variable name"))
                    .help = Some(
                    "env lists the NAMES of host variables (letters, digits, `_`), e.g. \"OPENROUTER_API_KEY\""
                        .into(),
                );
                ok = false;
            } else if name.starts_with("PIPE_") || RESERVED_ENV.contains(&name.as_str()) {
                self.err(&here, format!("`{name}` is set by the sandbox itself"))
                    .help = Some(format!(
                    "the sandbox sets {} and every PIPE_* variable; remove `{name}`",
                    RESERVED_ENV.join(", ")
                ));
                ok = false;
            } else if names[..i].contains(name) {
                self.err(&here, format!("`{name}` is listed twice"));
                ok = false;
            } else if std::env::var_os(name).is_none_or(|v| v.is_empty()) {
                let message =
                    format!("the variable `{name}` (passed to the agent command) is not set");
                let help = format!(
                    "export {name}=... before `pipe run` (the value is read from the environment only)"
                );
                ok &= !self.missing_var_fails;
                let d = self.missing_var(&here, message);
                self.diags.push(d.help(help));
            }
        }
        ok
    }
}

/// Variables the sandbox sets for every job; a command harness cannot pass its own.
const RESERVED_ENV: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];

/// A relative path of plain components (no root, no `..`, no `.`), not empty.
fn is_plain_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}
