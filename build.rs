//! Probes this machine for the services some tests need and tells the compiler what it found, so
//! those tests are marked ignored (with what is missing and how to get it) where they cannot
//! run, instead of passing without running:
//!
//! - `pipe_has_bwrap`: bubblewrap runs (`bwrap --ro-bind / / true` succeeds);
//! - `pipe_has_docker`: a Docker engine answers `docker info` and holds pipe's sandbox image
//!   (`DEFAULT_IMAGE` in `src/sandbox/docker.rs`, built by `pipe sandbox bootstrap`);
//! - `pipe_has_chromium`: `chromium` is on `PATH`;
//! - `pipe_has_npm`: `npm --version` succeeds (the agent-CLI images are fetched with it);
//! - `pipe_has_litellm`: LiteLLM's proxy is installed, at the version `scripts/litellm` pins, in
//!   the venv that script makes (`$PIPE_LITELLM_VENV`, default `~/.cache/pipe/litellm`).
//!
//! The probe runs once per build directory and again when `PIPE_TEST_PROBE` (or `DOCKER_HOST`,
//! `PIPE_LITELLM_VENV`) changes. `scripts/test` sets it from what is installed and running, so it probes again when
//! that changes; with plain `cargo test`, after installing or starting one of these, probe again
//! with any new value, e.g. `PIPE_TEST_PROBE=$(date +%s) cargo test`. The cfgs change nothing in
//! pipe itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CFGS: [&str; 5] = [
    "pipe_has_bwrap",
    "pipe_has_docker",
    "pipe_has_chromium",
    "pipe_has_litellm",
    "pipe_has_npm",
];

fn main() {
    println!("cargo::rerun-if-env-changed=PIPE_TEST_PROBE");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    println!("cargo::rerun-if-env-changed=PIPE_LITELLM_VENV");
    println!("cargo::rerun-if-env-changed=HOME");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/sandbox/docker.rs");
    println!("cargo::rerun-if-changed=scripts/litellm");
    for cfg in CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let image = sandbox_image();
    let found = [
        (
            "pipe_has_bwrap",
            succeeds("bwrap", &["--ro-bind", "/", "/", "true"]),
        ),
        (
            "pipe_has_docker",
            succeeds("docker", &["info"]) && succeeds("docker", &["image", "inspect", &image]),
        ),
        ("pipe_has_chromium", on_path("chromium")),
        ("pipe_has_litellm", litellm_installed()),
        ("pipe_has_npm", succeeds("npm", &["--version"])),
    ];
    for (cfg, present) in found {
        if present {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The sandbox image's name, read from `DEFAULT_IMAGE` in `src/sandbox/docker.rs`.
fn sandbox_image() -> String {
    let src = std::fs::read_to_string(Path::new("src/sandbox/docker.rs"))
        .expect("build.rs reads src/sandbox/docker.rs");
    src.lines()
        .find_map(|l| l.strip_prefix("pub const DEFAULT_IMAGE: &str = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("src/sandbox/docker.rs defines `pub const DEFAULT_IMAGE: &str = \"...\";`")
        .to_string()
}

/// Whether the venv of `scripts/litellm` holds the version it pins: the script writes that version
/// to `pipe-litellm-version` in the venv once the proxy imports (tests/common/needs.rs checks the
/// same at run time).
fn litellm_installed() -> bool {
    let script = std::fs::read_to_string(Path::new("scripts/litellm"))
        .expect("build.rs reads scripts/litellm");
    let pinned = script
        .lines()
        .find_map(|l| l.strip_prefix("LITELLM_VERSION="))
        .expect("scripts/litellm sets LITELLM_VERSION=...")
        .trim();
    let venv = match std::env::var_os("PIPE_LITELLM_VENV") {
        Some(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".cache/pipe/litellm"),
            None => return false,
        },
    };
    std::fs::read_to_string(venv.join("pipe-litellm-version")).is_ok_and(|v| v.trim() == pinned)
        && venv.join("bin/python").is_file()
}

/// Whether `program args` exits 0 within 20 s (a hung engine counts as absent).
fn succeeds(program: &str, args: &[&str]) -> bool {
    let Ok(mut child) = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Whether an executable file named `name` is in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
