//! What every import checks of its input before it writes anything: names safe as directory
//! names, scores on their scale.

use std::path::Path;

use super::error::{ImportError, input};
use crate::aggregate::RubricInfo;
use crate::base::names::{NameError, SafeName, shown};

/// A name read from an imported file (`at` is its JSON path, `$.rounds[0].task`), proven safe:
/// names from a file become directories and node ids, so an unsafe one refuses the whole import.
pub(super) fn safe_name(file: &Path, at: &str, name: &str) -> Result<SafeName, ImportError> {
    SafeName::new(name).map_err(|e| {
        input(format!(
            "{}: {at}: \"{}\" is not a safe name: {e}\n  = help: imported names follow the rule of a pipeline's names, which name directories: {}",
            file.display(),
            shown(name),
            NameError::RULE
        ))
    })
}

/// An imported score must lie on its scale (`min..=max`): one outside it would skew every mean
/// and median it enters.
pub(super) fn check_score(
    at: &str,
    value: f64,
    min: f64,
    max: f64,
    rubric: &RubricInfo,
) -> Result<(), ImportError> {
    // Rounding slack: weights like 0.3 + 0.2 + ... sum to 1 only nearly.
    let slack = 1e-9 * min.abs().max(max.abs()).max(1.0);
    if value >= min - slack && value <= max + slack {
        return Ok(());
    }
    let (min, max) = (
        crate::report::dataset::round_to(min, 6),
        crate::report::dataset::round_to(max, 6),
    );
    Err(input(format!(
        "{at}: {value} is outside the scale {min}..{max} of the rubric `{}`",
        rubric.name
    )))
}

/// The file's name, as the imported round's source.
pub(super) fn file_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
