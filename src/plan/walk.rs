//! Walks over a pipeline's stages that the plan and its keys share: the build a stage works on,
//! (everything upstream of a stage is `Pipeline::upstream_of`).

use crate::config::{Pipeline, StageKind};

/// Per stage of `p` (in its dependency order), the position of a build stage upstream of it, if
/// any: one pass over the stages, each taking its needs' answers. (The loader has checked that a
/// stage working per implementation has exactly one build upstream.)
pub fn build_upstream(p: &Pipeline) -> Vec<Option<usize>> {
    let position: std::collections::HashMap<&str, usize> = p
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut out: Vec<Option<usize>> = Vec::with_capacity(p.stages.len());
    for s in &p.stages {
        let found = s.needs.iter().find_map(|n| {
            let j = *position.get(n.as_str())?;
            if matches!(p.stages[j].kind, StageKind::Build(_)) {
                Some(j)
            } else {
                out.get(j).copied().flatten()
            }
        });
        out.push(found);
    }
    out
}
