//! Bad input costs pipe bounded work: `pipe validate` of rounds with tens of thousands of models,
//! stages or unknown keys runs in time and memory linear in the input, reports a bounded number
//! of problems, and refuses a round whose plan would be too large before expanding it.
//!
//! Each case runs the real binary and measures its CPU time and peak memory (from `wait4`), so a
//! busy machine slows the measurements less than the wall clock. A quadratic part shows as a time
//! four times as long for twice the input; the bounds allow three.

mod common;
use common::copy_dir;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const EXIT_OK: i32 = 0;
const EXIT_INVALID: i32 = 2;
/// A run that takes longer is killed (and the case fails): the quadratic code took minutes.
const DEADLINE: Duration = Duration::from_secs(90);

struct Measured {
    code: i32,
    stdout: String,
    stderr: String,
    /// User + system CPU seconds.
    cpu: f64,
    /// Peak resident memory, in MiB.
    rss_mib: f64,
}

/// Runs `pipe ARGS` in `dir` and measures it; killed past [`DEADLINE`].
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which also reports what it used"
)]
fn measure(dir: &Path, args: &[&str]) -> Measured {
    let mut child = common::pipe()
        .cwd(dir)
        .env_remove("OPENROUTER_API_KEY")
        .env("NO_COLOR", "1")
        .args(args)
        .spawn_with(Stdio::piped(), Stdio::piped());
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).expect("UTF-8 output");
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            while start.elapsed() < DEADLINE {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: `pid` is our child, not reaped until `wait4` below returns.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes; `pid` is our unreaped child.
    let reaped = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.join().expect("watchdog");
    assert_eq!(reaped, pid, "wait4 failed");
    assert!(
        start.elapsed() < DEADLINE,
        "pipe {args:?} ran past {DEADLINE:?} and was killed"
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// A copy of the mini fixture round (task, templates, rubric, recordings) with `pipeline` as
/// its pipeline file.
fn round(file: &str, pipeline: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        dir.path(),
    );
    std::fs::write(dir.path().join(file), pipeline).expect("write the pipeline");
    let root = dir.path().to_path_buf();
    (dir, root)
}

const HEAD: &str = "[round]\nname = \"mini\"\ndate = \"2026-01-02\"\ntask = \"task\"\n\n\
                    [providers.replay]\nkind = \"replay\"\nrecordings = \"recordings\"\n\n";

/// `n` models; a build, a gate and an aggregate; a judge stage when `judge`.
fn models_pipeline(n: usize, judge: bool) -> String {
    let mut s = HEAD.to_string();
    for i in 0..n {
        let _ = write!(
            s,
            "[[models]]\nid = \"m{i}\"\nprovider = \"replay\"\nmodel = \"example/m{i}\"\n\n"
        );
    }
    s.push_str(
        "[stages.build]\nkind = \"build\"\nprompt = \"build.md.j2\"\n\n\
         [stages.gate]\nkind = \"gate\"\nneeds = [\"build\"]\n\n",
    );
    if judge {
        s.push_str(
            "[stages.judge]\nkind = \"judge\"\nneeds = [\"gate\"]\nprompt = \"judge.md.j2\"\n\
             rubric = \"rubric.toml\"\n\n",
        );
    }
    s.push_str("[stages.aggregate]\nkind = \"aggregate\"\nneeds = [\"gate\"]\n");
    s
}

/// One model, a build and a chain of `n` command stages, each needing the one before, then an
/// aggregate of them all.
fn stages_pipeline(n: usize) -> String {
    let mut s = HEAD.to_string();
    s.push_str(
        "[[models]]\nid = \"ann\"\nprovider = \"replay\"\nmodel = \"example/ann\"\n\n\
         [stages.build]\nkind = \"build\"\nprompt = \"build.md.j2\"\n\n",
    );
    for i in 0..n {
        let need = if i == 0 {
            "build".to_string()
        } else {
            format!("c{}", i - 1)
        };
        let _ = write!(
            s,
            "[stages.c{i}]\nkind = \"command\"\nneeds = [\"{need}\"]\ncommand = \"true\"\n\n"
        );
    }
    let _ = write!(
        s,
        "[stages.aggregate]\nkind = \"aggregate\"\nneeds = [\"c{}\"]\n",
        n - 1
    );
    s
}

/// The mini round in YAML with `n` unknown top-level keys.
fn yaml_unknown_keys(n: usize) -> String {
    let mut s = "round:\n  name: mini\n  date: \"2026-01-02\"\n  task: task\nproviders:\n  replay:\n    \
                 kind: replay\n    recordings: recordings\nmodels:\n  - id: ann\n    provider: replay\n    \
                 model: example/ann\nstages:\n  build:\n    kind: build\n    prompt: build.md.j2\n"
        .to_string();
    for i in 0..n {
        let _ = writeln!(s, "unknown_{i}: {i}");
    }
    s
}

/// The mini round in TOML with `n` unknown keys in one price, all on one line.
fn toml_unknown_keys_on_one_line(n: usize) -> String {
    let keys: Vec<String> = (0..n).map(|i| format!("k{i} = {i}")).collect();
    format!(
        "{HEAD}[[models]]\nid = \"ann\"\nprovider = \"replay\"\nmodel = \"example/ann\"\n\
         price = {{ input = 1.0, {} }}\n\n[stages.build]\nkind = \"build\"\nprompt = \"build.md.j2\"\n",
        keys.join(", ")
    )
}

/// Validates the pipeline `make(n)` and `make(2n)`; both must pass `check`. Returns the two
/// measurements after asserting the bounds: the smaller within `max_cpu` CPU seconds, the larger
/// less than three times the smaller's time (twice is linear, four times quadratic) and memory.
fn linear(
    file: &str,
    n: usize,
    make: impl Fn(usize) -> String,
    max_cpu: f64,
    check: impl Fn(&Measured),
) -> (Measured, Measured) {
    linear_run(file, &["validate", file], (n, 2), make, max_cpu, check)
}

/// [`linear`] for any command `args` reading `file`, at sizes `n` and `k n`: the larger must take
/// less than `1.5 k` times the smaller's time and memory (`k` is linear, `k^2` quadratic).
fn linear_run(
    file: &str,
    args: &[&str],
    (n, k): (usize, usize),
    make: impl Fn(usize) -> String,
    max_cpu: f64,
    check: impl Fn(&Measured),
) -> (Measured, Measured) {
    let bound = 1.5 * k as f64;
    let (_small_dir, small_root) = round(file, &make(n));
    let (_large_dir, large_root) = round(file, &make(k * n));
    let run = |root: &Path| {
        let m = measure(root, args);
        check(&m);
        m
    };
    let (mut small, mut large) = (run(&small_root), run(&large_root));
    if large.cpu >= 0.8 * bound * small.cpu {
        // Measured again, keeping the better runs: one slow run on a busy machine says
        // nothing about pipe.
        let (s, l) = (run(&small_root), run(&large_root));
        small = if s.cpu < small.cpu { s } else { small };
        large = if l.cpu < large.cpu { l } else { large };
    }
    eprintln!(
        "{file}: n = {n}: {:.2} s CPU, {:.0} MiB; {k}n: {:.2} s CPU, {:.0} MiB",
        small.cpu, small.rss_mib, large.cpu, large.rss_mib
    );
    assert!(
        small.cpu < max_cpu,
        "n = {n} took {:.2} s of CPU (bound {max_cpu} s)",
        small.cpu
    );
    // A small floor keeps a run of a few hundredths of a second from failing on noise.
    assert!(
        large.cpu < bound * small.cpu.max(0.2),
        "{k} times the input took {:.2} s against {:.2} s: not linear",
        large.cpu,
        small.cpu
    );
    assert!(
        large.rss_mib < bound * small.rss_mib,
        "{k} times the input took {:.0} MiB against {:.0} MiB: not linear",
        large.rss_mib,
        small.rss_mib
    );
    (small, large)
}

/// 10,000 and 40,000 models: at twice the size the quadratic parts of the old code (a search of
/// every model per node, duplicates by pairs) were still hidden under the linear ones.
#[test]
fn ten_thousand_models_validate_in_linear_time_and_memory() {
    linear_run(
        "pipeline.toml",
        &["validate", "pipeline.toml"],
        (10_000, 4),
        |n| models_pipeline(n, false),
        10.0,
        |m| {
            assert_eq!(m.code, EXIT_OK, "{}", m.stderr);
            assert!(m.stdout.starts_with("ok: "), "{}", m.stdout);
        },
    );
}

#[test]
fn ten_thousand_stages_validate_in_linear_time_and_memory() {
    linear("pipeline.toml", 10_000, stages_pipeline, 10.0, |m| {
        assert_eq!(m.code, EXIT_OK, "{}", m.stderr);
        assert!(m.stdout.starts_with("ok: "), "{}", m.stdout);
    });
}

/// Tens of thousands of unknown keys: every one is located, in linear time, and the report
/// shows the first 50 and counts the rest.
#[test]
fn fifty_thousand_unknown_yaml_keys_are_reported_in_linear_time() {
    let (_, large) = linear("pipeline.yaml", 50_000, yaml_unknown_keys, 10.0, |m| {
        assert_eq!(m.code, EXIT_INVALID, "{}", m.stderr);
    });
    let lines: Vec<&str> = large.stderr.lines().collect();
    assert!(lines.len() < 50 * 6, "{} lines", lines.len());
    assert_eq!(
        lines[0],
        "pipeline.yaml:17:1: error: unknown key `unknown_0` in the pipeline file (at `unknown_0`)"
    );
    assert_eq!(
        &lines[lines.len() - 2..],
        [
            "... and 99950 more not shown (the first 50 are above)",
            "100000 error(s), 0 warning(s)"
        ]
    );
}

/// Unknown keys on one long line: each error shows a window of the line, not all of it (50,000
/// copies of a 600 KB line would be 30 GB).
#[test]
fn fifty_thousand_unknown_keys_on_one_toml_line_are_reported_in_linear_time() {
    let (_, large) = linear(
        "pipeline.toml",
        50_000,
        toml_unknown_keys_on_one_line,
        10.0,
        |m| {
            assert_eq!(m.code, EXIT_INVALID, "{}", m.stderr);
        },
    );
    assert!(large.stderr.len() < 100_000, "{} bytes", large.stderr.len());
    assert!(
        large.stderr.starts_with(
            "pipeline.toml:14:24: error: unknown key `k0` in a price (at `models[0].price.k0`)"
        ),
        "{}",
        &large.stderr[..200]
    );
    assert!(large.stderr.ends_with(
        "... and 99950 more not shown (the first 50 are above)\n100000 error(s), 0 warning(s)\n"
    ));
}

/// 10,000 models judging each other are 10^8 judgments: refused, at once, before any is planned.
#[test]
fn a_round_too_large_to_plan_is_refused_before_planning() {
    let (_dir, root) = round("pipeline.toml", &models_pipeline(10_000, true));
    let m = measure(&root, &["validate", "pipeline.toml"]);
    assert_eq!(m.code, EXIT_INVALID, "{}", m.stderr);
    assert!(m.cpu < 10.0, "{:.2} s", m.cpu);
    assert!(m.rss_mib < 500.0, "{:.0} MiB", m.rss_mib);
    assert!(
        m.stderr.starts_with(
            "pipeline.toml:50018:9: error: this round expands to 100020001 nodes, over pipe's limit of 1000000; \
             stage `judge` alone makes 100000000 nodes (10000 models, 1 samples, 1 task(s)) (at `stages.judge`)"
        ),
        "{}",
        m.stderr
    );
}

/// A file past its limit is refused unread, with its size and the limit.
#[test]
fn a_pipeline_past_the_size_limit_is_refused_before_parsing() {
    let mut text = models_pipeline(2, false);
    text.push_str(&"#".repeat(5 << 20));
    let (_dir, root) = round("pipeline.toml", &text);
    let m = measure(&root, &["validate", "pipeline.toml"]);
    assert_eq!(m.code, EXIT_INVALID, "{}", m.stderr);
    assert_eq!(
        m.stderr,
        format!(
            "pipeline.toml: error: the file is {} bytes; pipe reads at most 4 MiB (4194304 bytes) of a pipeline, rubric or task file\n  \
             = help: check that this is the file you meant; a round this large belongs in several pipelines\n1 error(s), 0 warning(s)\n",
            text.len()
        )
    );
}

/// A Multivac evaluation of about `n` judgments: every model of `sqrt(n)` judging every other.
fn multivac_evaluation(n: usize) -> String {
    let models = (n as f64).sqrt().round() as usize;
    let used: Vec<String> = (0..models)
        .map(|i| format!("{{\"id\": \"m{i}\"}}"))
        .collect();
    let mut judgments = Vec::new();
    for a in 0..models {
        for b in (0..models).filter(|b| *b != a) {
            let score = (a * 7 + b * 3) % 11;
            judgments.push(format!(
                "{{\"judge_key\": \"m{a}\", \"respondent_key\": \"m{b}\", \"weighted_score\": {score}}}"
            ));
        }
    }
    format!(
        "{{\"question_id\": \"Q\", \"timestamp\": \"2026-04-02T13:30:34Z\", \"models_used\": [{}], \"judgments\": [{}]}}",
        used.join(", "),
        judgments.join(",\n")
    )
}

/// An imported round is aggregated in time near its size: 100 models judging each other (with
/// the bootstrap's 1,000 draws) took minutes when every lookup searched every judgment.
#[test]
fn ten_thousand_imported_judgments_aggregate_in_linear_time() {
    linear_run(
        "mv.json",
        &["import", "multivac", "mv.json", "--out", "out"],
        (10_000, 2),
        multivac_evaluation,
        10.0,
        |m| {
            assert_eq!(m.code, EXIT_OK, "{}", m.stderr);
        },
    );
}
