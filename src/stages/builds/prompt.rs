//! What the build prompt template sees, for every harness.

use crate::base::fsutil;
use crate::config::templates::{BuildCtx, FileCtx, TaskCtx};
use crate::stages::{NodeCtx, NodeError, io};

/// What the build prompt template sees: the task, its starter workspace, the protected globs.
pub fn prompt_context(ctx: &NodeCtx, model: &str, sample: u32) -> Result<BuildCtx, NodeError> {
    let workspace = match &ctx.task().workspace_dir {
        Some(w) => fsutil::list_files(w)
            .map_err(io(w))?
            .into_iter()
            .map(|rel| {
                let content = std::fs::read_to_string(w.join(&rel)).unwrap_or_default();
                FileCtx {
                    path: rel.display().to_string(),
                    content,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(BuildCtx {
        task: TaskCtx {
            name: ctx.task().name.to_string(),
            spec: ctx.task().spec.clone(),
        },
        workspace,
        protected: ctx.task().protected_patterns.clone(),
        model: model.to_string(),
        sample,
    })
}
