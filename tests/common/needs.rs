//! What a test needs of the machine, checked when it runs: each function fails the test, naming
//! what is missing and how to get it, unless the service is there. `build.rs` probes the same
//! services and marks the tests that need them `#[ignore]` where they are missing, so these
//! failures show only when such a test is run anyway (`--include-ignored`).

use pipe::sandbox::docker::{self, DEFAULT_IMAGE};

/// The Docker engine, holding pipe's sandbox image.
pub async fn docker() -> bollard::Docker {
    match docker::connect().await {
        Ok(d) if docker::has_image(&d, DEFAULT_IMAGE).await => d,
        Ok(_) => panic!(
            "this test needs pipe's sandbox image {DEFAULT_IMAGE}: run `pipe sandbox bootstrap`"
        ),
        Err(e) => panic!(
            "this test needs a Docker engine ({e}): start dockerd, then run `pipe sandbox bootstrap`"
        ),
    }
}

/// Bubblewrap, working as the local sandbox runs it.
pub fn bwrap() -> pipe::sandbox::local::LocalSandbox {
    let s = pipe::sandbox::local::LocalSandbox::detect();
    assert!(
        s.bwrap,
        "this test needs a working bubblewrap (`bwrap`): apt-get install bubblewrap"
    );
    s
}

/// `chromium` on PATH.
pub fn chromium() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("chromium"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("this test needs `chromium` on PATH: apt-get install chromium"))
}

/// The venv of LiteLLM's proxy that `scripts/litellm` installs (`$PIPE_LITELLM_VENV`, default
/// `~/.cache/pipe/litellm`), holding the version that script pins.
pub fn litellm() -> std::path::PathBuf {
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/litellm"),
    )
    .expect("scripts/litellm is readable");
    let pinned = script
        .lines()
        .find_map(|l| l.strip_prefix("LITELLM_VERSION="))
        .expect("scripts/litellm sets LITELLM_VERSION=...")
        .trim()
        .to_string();
    let venv = match std::env::var_os("PIPE_LITELLM_VENV") {
        Some(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ => std::path::Path::new(&std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/pipe/litellm"),
    };
    let installed = std::fs::read_to_string(venv.join("pipe-litellm-version")).unwrap_or_default();
    assert!(
        installed.trim() == pinned && venv.join("bin/python").is_file(),
        "this test needs LiteLLM's proxy {pinned} in {}: run scripts/litellm",
        venv.display()
    );
    venv
}
