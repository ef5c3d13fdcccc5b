//! The agent-CLI images against a real engine: `pipe sandbox bootstrap --with ...` fetches the
//! pinned packages on the host with npm and commits them onto the base image; the CLIs then run
//! in a container with no network, a read-only root and the sandbox user, and in pipe's own
//! Docker sandbox; a second bootstrap finds the image present. A round whose image is missing is
//! refused before anything runs, naming the command that builds it.
//!
//! Where the build found no engine holding the base image, or no `npm`, these tests are ignored,
//! saying so; run anyway (`--include-ignored`) they fail naming what is missing.

mod common;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pipe::sandbox::clis::{self, NODE};
use pipe::sandbox::docker::{DEFAULT_IMAGE, DockerSandbox};
use pipe::sandbox::{Job, Sandbox};
use tokio_util::sync::CancellationToken;

const EXIT_INVALID: i32 = 2;

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(ToString::to_string).collect()
}

/// `docker run` of `script` in `image` as the sandbox runs a job: no network, read-only root,
/// user 65534, the workspace and /tmp as tmpfs. Returns (exit code, stdout + stderr).
fn offline(image: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--user",
            "65534",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/work:exec,uid=65534",
            "-e",
            "HOME=/work",
            image,
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("docker runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
#[cfg_attr(
    not(all(pipe_has_docker, pipe_has_npm)),
    ignore = "needs a Docker engine with pipe's sandbox image and `npm` on the host: start dockerd, run `pipe sandbox bootstrap`, apt-get install npm, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn bootstrap_with_builds_an_image_whose_clis_run_offline() {
    common::needs::docker().await;
    let image = clis::image_for(&names(&["qwen-code", "opencode"]));
    let first = common::pipe()
        .args([
            "sandbox",
            "bootstrap",
            "--with",
            "qwen-code",
            "--with",
            "opencode",
            "--json",
        ])
        .run();
    first.assert_success();
    let v = first.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["images"][0]["image"], DEFAULT_IMAGE, "{v}");
    assert_eq!(v["images"][1]["image"], image.as_str(), "{v}");
    assert_eq!(
        v["images"][1]["clis"],
        serde_json::json!(["qwen-code", "opencode"])
    );

    let (code, out) = offline(&image, "node --version");
    assert_eq!(
        (code, out.trim()),
        (0, format!("v{}", NODE.version).as_str())
    );
    let (code, out) = offline(&image, "qwen --version");
    assert_eq!((code, out.trim()), (0, "0.15.10"), "{out}");
    let (code, out) = offline(&image, "opencode --version");
    assert_eq!((code, out.trim()), (0, "1.18.33"), "{out}");
    // Nothing of the image is writable by the sandbox user, and npm is not in it.
    let (code, out) = offline(
        &image,
        "test ! -w /opt/pipe/npm/node_modules && test ! -w /usr/local/bin && ! command -v npm && echo sealed",
    );
    assert_eq!((code, out.trim()), (0, "sealed"), "{out}");

    // Present now: a no-op, quickly, and a pipeline naming the same CLIs finds it too.
    let started = Instant::now();
    let again = common::pipe()
        .args([
            "sandbox",
            "bootstrap",
            "--with",
            "opencode",
            "--with",
            "qwen-code",
        ])
        .run();
    again.assert_success();
    assert!(started.elapsed() < Duration::from_secs(10), "{again:?}");
    assert!(
        again
            .stdout
            .contains(&format!("{image} (opencode, qwen-code): present")),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("2 image(s): 0 built, 2 present"),
        "{}",
        again.stdout
    );
    let round = Round::new("[\"opencode\", \"qwen-code\"]");
    let by_pipeline = common::pipe()
        .cwd(round.dir.path())
        .args([
            "sandbox",
            "bootstrap",
            "--pipeline",
            "agent/pipeline.toml",
            "--json",
        ])
        .run();
    by_pipeline.assert_success();
    let v = by_pipeline.json();
    assert_eq!(v["images"][1]["image"], image.as_str(), "{v}");
    assert_eq!(v["present"], 2, "{v}");

    // pipe's own Docker sandbox runs a job with the image in it, under its limits.
    let engine = common::needs::docker().await;
    let sandbox =
        Sandbox::Docker(DockerSandbox::new(engine, DEFAULT_IMAGE, "test-cli-image").unwrap());
    let job = Job {
        inputs: vec![],
        script: "node --version; qwen --version; opencode --version".into(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(120),
        output_limit: 64 * 1024,
        collect: vec![],
        python: vec![],
        network: false,
        collect_dir: None,
        gateway: None,
        image: Some(image.clone()),
        limits: pipe::sandbox::JobLimits::default(),
    };
    let r = sandbox.run(&job, &CancellationToken::new()).await.unwrap();
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [format!("v{}", NODE.version).as_str(), "0.15.10", "1.18.33"],
        "{r:?}"
    );
}

#[test]
fn an_unknown_cli_name_is_refused_with_the_closest_one() {
    let out = common::pipe()
        .args(["sandbox", "bootstrap", "--with", "qwen"])
        .run();
    out.assert_code(EXIT_INVALID);
    assert!(
        out.stderr.contains("unknown agent CLI `qwen`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `qwen-code`?"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("opencode, qwen-code"), "{}", out.stderr);
}

/// A copy of the stand-in agent's round (`tests/fixtures/agent`) under `<dir>/agent`, its build
/// running in the image of the CLIs `with`.
struct Round {
    dir: tempfile::TempDir,
}

impl Round {
    fn new(with: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("agent");
        common::copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent"),
            &root,
        );
        let file = root.join("pipeline.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("timeout_secs = 60\n"));
        std::fs::write(
            &file,
            text.replacen(
                "timeout_secs = 60\n",
                &format!("timeout_secs = 60\nwith = {with}\n"),
                1,
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn run(&self, sandbox: &str) -> common::Ran {
        common::pipe()
            .cwd(self.dir.path())
            .env("NO_COLOR", "1")
            .env("AGENT_TEST_KEY", "unused")
            .env("AGENT_TEST_PORT", "9")
            .args([
                "run",
                "agent/pipeline.toml",
                "--out",
                "out",
                "--sandbox",
                sandbox,
            ])
            .run()
    }

    /// Files any node wrote.
    fn node_files(&self) -> Vec<std::path::PathBuf> {
        let nodes = self.dir.path().join("out/agent-2026-01-02/nodes");
        if nodes.exists() {
            common::all_files(&nodes)
        } else {
            vec![]
        }
    }
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_round_whose_cli_image_is_missing_is_refused_naming_the_bootstrap() {
    let engine = common::needs::docker().await;
    // opencode alone: an image no other test builds. Should an earlier bootstrap have made it,
    // its tag goes (a bootstrap makes it again, identical).
    let image = clis::image_for(&names(&["opencode"]));
    if pipe::sandbox::docker::has_image(&engine, &image).await {
        engine
            .remove_image(
                &image,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
            .unwrap();
    }
    let round = Round::new("[\"opencode\"]");
    let out = round.run("docker");
    out.assert_code(EXIT_INVALID);
    assert!(
        out.stderr.contains(&format!(
            "build stage `build` runs its agent CLIs (opencode) in the image `{image}`, which is missing: build it with `pipe sandbox bootstrap --pipeline agent/pipeline.toml`"
        )),
        "{}",
        out.stderr
    );
    assert!(round.node_files().is_empty(), "{:?}", round.node_files());

    // The local sandbox cannot run an image at all.
    let out = round.run("unisolated");
    out.assert_code(EXIT_INVALID);
    assert!(
        out.stderr.contains("run with `--sandbox docker`"),
        "{}",
        out.stderr
    );
    assert!(round.node_files().is_empty(), "{:?}", round.node_files());
}
