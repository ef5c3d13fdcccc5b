//! The pipeline loader on arbitrary bytes: parse as TOML and as YAML, then validate. It must
//! return diagnostics, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("pipe-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for name in ["pipeline.toml", "pipeline.yaml"] {
        let path = dir.join(name);
        if std::fs::write(&path, data).is_ok() {
            if let Err(diags) = pipe::config::load(&path, pipe::config::load::Purpose::Validate) {
                for d in &diags {
                    let _ = d.render(&dir);
                }
            }
        }
    }
});
