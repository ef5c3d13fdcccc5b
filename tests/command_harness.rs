//! `harness = "command"` end to end: the real `pipe` binary runs a round whose build drives a
//! small shell script standing in for an agent CLI (`tests/fixtures/agent`), in the local
//! sandbox. The stand-in reads `$PIPE_PROMPT`, writes its solution into its working directory,
//! reports usage the ways real CLIs do, and tries the network, so the tests can check that the
//! workspace is collected, protected files refused, usage parsed, secrets kept out of every file,
//! the gate run offline on the collected files, and that a pipeline without `network` is refused.

mod common;
use common::{Pipe, all_files, copy_dir, read_json};
use std::path::{Path, PathBuf};

use serde_json::Value;

const SECRET: &str = "sk-agent-sentinel-2718281828";

struct Round {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// Held open so the stand-in agent has something to connect to.
    _listener: std::net::TcpListener,
    port: u16,
}

impl Round {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("agent");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent"),
            &root,
        );
        // Git does not keep the executable bit of a fixture reliably across checkouts.
        let tool = root.join("tools/fake-agent");
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Self {
            _dir: dir,
            root,
            _listener: listener,
            port,
        }
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.root.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Pipe {
        common::pipe()
            .cwd(&self.root)
            .env("NO_COLOR", "1")
            .env("AGENT_TEST_KEY", SECRET)
            .env("AGENT_TEST_PORT", self.port.to_string())
            .args(args)
    }

    /// `pipe run --json --sandbox local`; returns (exit code, summary, stderr).
    fn run(&self) -> (i32, Value, String) {
        let out = self
            .cmd(&["run", "pipeline.toml", "--json", "--sandbox", "local"])
            .run();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
        (out.code(), v, out.stderr)
    }

    fn node(&self, rel: &str) -> PathBuf {
        self.root.join("out/agent-2026-01-02/nodes").join(rel)
    }
}

#[test]
fn the_stand_in_agent_builds_and_the_gate_runs_offline_on_its_files() {
    let r = Round::new();
    let (code, summary, stderr) = r.run();
    assert_eq!(code, 0, "{summary} {stderr}");
    // With `network = true` the CLIs called their endpoint themselves: the aggregate names every
    // build unmetered, with where its usage came from.
    let aggregate = read_json(&r.node("aggregate/aggregate.json"));
    assert_eq!(
        aggregate["unmetered"],
        serde_json::json!([
            {"model": "ann", "sample": 1, "usage_source": "file"},
            {"model": "bob", "sample": 1, "usage_source": "stdout"},
            {"model": "cy", "sample": 1, "usage_source": "none"},
        ]),
        "{aggregate}"
    );

    // ann: a solution, a protected file (refused), usage in $PIPE_USAGE.
    let ann = read_json(&r.node("build/ann/1/build.json"));
    assert_eq!(ann["harness"], "command");
    assert_eq!(ann["outcome"], "completed", "{ann}");
    assert_eq!(ann["exit_code"], 0);
    assert_eq!(
        ann["files"],
        serde_json::json!([
            "adder.py",
            "interfaces.txt",
            "net.txt",
            "notes/plan.md",
            "port.txt"
        ]),
        "{ann}"
    );
    let rejected = ann["rejected"].as_array().unwrap();
    let refused: Vec<&str> = rejected
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["conftest.py", "leak", "secret.cfg"], "{ann}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("protected file")
    );
    assert!(rejected[1]["reason"].as_str().unwrap().contains("symlink"));
    assert!(
        rejected[2]["reason"]
            .as_str()
            .unwrap()
            .contains("AGENT_TEST_KEY")
    );
    assert_eq!(ann["usage_source"], "file");
    assert_eq!(ann["usage"]["input_tokens"], 1000);
    assert_eq!(ann["usage"]["output_tokens"], 500);
    assert_eq!(ann["reported_cost_usd"], 0.5);
    // Known tokens are priced by the pipeline (1 and 2 USD per million), like single-shot builds.
    assert_eq!(ann["cost_usd"], 0.002);
    let files = r.node("build/ann/1/files");
    assert!(
        std::fs::read_to_string(files.join("adder.py"))
            .unwrap()
            .contains("return a + b")
    );
    assert!(!files.join("conftest.py").exists());
    assert!(!files.join("usage.json").exists());
    let prompt = std::fs::read_to_string(r.node("build/ann/1/prompt.md")).unwrap();
    assert!(prompt.contains("Write `adder.py`"), "{prompt}");
    let output = std::fs::read_to_string(r.node("build/ann/1/agent-output.txt")).unwrap();
    assert!(output.contains("$ fake-agent example/ann 1"), "{output}");
    assert!(output.contains("key=[AGENT_TEST_KEY redacted]"), "{output}");

    // bob: usage as the last JSON line of stdout, cost only (its price is zero).
    let bob = read_json(&r.node("build/bob/1/build.json"));
    assert_eq!(bob["outcome"], "completed", "{bob}");
    assert_eq!(bob["usage_source"], "stdout");
    assert_eq!(bob["usage"]["input_tokens"], 10);
    assert_eq!(bob["usage"]["output_tokens"], 20);
    assert_eq!(bob["cost_usd"], 0.01);

    // cy: the agent fails; a result, not a node failure; its gate does not run.
    let cy = read_json(&r.node("build/cy/1/build.json"));
    assert_eq!(cy["outcome"], "failed", "{cy}");
    assert_eq!(cy["exit_code"], 3);
    assert_eq!(cy["usage_source"], "none");
    assert!(cy["reason"].as_str().unwrap().contains("exited 3"), "{cy}");
    assert!(!r.node("build/cy/1/files").exists());
    let cy_gate = read_json(&r.node("gate/cy/1/gate.json"));
    assert_eq!(cy_gate["ran"], false);

    // The secret reached the agent (it printed it) but no file of the round.
    for f in all_files(&r.root.join("out")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{} holds the secret",
            f.display()
        );
    }

    // The round's numbers take the cost the CLI reported when the price cannot.
    let data = read_json(
        &r.root
            .join("out/agent-2026-01-02/nodes/aggregate/round-data.json"),
    );
    let bob_cost = data["builds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["model"] == "bob")
        .map(|b| b["cost_usd"].clone());
    assert_eq!(bob_cost, Some(serde_json::json!(0.01)), "{data}");

    // The gate ran the hidden tests on the collected files.
    let gate = read_json(&r.node("gate/ann/1/gate.json"));
    assert_eq!(gate["tests_total"], 4, "{gate}");
}

/// Under bubblewrap the build had the network it asked for, and the gate none (its hidden test
/// fails if it can connect).
#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn under_bubblewrap_the_build_has_network_and_the_gate_none() {
    common::needs::bwrap();
    let r = Round::new();
    let (code, summary, stderr) = r.run();
    assert_eq!(code, 0, "{summary} {stderr}");
    let files = r.node("build/ann/1/files");
    let gate = read_json(&r.node("gate/ann/1/gate.json"));
    let net = std::fs::read_to_string(files.join("net.txt")).unwrap();
    assert_eq!(net.trim(), "connected", "the build had network");
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["tests_total"], 4, "{gate}");
    assert!(gate["sandbox"].as_str().unwrap().contains("bwrap"));
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn network_off_cuts_the_agent_off_and_the_command_is_in_the_cache_key() {
    common::needs::bwrap();
    let r = Round::new();
    let (code, first, stderr) = r.run();
    assert_eq!(code, 0, "{first} {stderr}");
    let (_, second, _) = r.run();
    assert_eq!(second["executed"], 0, "{second}");
    r.edit("pipeline.toml", "network = true", "network = false");
    let (code, third, stderr) = r.run();
    assert_eq!(code, 0, "{third} {stderr}");
    let executed = common::ids_with(&third, "executed");
    assert!(
        executed.contains(&"build:ann#1".to_string()),
        "{executed:?}"
    );
    let net = std::fs::read_to_string(r.node("build/ann/1/files/net.txt")).unwrap();
    assert_eq!(net.trim(), "offline");
}

#[test]
fn a_command_harness_without_network_is_refused_with_its_location() {
    let r = Round::new();
    r.edit("pipeline.toml", "network = true\n", "");
    let out = r.cmd(&["validate", "pipeline.toml"]).run();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pipeline.toml:34:1: error: the command harness must say whether its command gets network: `network` is missing (at `stages.build.command`)"),
        "{stderr}"
    );
    assert!(stderr.contains("add `network = false`"), "{stderr}");
}

#[test]
fn an_unset_variable_is_a_warning_at_validate_and_an_error_at_run() {
    let r = Round::new();
    let out = r
        .cmd(&["validate", "pipeline.toml"])
        .env_remove("AGENT_TEST_KEY")
        .run();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: the variable `AGENT_TEST_KEY` (passed to the agent command) is not set"
        ),
        "{stderr}"
    );
    let out = r
        .cmd(&["run", "pipeline.toml", "--sandbox", "local"])
        .env_remove("AGENT_TEST_KEY")
        .run();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_agent_past_its_timeout_or_leaving_nothing_is_a_labelled_result() {
    let r = Round::new();
    r.edit(
        "pipeline.toml",
        "run = \"fake-agent {{ model.slug }} {{ sample }}\"",
        "run = \"echo started; sleep 30\"",
    );
    r.edit("pipeline.toml", "timeout_secs = 60", "timeout_secs = 1");
    let (code, summary, stderr) = r.run();
    assert_eq!(code, 0, "{summary} {stderr}");
    let ann = read_json(&r.node("build/ann/1/build.json"));
    assert_eq!(ann["outcome"], "timed-out", "{ann}");
    assert!(
        ann["reason"].as_str().unwrap().contains("timeout of 1s"),
        "{ann}"
    );
    let output = std::fs::read_to_string(r.node("build/ann/1/agent-output.txt")).unwrap();
    assert!(output.contains("started"), "{output}");

    r.edit("pipeline.toml", "echo started; sleep 30", "true");
    let (code, summary, stderr) = r.run();
    assert_eq!(code, 0, "{summary} {stderr}");
    let ann = read_json(&r.node("build/ann/1/build.json"));
    assert_eq!(ann["outcome"], "rejected", "{ann}");
    assert_eq!(ann["reason"], "the agent left no files in the workspace");
    let gate = read_json(&r.node("gate/ann/1/gate.json"));
    assert_eq!(gate["ran"], false);
}

/// A name of 250 bytes is fine in the sandbox but too long for pipe to write into the round
/// (its temporary name is longer): before, it failed the build node on every run. Such names,
/// and paths past the length limit, are now refused files of the collected workspace; the rest
/// of the build stands.
#[test]
fn names_too_long_to_write_are_refused_files_not_a_failed_node() {
    let r = Round::new();
    let tool = r.root.join("tools/long-names");
    std::fs::write(
        &tool,
        "#!/bin/sh\n\
         printf 'def add(a, b):\\n    return a + b\\n' > adder.py\n\
         echo x > \"$(printf '%0250d' 0)\"\n\
         d=$(printf '%099d' 0); p=.\n\
         for i in 1 2 3 4 5 6 7 8 9 10 11 12; do p=\"$p/$d\"; done\n\
         mkdir -p \"$p\" && echo x > \"$p/x.py\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    r.edit(
        "pipeline.toml",
        "run = \"fake-agent {{ model.slug }} {{ sample }}\"",
        "run = \"long-names\"",
    );
    let (code, summary, stderr) = r.run();
    assert_eq!(code, 0, "{summary} {stderr}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let ann = read_json(&r.node("build/ann/1/build.json"));
    assert_eq!(ann["outcome"], "completed", "{ann}");
    assert_eq!(ann["files"], serde_json::json!(["adder.py"]), "{ann}");
    let reasons: Vec<&str> = ann["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{ann}");
    assert!(
        reasons.contains(&"a name in the path is 250 bytes long, over the limit of 200"),
        "{ann}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("the path is ") && r.ends_with("over the limit of 1024")),
        "{ann}"
    );
}
