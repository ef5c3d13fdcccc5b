//! Files a pipeline names: found relative to its directory; prompt templates read and checked.

use std::path::{Path, PathBuf};

use super::ctx::Loader;
use crate::base::limits;
use crate::config::Template;
use crate::config::templates::{self};
use crate::source::KeyPath;

impl Loader<'_> {
    pub(super) fn file(&mut self, at: &KeyPath, rel: &str, what: &str) -> Option<PathBuf> {
        let path = self.dir.join(rel);
        if path.is_file() {
            Some(path)
        } else {
            let dir = if self.dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &self.dir
            };
            self.err(at, format!("{what} `{rel}` not found")).help = Some(format!(
                "paths are relative to the pipeline file's directory (`{}`)",
                dir.display()
            ));
            None
        }
    }

    pub(super) fn template<S: serde::Serialize>(
        &mut self,
        at: &KeyPath,
        rel: &str,
        sample: &S,
    ) -> Option<Template> {
        let path = self.file(at, rel, "prompt template")?;
        let text = match limits::read_text(&path, limits::MAX_TEMPLATE_BYTES, "a prompt template") {
            Ok(t) => t,
            Err(limits::ReadError::Io { source, .. }) => {
                self.err(at, format!("cannot read prompt template `{rel}`: {source}"));
                return None;
            }
            Err(e) => {
                self.err(at, format!("prompt template `{rel}`: {}", e.detail()));
                return None;
            }
        };
        let template = Template { path, text };
        if let Some(mut d) = templates::check(&template, sample) {
            // The error is located in the template; say which key of the pipeline uses it.
            let used = format!("`{at}` uses this template");
            d.help = Some(match d.help.take() {
                Some(h) => format!("{h} ({used})"),
                None => used,
            });
            self.diags.push(d);
            return None;
        }
        Some(template)
    }
}
