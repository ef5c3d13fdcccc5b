//! The `command` table of a build stage with the command harness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ctx::Loader;
use crate::config::check::section;
use crate::config::raw::{RawCommandHarness, RawGatewayLimits};
use crate::config::templates::{self, CommandCtx};
use crate::config::{CommandHarness, GatewayLimits, Harness, Template};
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
                "add [{at}] with `run = \"...\"` (the agent CLI's command line) and `network = false` (through the model gateway)"
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
        ok &= self.command_with(&at, raw.with.as_deref());
        let tools = match &raw.tools {
            Some(rel) => self.command_tools(&at, rel),
            None => Some((None, BTreeMap::new())),
        };
        // `Some(None)`: no gateway (the command has network); `None`: a wrong table (reported).
        let gateway = match network {
            Some(false) => {
                let keys_out = self.no_key_in_env(&at, &raw.env);
                self.gateway_limits(&at).filter(|_| keys_out).map(Some)
            }
            Some(true) => self.no_gateway(&at).then_some(None),
            None => None,
        };
        let (Some(network), Some((tools, tools_digests)), Some(gateway), true) =
            (network, tools, gateway, ok)
        else {
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
            gateway,
            image: raw
                .with
                .as_ref()
                .map(|names| crate::sandbox::clis::image_for(names)),
            with: raw.with.unwrap_or_default(),
        })))
    }

    /// `[...command.gateway]` of a command without network: the limits, the defaults where a key
    /// is left out. `None` when a value is wrong (reported).
    fn gateway_limits(&mut self, at: &KeyPath) -> Option<GatewayLimits> {
        let at = at.key("gateway");
        let mut limits = GatewayLimits::default();
        if self.doc.get(&at).is_none() {
            return Some(limits);
        }
        let raw: RawGatewayLimits = section(self.doc, &at, "the gateway limits", &mut self.diags)?;
        let mut ok = true;
        let mut int = |l: &mut Self, key: &str, v: Option<i64>, max: i64, unit: &str| {
            let v = v?;
            if (1..=max).contains(&v) {
                return Some(v);
            }
            l.err(
                &at.key(key),
                format!("`{key}` is {v}; it must be between 1 and {max}{unit}"),
            )
            .help = Some(format!("set `{key}` in the range, or remove it"));
            ok = false;
            None
        };
        if let Some(v) = int(self, "max_requests", raw.max_requests, 100_000, " requests") {
            limits.max_requests = u32::try_from(v).unwrap_or(u32::MAX);
        }
        limits.max_tokens = int(
            self,
            "max_tokens",
            raw.max_tokens,
            1_000_000_000_000,
            " tokens",
        )
        .map(i64::unsigned_abs);
        limits.max_wall_secs = int(
            self,
            "max_wall_secs",
            raw.max_wall_secs,
            i64::try_from(crate::base::limits::MAX_TIMEOUT_SECS).unwrap_or(i64::MAX),
            " seconds",
        )
        .map(i64::unsigned_abs);
        if let Some(c) = raw.max_cost_usd {
            if c.is_finite() && c > 0.0 {
                limits.max_cost_usd = Some(c);
            } else {
                self.err(
                    &at.key("max_cost_usd"),
                    format!("`max_cost_usd` is {c}; it must be a positive number of dollars"),
                )
                .help = Some("e.g. `max_cost_usd = 0.50`, or remove it".into());
                ok = false;
            }
        }
        ok.then_some(limits)
    }

    /// A command building through the gateway may not be handed a provider's key: the gateway
    /// holds it, and it never enters the sandbox. False when one is (reported).
    fn no_key_in_env(&mut self, at: &KeyPath, env: &[String]) -> bool {
        let mut ok = true;
        for (i, name) in env.iter().enumerate() {
            let Some((provider, _)) = self.provider_keys.iter().find(|(_, k)| k == name).cloned()
            else {
                continue;
            };
            self.err(
                &at.key("env").index(i),
                format!("`{name}` is provider `{provider}`'s API key: it never enters the sandbox"),
            )
            .help = Some(
                "the model gateway holds the key and hands the build a token of its own: remove \
                 it from `env` (the CLI finds $OPENAI_API_KEY and $PIPE_GATEWAY_TOKEN set)"
                    .into(),
            );
            ok = false;
        }
        ok
    }

    /// With `network = true` the CLI calls its endpoint itself: a gateway table is refused.
    fn no_gateway(&mut self, at: &KeyPath) -> bool {
        let at = at.key("gateway");
        if self.doc.get(&at).is_none() {
            return true;
        }
        self.err(
            &at,
            "the gateway's limits apply only when the command has no network",
        )
        .help = Some(
            "with `network = true` the CLI reaches its endpoint itself, unmetered: set \
             `network = false` to build through the gateway, or remove this table"
                .into(),
        );
        false
    }

    /// `network`, which the command harness must set; `None` when missing (reported).
    fn command_network(&mut self, at: &KeyPath, network: Option<bool>) -> Option<bool> {
        if network.is_none() {
            self.err(
                at,
                "the command harness must say whether its command gets network: `network` is missing",
            )
            .help = Some(
                "add `network = false` to build through pipe's model gateway (the CLI's only way \
                 out: the key stays outside, every call is metered, limited and recorded), or \
                 `network = true` to open the build sandbox's network to the CLI itself \
                 (unmetered and unreplayable; the gate stays offline)"
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

    /// `with`, the agent CLIs the command runs: known names (`sandbox::clis::NAMES`), each once,
    /// at least one. False when not (reported).
    fn command_with(&mut self, at: &KeyPath, with: Option<&[String]>) -> bool {
        use crate::sandbox::clis::NAMES;
        let Some(names) = with else { return true };
        let at = at.key("with");
        if names.is_empty() {
            self.err(&at, "`with` names no agent CLI").help = Some(format!(
                "name the CLIs the command runs, e.g. `with = [\"{}\"]`, or remove `with` (the command then runs in the task's image)",
                NAMES[0]
            ));
            return false;
        }
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            let here = at.index(i);
            if !NAMES.contains(&name.as_str()) {
                let close = crate::base::diag::suggest(name, NAMES.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                self.err(&here, format!("unknown agent CLI `{name}`")).help = Some(format!(
                    "{close}the agent CLIs pipe builds images for: {}",
                    NAMES.join(", ")
                ));
                ok = false;
            } else if names[..i].contains(name) {
                self.err(&here, format!("`{name}` is listed twice")).help =
                    Some("name each agent CLI once".into());
                ok = false;
            }
        }
        ok
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
