//! `pipe sandbox bootstrap`: builds the offline base image pipe's own tasks use, with no registry:
//! a minimal Debian root filesystem (debootstrap minbase with python3 and pytest), given a `/work`
//! owned by the sandbox user, streamed as a tar into the engine's image import through bollard.
//! Idempotent: nothing is done when the image is present.

use std::path::Path;
use std::process::Stdio;

use futures_util::StreamExt;
use tokio::process::Command;
use tokio_util::io::ReaderStream;

use super::docker::{self, USER};

#[derive(Debug)]
pub enum Outcome {
    Present,
    Built { seconds: f64 },
}

pub async fn bootstrap(
    image: &str,
    mirror: &str,
    notify: &dyn Fn(&str),
) -> Result<Outcome, String> {
    let engine = docker::connect()
        .await
        .map_err(|e| format!("the Docker engine does not answer: {e}"))?;
    if docker::has_image(&engine, image).await {
        return Ok(Outcome::Present);
    }
    let start = std::time::Instant::now();
    let which = std::process::Command::new("debootstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !which.is_ok_and(|s| s.success()) {
        return Err("debootstrap is not installed (apt-get install -y debootstrap)".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("pipe-rootfs-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = dir.path().join("rootfs");
    notify(&format!(
        "debootstrap bookworm (minbase, python3, python3-pytest) into {}",
        root.display()
    ));
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=python3,python3-pytest",
            "bookworm",
        ])
        .arg(&root)
        .arg(mirror)
        .output()
        .await
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!(
            "debootstrap failed ({}):\n{tail}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    prepare(&root).map_err(|e| format!("cannot prepare the root filesystem: {e}"))?;
    notify(&format!("importing {} as {image}", root.display()));
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let stdout = tar.stdout.take().expect("piped");
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .build();
    let body = bollard::body_try_stream(ReaderStream::new(stdout));
    let mut stream = engine.create_image(Some(options), Some(body), None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| format!("image import failed: {e}"))?;
    }
    let status = tar.wait().await.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("tar of the root filesystem failed ({status})"));
    }
    if !docker::has_image(&engine, image).await {
        return Err(format!("the import finished but `{image}` is not listed"));
    }
    Ok(Outcome::Built {
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `/work` owned by the sandbox user (where each container mounts its workspace tmpfs); apt
/// caches dropped.
fn prepare(root: &Path) -> std::io::Result<()> {
    let work = root.join("work");
    std::fs::create_dir_all(&work)?;
    std::os::unix::fs::chown(&work, Some(USER as u32), Some(USER as u32))?;
    for cache in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let d = root.join(cache);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(())
}
