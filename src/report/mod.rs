//! The round for people and for machines: markdown, the HTML page, the openbenchmark dataset.
//! Each renderer takes the round's data and its aggregate and returns what is written.

pub mod dataset;
pub mod html;
pub mod markdown;
