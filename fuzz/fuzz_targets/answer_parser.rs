//! The build-answer parser and the judge-answer validator on arbitrary text: they must refuse or
//! accept, never panic, and every accepted path must stay inside the workspace.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = pipe::stages::builds::answer::parse(&text, &|p: &Path| p.ends_with("conftest.py"));
    for f in &parsed.files {
        assert!(f.path.components().all(|c| matches!(c, Component::Normal(_))), "{:?}", f.path);
        assert!(!f.path.ends_with("conftest.py"));
    }
    let _ = pipe::stages::builds::answer::loc(&text);
    let _ = pipe::stages::judge::extract_first_json(&text);
});
