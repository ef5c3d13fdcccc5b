//! Publish: the aggregate as a report people read (`report.md`) and the aggregate itself for
//! machines, written in the node directory and copied to the round directory.

use std::path::{Path, PathBuf};

use super::{NodeCtx, NodeError, write_output, write_text};
use crate::aggregate::{Aggregate, RoundData};
use crate::base::fsutil;
use crate::config::{PublishFormat, PublishStage};
use crate::plan::NodeKind;
use crate::report::markdown::markdown;

pub fn run(ctx: &NodeCtx, stage: &PublishStage, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let PublishStage { formats } = stage;
    let agg_node = ctx
        .upstream_of_kind(NodeKind::Aggregate)
        .ok_or_else(|| NodeError::Internal("publish without aggregate".into()))?;
    let a: Aggregate = ctx.read_output(agg_node, "aggregate.json")?;
    let mut outputs = Vec::new();
    for f in formats {
        let name = match f {
            PublishFormat::Markdown => write_text(dir, "report.md", &markdown(&a))?,
            PublishFormat::Json => write_output(dir, "aggregate.json", &a)?,
            PublishFormat::Dataset => {
                let data: RoundData = ctx.read_output(agg_node, "round-data.json")?;
                write_output(
                    dir,
                    "dataset.json",
                    &crate::report::dataset::dataset(vec![(data, a.clone())]),
                )?
            }
            PublishFormat::Html => {
                write_text(dir, "report.html", &crate::report::html::render(&a))?
            }
        };
        // The round directory gets a copy of each, where people look first.
        let from = dir.join(&name);
        let to = ctx.store.root.join(&name);
        let bytes = std::fs::read(&from).map_err(super::io(&from))?;
        fsutil::write_atomic(&to, &bytes).map_err(super::io(&to))?;
        outputs.push(name);
    }
    Ok(outputs)
}
