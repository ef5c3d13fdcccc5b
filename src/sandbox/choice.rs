//! Which sandbox a run asks for: a round's `sandbox` setting or `--sandbox`. What it resolves
//! to on this machine is [`super::Sandbox::select`]'s answer.

use serde::Serialize;

/// Where model-written code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SandboxChoice {
    /// The local sandbox under bubblewrap, which must be installed and work.
    Local,
    /// A container per job (the engine must answer and the image be present).
    Docker,
    /// No isolation at all: model code runs as the user, with the network. An explicit opt-in.
    Unisolated,
    /// Docker, else the local sandbox under bubblewrap, else an error (or, with the round's
    /// `unisolated_fallback`, no isolation).
    Auto,
}

impl SandboxChoice {
    pub const NAMES: [&'static str; 4] = ["local", "docker", "unisolated", "auto"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Docker => "docker",
            Self::Unisolated => "unisolated",
            Self::Auto => "auto",
        }
    }
}
