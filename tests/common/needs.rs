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
