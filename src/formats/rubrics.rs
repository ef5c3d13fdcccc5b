//! The rubrics of imported rounds: the files `rubrics/code-review.toml` (the openbenchmark
//! dataset) and `rubrics/multivac.toml`, embedded in the binary and read by the rubric loader like
//! any rubric file. A `rubrics/<name>.toml` in the current directory takes their place.

use std::path::Path;

use super::error::{ImportError, input};
use crate::aggregate::RubricInfo;
use crate::config::rubric::Rubric;

/// The standard code-review rubric: spec /10 + quality /20, median aggregation.
pub(super) const CODE_REVIEW: Embedded = Embedded {
    name: "code-review",
    text: include_str!("../../rubrics/code-review.toml"),
};

/// The Multivac rubric: five criteria on 0..10, weights summing to 1, so a weighted score is on
/// 0..10; mean aggregation.
pub(super) const MULTIVAC: Embedded = Embedded {
    name: "multivac",
    text: include_str!("../../rubrics/multivac.toml"),
};

/// A rubric file embedded in the binary.
pub(super) struct Embedded {
    /// The file is `rubrics/<name>.toml`.
    pub name: &'static str,
    pub text: &'static str,
}

impl Embedded {
    /// `rubrics/<name>.toml` under the current directory when present, else the embedded file.
    pub(super) fn or_local(&self) -> Result<RubricInfo, ImportError> {
        let file = Path::new("rubrics").join(format!("{}.toml", self.name));
        if file.exists() {
            load(&file)
        } else {
            self.load()
        }
    }

    /// The embedded file through the rubric loader, its errors located as `rubrics/<name>.toml`.
    pub(super) fn load(&self) -> Result<RubricInfo, ImportError> {
        let file = Path::new("rubrics").join(format!("{}.toml", self.name));
        described(Rubric::parse(&file, self.text.to_string()))
    }
}

fn load(file: &Path) -> Result<RubricInfo, ImportError> {
    described(Rubric::load(file))
}

/// A loaded rubric as the aggregate describes it, or its problems as an input error.
fn described(
    rubric: Result<Rubric, Vec<crate::base::diag::Diag>>,
) -> Result<RubricInfo, ImportError> {
    rubric.map(|r| RubricInfo::from(&r)).map_err(|diags| {
        input(crate::base::diag::render_all(
            &diags,
            &std::env::current_dir().unwrap_or_default(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::CriterionInfo;
    use crate::config::rubric::Aggregation;

    fn criterion(id: &str, label: &str, max: f64, weight: f64) -> CriterionInfo {
        CriterionInfo {
            id: id.into(),
            label: label.into(),
            min: 0.0,
            max,
            weight,
        }
    }

    /// The embedded files are the rubrics the imports were written against (and the published
    /// aggregates computed with).
    #[test]
    fn embedded_rubrics_load_as_the_imports_rubrics() {
        let code_review = RubricInfo {
            name: "code-review".into(),
            aggregation: Aggregation::Median,
            criteria: vec![
                criterion("spec", "Spec compliance", 10.0, 1.0),
                criterion("quality", "Code quality", 20.0, 1.0),
            ],
            verdicts: ["ship", "ship-with-cleanup", "rewrite", "reject"]
                .map(String::from)
                .to_vec(),
        };
        assert_eq!(CODE_REVIEW.load().unwrap(), code_review);
        let multivac = RubricInfo {
            name: "multivac".into(),
            aggregation: Aggregation::Mean,
            criteria: vec![
                criterion("correctness", "Correctness", 10.0, 0.3),
                criterion("completeness", "Completeness", 10.0, 0.2),
                criterion("clarity", "Clarity", 10.0, 0.2),
                criterion("depth", "Depth", 10.0, 0.15),
                criterion("usefulness", "Usefulness", 10.0, 0.15),
            ],
            verdicts: ["excellent", "good", "fair", "poor"]
                .map(String::from)
                .to_vec(),
        };
        let loaded = MULTIVAC.load().unwrap();
        assert_eq!(loaded, multivac);
        assert!((loaded.composite_max() - 10.0).abs() < 1e-9);
    }
}
