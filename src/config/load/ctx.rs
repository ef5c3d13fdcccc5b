//! The loader's state, shared by every section: the document, its directory, the diagnostics
//! found so far; and the helpers every section uses to report.

use std::path::PathBuf;

use crate::base::diag::{Diag, did_you_mean};
use crate::base::limits;
use crate::base::names::{NameError, SafeName, shown};
use crate::config::Harness;
use crate::source::{KeyPath, SourceDoc};

/// One pipeline file being loaded: every section adds its problems to `diags`.
pub(super) struct Loader<'a> {
    pub(super) doc: &'a SourceDoc,
    /// The pipeline file's directory: the base of every path it names.
    pub(super) dir: PathBuf,
    pub(super) diags: Vec<Diag>,
    /// True when a host variable the round needs but this machine lacks is an error (the round
    /// is about to run), false when it is a warning (the round is only validated).
    pub(super) missing_var_fails: bool,
    /// Each openai provider's name and the variable holding its key, once the providers are read.
    pub(super) provider_keys: Vec<(String, String)>,
}

pub(super) fn root() -> KeyPath {
    KeyPath::root()
}

impl Loader<'_> {
    /// The diagnostic for a host variable that is not set: an error or a warning by
    /// [`missing_var_fails`](Self::missing_var_fails).
    pub(super) fn missing_var(&self, at: &KeyPath, message: String) -> Diag {
        if self.missing_var_fails {
            self.doc.error_at(at, message, false)
        } else {
            self.doc.warning_at(at, message, false)
        }
    }

    pub(super) fn err(&mut self, path: &KeyPath, message: impl Into<String>) -> &mut Diag {
        self.diags.push(self.doc.error_at(path, message, false));
        self.diags.last_mut().expect("just pushed")
    }

    /// Proves a name from the file safe; an unsafe one is a located error saying why, with the
    /// rule and `why` the name must be safe (`on_key`: the name is a key, like a stage's).
    pub(super) fn safe_name(
        &mut self,
        at: &KeyPath,
        what: &str,
        name: &str,
        on_key: bool,
        why: &str,
    ) -> Option<SafeName> {
        match SafeName::new(name) {
            Ok(n) => Some(n),
            Err(e) => {
                let d = self
                    .doc
                    .error_at(
                        at,
                        format!("{what} `{}` is not a safe name: {e}", shown(name)),
                        on_key,
                    )
                    .help(format!("{why}: {}", NameError::RULE));
                self.diags.push(d);
                None
            }
        }
    }

    /// A timeout in seconds: at least 1 (a zero timeout kills every run at once, or for a model
    /// call means none at all) and at most [`MAX_TIMEOUT_SECS`](limits::MAX_TIMEOUT_SECS).
    /// False when it is set and out of range (reported).
    pub(super) fn timeout(&mut self, at: &KeyPath, secs: Option<u64>, what: &str) -> bool {
        let Some(secs) = secs else {
            return true;
        };
        let max = limits::MAX_TIMEOUT_SECS;
        if (1..=max).contains(&secs) {
            return true;
        }
        let key = match at.0.last() {
            Some(crate::source::Seg::Key(k)) => k.clone(),
            _ => "timeout".into(),
        };
        self.err(
            at,
            format!("`{key}` is {secs}; it must be between 1 and {max} seconds"),
        )
        .help = Some(format!(
            "the seconds {what} may take before it is stopped; leave the key out for the default"
        ));
        false
    }

    pub(super) fn harness(&mut self, at: &KeyPath, name: &str) -> Option<Harness> {
        let h = Harness::parse(name);
        if h.is_none() {
            let help = did_you_mean(name, Harness::NAMES)
                .unwrap_or_else(|| format!("the harnesses are {}", Harness::NAMES.join(", ")));
            self.err(at, format!("unknown harness `{name}`")).help = Some(help);
        }
        h
    }
}
