//! Walks over a pipeline's stages that the plan and its keys share: the build a stage works on,
//! and everything upstream of a stage.

use std::collections::HashSet;

use crate::config::{Pipeline, Stage, StageKind};

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

/// The names of every stage upstream of `stage`, each once: a walk over `needs` that visits only
/// what lies upstream.
pub fn upstream<'p>(p: &'p Pipeline, stage: &Stage) -> Vec<&'p str> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = stage.needs.iter().map(String::as_str).collect();
    while let Some(n) = todo.pop() {
        if let Some(s) = p.stage(n)
            && seen.insert(s.name.as_str())
        {
            todo.extend(s.needs.iter().map(String::as_str));
            out.push(s.name.as_str());
        }
    }
    out
}
