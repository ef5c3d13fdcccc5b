//! pipe: peer-judged LLM coding benchmarks as declarative, resumable pipelines.
//!
//! A round flows down the phases, one folder each, and a module imports only from phases below
//! its own (docs/ARCHITECTURE.md has the rules):
//!
//! [`source`] (files as located documents) -> [`config`] (raw serde -> validated
//! [`config::Pipeline`]) -> [`plan`] (sealed petgraph node DAG with cache keys) -> [`exec`]
//! (scheduler and tokio driver) over [`store`] (node records and outputs under `out/<round>/`)
//! and [`results`] (every done node's result by key, shared by every round)
//! -> [`stages`] (each node kind's work, calling [`provider`]s and [`sandbox`]es) ->
//! [`aggregate`] (the round's numbers) -> [`report`] (markdown, HTML, the dataset).
//! [`formats`] reads published rounds from outside; [`tools`] are the side commands; [`cli`]
//! maps everything to exit codes. [`base`] and [`vocab`] sit below all of them.

pub mod aggregate;
pub mod base;
pub mod cli;
pub mod config;
pub mod exec;
pub mod formats;
pub mod gateway;
pub mod plan;
pub mod provider;
pub mod report;
pub mod results;
pub mod sandbox;
pub mod source;
pub mod stages;
pub mod store;
pub mod tools;
pub mod vocab;
