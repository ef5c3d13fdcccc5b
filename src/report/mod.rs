//! The round for people and for machines: markdown, the HTML page, the openbenchmark dataset,
//! the aggregate itself and the terminal table. [`render`] turns a round's data and its aggregate
//! into the bytes of a file; [`summary`] into what `pipe aggregate` prints. The renderers share
//! their words and numbers through [`text`].

pub mod dataset;
pub mod html;
pub mod markdown;
pub mod terminal;
pub mod text;

use crate::aggregate::{Aggregate, RoundData};
use crate::config::PublishFormat;

/// A file a round is published as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `report.md`.
    Markdown,
    /// `aggregate.json`: every number of the report, for scripts.
    Aggregate,
    /// `dataset.json`: the round in the openbenchmark dataset schema v1.
    Dataset,
    /// `report.html`: one self-contained page with charts.
    Html,
}

impl Format {
    /// The file's name, in the node directory and the round directory alike.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Markdown => "report.md",
            Format::Aggregate => crate::aggregate::AGGREGATE_JSON,
            Format::Dataset => "dataset.json",
            Format::Html => "report.html",
        }
    }
}

impl From<PublishFormat> for Format {
    fn from(f: PublishFormat) -> Self {
        match f {
            PublishFormat::Markdown => Format::Markdown,
            PublishFormat::Json => Format::Aggregate,
            PublishFormat::Dataset => Format::Dataset,
            PublishFormat::Html => Format::Html,
        }
    }
}

/// The round as `format`: the bytes of its file.
pub fn render(format: Format, data: &RoundData, agg: &Aggregate) -> Vec<u8> {
    match format {
        Format::Markdown => markdown::markdown(agg).into_bytes(),
        Format::Aggregate => json(agg),
        Format::Dataset => json(&dataset::dataset([(data, agg)])),
        Format::Html => html::render(agg).into_bytes(),
    }
}

/// Several rounds as one `dataset.json` (`pipe publish --all`): its bytes, and how many rounds
/// and flat rows it holds.
pub fn render_dataset<'a>(
    rounds: impl IntoIterator<Item = (&'a RoundData, &'a Aggregate)>,
) -> (Vec<u8>, usize, usize) {
    let ds = dataset::dataset(rounds);
    (json(&ds), ds.meta.rounds, ds.meta.rows)
}

/// What `pipe aggregate` prints: the terminal table, or with `json` the dataset round (plus the
/// Multivac rankings under mean aggregation). A suite, whose numbers the openbenchmark keys do
/// not describe, prints its markdown report, or with `json` its aggregate.
pub fn summary(data: &RoundData, agg: &Aggregate, json_out: bool) -> String {
    match (agg.suite.is_some(), json_out) {
        (true, false) => markdown::markdown(agg),
        (true, true) => pretty(agg),
        (false, false) => terminal::table(agg),
        (false, true) => pretty(&dataset::round_json(data, agg)),
    }
}

/// Pretty JSON and a final newline.
fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    pretty(value).into_bytes()
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("a report serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> (RoundData, Aggregate) {
        let data: RoundData = serde_json::from_str(include_str!(
            "../../tests/fixtures/published/round-data.json"
        ))
        .expect("the fixture parses");
        let agg = crate::aggregate::compute(&data);
        (data, agg)
    }

    #[test]
    fn each_publish_format_has_its_file() {
        let names: Vec<&str> = [
            PublishFormat::Markdown,
            PublishFormat::Json,
            PublishFormat::Dataset,
            PublishFormat::Html,
        ]
        .into_iter()
        .map(|f| Format::from(f).file_name())
        .collect();
        assert_eq!(
            names,
            ["report.md", "aggregate.json", "dataset.json", "report.html"]
        );
    }

    #[test]
    fn render_gives_each_renderer_s_bytes() {
        let (data, agg) = published();
        assert_eq!(
            render(Format::Markdown, &data, &agg),
            markdown::markdown(&agg).into_bytes()
        );
        assert_eq!(
            render(Format::Html, &data, &agg),
            html::render(&agg).into_bytes()
        );
        let json = render(Format::Aggregate, &data, &agg);
        assert_eq!(json.last(), Some(&b'\n'));
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back["round"], agg.round.as_str());
        let ds: dataset::Dataset =
            serde_json::from_slice(&render(Format::Dataset, &data, &agg)).unwrap();
        assert_eq!((ds.meta.rounds, ds.rounds.len()), (1, 1));
        let (_, rounds, rows) = render_dataset([(&data, &agg), (&data, &agg)]);
        assert_eq!((rounds, rows), (2, 2 * agg.implementations.len()));
    }

    #[test]
    fn summary_is_the_table_or_the_dataset_round() {
        let (data, agg) = published();
        let table = summary(&data, &agg, false);
        assert!(table.starts_with(&format!("{} (", agg.round)), "{table}");
        assert_eq!(table, terminal::table(&agg));
        let json: serde_json::Value = serde_json::from_str(&summary(&data, &agg, true)).unwrap();
        assert_eq!(json["task"], agg.task.as_str());
    }
}
