//! pipe: peer-judged LLM coding benchmarks as declarative, resumable pipelines.
//!
//! The phases, each its own type: [`source`] + [`config`] (raw serde -> validated
//! [`config::Pipeline`]) -> [`plan`] (sealed petgraph node DAG with cache keys) -> [`exec`]
//! (tokio executor) -> [`store`] (node records and outputs under `out/<round>/`).

pub mod aggregate;
pub mod bench;
pub mod checktask;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod diag;
pub mod dirhandle;
pub mod exec;
pub mod fsutil;
pub mod html;
pub mod humaneval;
pub mod import;
pub mod interrupt;
pub mod junit;
pub mod key;
pub mod limits;
pub mod names;
pub mod outstanding;
pub mod plan;
pub mod progress;
pub mod provider;
pub mod rubric;
pub mod sandbox;
pub mod source;
pub mod stages;
pub mod stats;
pub mod store;
pub mod task;
pub mod templates;
