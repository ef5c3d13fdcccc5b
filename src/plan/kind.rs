//! What kind of work a node does: the node-level twin of [`crate::config::StageKind`], without
//! the stage's settings. Spelled in JSON and reports exactly as the stage kinds are (`build`,
//! `gate`, ...).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::StageKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Build,
    Gate,
    Judge,
    Aggregate,
    Publish,
    Command,
}

impl NodeKind {
    /// The kind of the nodes a stage of `kind` expands into.
    pub fn of(kind: &StageKind) -> Self {
        match kind {
            StageKind::Build(_) => Self::Build,
            StageKind::Gate(_) => Self::Gate,
            StageKind::Judge(_) => Self::Judge,
            StageKind::Aggregate => Self::Aggregate,
            StageKind::Publish(_) => Self::Publish,
            StageKind::Command(_) => Self::Command,
        }
    }

    /// The kind's name, as a pipeline file spells it (`kind = "build"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Gate => "gate",
            Self::Judge => "judge",
            Self::Aggregate => "aggregate",
            Self::Publish => "publish",
            Self::Command => "command",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_spelled_as_stage_kinds() {
        let all = [
            NodeKind::Build,
            NodeKind::Gate,
            NodeKind::Judge,
            NodeKind::Aggregate,
            NodeKind::Publish,
            NodeKind::Command,
        ];
        for (k, name) in all.iter().zip(StageKind::NAMES) {
            assert_eq!(k.name(), name);
            assert_eq!(serde_json::to_value(k).unwrap(), name);
            assert_eq!(k.to_string(), name);
        }
    }
}
