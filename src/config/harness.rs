//! What pipe itself tells a model that builds with its agent loop: the tool definitions and the
//! system prompt. They live with the configuration because they are configuration to a cache key:
//! the plan hashes them ([`harness_digest`]) without reaching into the stage that sends them.

use crate::config::AgentSettings;
use crate::config::task::{AgentTask, Task};

/// Tool definitions, in the chat-completions `tools` shape.
pub fn tool_specs() -> Vec<serde_json::Value> {
    let f = |name: &str, description: &str, properties: serde_json::Value, required: &[&str]| {
        serde_json::json!({
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                },
            },
        })
    };
    let path =
        serde_json::json!({"type": "string", "description": "relative to the workspace root"});
    vec![
        f(
            "list_dir",
            "List the files under a directory of the workspace (recursively), with sizes.",
            serde_json::json!({"path": path}),
            &["path"],
        ),
        f(
            "read_file",
            "Read a file of the workspace (the first 64 KiB).",
            serde_json::json!({"path": path}),
            &["path"],
        ),
        f(
            "write_file",
            "Create or replace a file of the workspace. Protected files (tests, test-runner configuration) are refused.",
            serde_json::json!({"path": path, "content": {"type": "string"}}),
            &["path", "content"],
        ),
        f(
            "edit_file",
            "Replace the one occurrence of `old` in a file with `new`.",
            serde_json::json!({"path": path, "old": {"type": "string"}, "new": {"type": "string"}}),
            &["path", "old", "new"],
        ),
        f(
            "run",
            "Run an allowed command (an argument vector) from the workspace root in a sandbox without network. Files it changes are NOT kept: change files with write_file or edit_file.",
            serde_json::json!({"command": {"type": "array", "items": {"type": "string"}}}),
            &["command"],
        ),
        f(
            "done",
            "Finish. pipe runs the visible tests; the build ends only if they pass, otherwise you get the failures back.",
            serde_json::json!({"summary": {"type": "string"}}),
            &[],
        ),
    ]
}

/// The system message: the tools, the rules, the verification, the budgets.
pub fn system_prompt(task: &Task, agent: &AgentTask, settings: &AgentSettings) -> String {
    let words = |v: &[String]| v.join(" ");
    let allow: Vec<String> = agent
        .allow
        .iter()
        .map(|p| format!("- `{} ...`", words(p)))
        .collect();
    let visible = agent.visible_name.as_ref().map_or_else(String::new, |v| {
        format!("The visible tests are in `{v}/` (read them; they cannot be changed). ")
    });
    format!(
        "You are a coding agent working in a workspace through tools. Implement the task so that it \
verifiably works.\n\n\
Tools: list_dir, read_file, write_file, edit_file (files of the workspace, paths relative to its root), \
run (an allowed command in a sandbox without network; its file changes are not kept) and done.\n\n\
{visible}`done` runs the verification `{verify}`: the build ends only when tests really ran and all \
passed; otherwise you get the failures and continue.\n\n\
Commands `run` accepts (argument-vector prefixes):\n{allow}\n\n\
Protected paths cannot be written: {protected}. Paths outside the workspace are refused.\n\n\
Budgets: {steps} model calls in all, {ctx} context tokens per pass, {wall} seconds. Keep a short plan \
and progress notes in `{notes}`: when a pass runs out of context, a fresh one starts on the same \
workspace and your notes are what it remembers.",
        verify = words(&agent.verify),
        allow = allow.join("\n"),
        protected = task.protected_patterns.join(", "),
        steps = settings.max_steps,
        ctx = settings.max_context_tokens,
        wall = settings.wall_secs,
        notes = settings.notes_file,
    )
}

/// A digest of what pipe itself tells the agent (tool definitions, the system prompt's text), for
/// cache keys: changing them re-runs agent builds.
pub fn harness_digest(task: &Task, settings: &AgentSettings) -> String {
    let agent = task.agent.clone().unwrap_or(AgentTask {
        visible_dir: None,
        visible_name: None,
        verify: Vec::new(),
        allow: Vec::new(),
    });
    let text = serde_json::json!({
        "tools": tool_specs(),
        "system": system_prompt(task, &agent, settings),
    });
    blake3::hash(text.to_string().as_bytes())
        .to_hex()
        .to_string()
}
