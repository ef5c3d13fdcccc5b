//! Python for task tests: the requirements a task declares, provisioned once into a venv cached
//! under `$XDG_CACHE_HOME/pipe/venvs/<digest>` (or `~/.cache/...`) and shared by every gate.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SandboxError;

/// Where venvs live.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PIPE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pipe")
}

fn python3() -> String {
    std::env::var("PIPE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The `bin` directory of a venv holding `requirements`, created when missing. Concurrent callers
/// are serialised by a lock file; a half-built venv is never used (it is built under a temp name
/// and renamed into place).
pub fn ensure_venv(requirements: &[String]) -> Result<PathBuf, SandboxError> {
    let mut reqs = requirements.to_vec();
    reqs.sort();
    let digest = blake3::hash(format!("{}\n{}", python3(), reqs.join("\n")).as_bytes()).to_hex()
        [..16]
        .to_string();
    let root = cache_root().join("venvs");
    let dir = root.join(&digest);
    let ready = dir.join(".pipe-ready");
    if ready.exists() {
        return Ok(dir.join("bin"));
    }
    std::fs::create_dir_all(&root)
        .map_err(|e| SandboxError::Setup(format!("cannot create {}: {e}", root.display())))?;
    let lock_path = root.join(format!("{digest}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(|e| SandboxError::Setup(e.to_string()))?;
    lock.lock()
        .map_err(|e| SandboxError::Setup(e.to_string()))?;
    if ready.exists() {
        return Ok(dir.join("bin"));
    }
    let tmp = root.join(format!("{digest}.building"));
    let _ = std::fs::remove_dir_all(&tmp);
    run(
        Command::new(python3()).args(["-m", "venv"]).arg(&tmp),
        "create a venv",
    )?;
    if !reqs.is_empty() {
        run(
            Command::new(tmp.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&reqs),
            &format!("install {}", reqs.join(" ")),
        )?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    // A venv hardcodes its path in scripts; `python -m` use is path-independent, and pipe only
    // ever runs `python -m ...`, so renaming the directory is safe.
    std::fs::rename(&tmp, &dir).map_err(|e| SandboxError::Setup(e.to_string()))?;
    std::fs::write(&ready, reqs.join("\n")).map_err(|e| SandboxError::Setup(e.to_string()))?;
    Ok(dir.join("bin"))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), SandboxError> {
    let out = cmd
        .output()
        .map_err(|e| SandboxError::Setup(format!("cannot {what}: {e} (is python3 installed?)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SandboxError::Setup(format!(
            "cannot {what}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        )))
    }
}

/// The installation a venv's python links to (the `home` of its `pyvenv.cfg`, one level up), which
/// a sandbox that hides home directories must still show.
pub fn base_prefix(venv: &Path) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    let home = cfg.lines().find_map(|l| {
        l.strip_prefix("home")
            .map(|r| r.trim_start_matches([' ', '=']).trim().to_string())
    })?;
    let bin = std::fs::canonicalize(home).ok()?;
    bin.parent().map(Path::to_path_buf)
}
