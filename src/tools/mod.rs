//! Side commands beside the round: `pipe bench` and `pipe import humaneval`.

pub mod bench;
pub mod bench_gateway;
pub mod humaneval;
