//! What a node is about: one implementation, one judgment of it, or the round. The plan's ids,
//! node directories, recording names and cache keys are all spelled from it.

use serde::Serialize;

use crate::base::names::SafeName;

/// What a node is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Subject {
    /// One implementation: a model's build sample (of one task, in a round of several).
    Impl {
        #[serde(skip_serializing_if = "Option::is_none")]
        task: Option<SafeName>,
        model: SafeName,
        sample: u32,
    },
    /// A model judging an implementation (of one task, in a round of several).
    Judgment {
        judge: SafeName,
        #[serde(skip_serializing_if = "Option::is_none")]
        task: Option<SafeName>,
        model: SafeName,
        sample: u32,
    },
    /// The round as a whole.
    Round,
}

impl Subject {
    /// The implementation a node is about, if any: (task in a suite, model, sample).
    pub fn implementation(&self) -> Option<(Option<&SafeName>, &SafeName, u32)> {
        match self {
            Self::Impl {
                task,
                model,
                sample,
            }
            | Self::Judgment {
                task,
                model,
                sample,
                ..
            } => Some((task.as_ref(), model, *sample)),
            Self::Round => None,
        }
    }

    /// How the node's model calls name their subject (a recording's file under
    /// `<recordings>/<stage>/<model>/`): `1` for build sample 1, `alpha-1` for judging alpha's
    /// sample 1, each under its task's name in a suite (`humaneval-0/1`).
    pub fn call_subject(&self) -> Option<String> {
        let (task, own) = match self {
            Self::Impl { task, sample, .. } => (task, sample.to_string()),
            Self::Judgment {
                task,
                model,
                sample,
                ..
            } => (task, format!("{model}-{sample}")),
            Self::Round => return None,
        };
        Some(match task {
            Some(t) => format!("{t}/{own}"),
            None => own,
        })
    }

    /// The task a node works on, in a round of several; none means the round's only task.
    pub fn task(&self) -> Option<&SafeName> {
        match self {
            Self::Impl { task, .. } | Self::Judgment { task, .. } => task.as_ref(),
            Self::Round => None,
        }
    }
}
