//! The names of the files a node writes in its directory, each declared once: the runners write
//! them and read their upstream nodes' by these names.

/// A build's report ([`BuildReport`](super::builds::report::BuildReport)).
pub const BUILD_JSON: &str = "build.json";
/// A gate's report ([`GateReport`](super::gate::GateReport)).
pub const GATE_JSON: &str = "gate.json";
/// A judge's judgment ([`Judgment`](super::judge::Judgment)).
pub const JUDGMENT_JSON: &str = "judgment.json";
/// A command stage's report.
pub const COMMAND_JSON: &str = "command.json";
/// The model's answer, every turn of it.
pub const ANSWER_MD: &str = "answer.md";
/// The prompt as rendered for the model.
pub const PROMPT_MD: &str = "prompt.md";
/// The agent harness's conversation, one message a line.
pub const TRANSCRIPT_JSONL: &str = "transcript.jsonl";
/// What the command harness's agent CLI printed.
pub const AGENT_OUTPUT_TXT: &str = "agent-output.txt";
/// What the gate's test run printed.
pub const OUTPUT_TXT: &str = "output.txt";
/// The directory of a build's implementation files.
pub const FILES_DIR: &str = "files";
