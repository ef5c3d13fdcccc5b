//! The `pipe` binary as every integration test runs it: a small builder (arguments, working
//! directory, environment, stdin) whose `run` returns what happened (exit status, stdout,
//! stderr) with assertions that print all of it when they fail.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// The `pipe` binary cargo built for the tests, with nothing set yet.
pub fn pipe() -> Pipe {
    Pipe {
        cmd: Command::new(env!("CARGO_BIN_EXE_pipe")),
        stdin: None,
    }
}

/// One invocation of `pipe`, built up before it runs.
pub struct Pipe {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Pipe {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// The working directory.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// What pipe reads on stdin (none by default: stdin is empty).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs pipe to its end, capturing stdout and stderr.
    pub fn run(mut self) -> Ran {
        let out = match self.stdin.take() {
            None => self.cmd.output(),
            Some(input) => {
                let mut child = self
                    .cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("pipe starts");
                let mut stdin = child.stdin.take().unwrap();
                let writer = std::thread::spawn(move || stdin.write_all(&input));
                let out = child.wait_with_output();
                // pipe may exit without reading all of its stdin: that is its business.
                let _ = writer.join();
                out
            }
        }
        .expect("pipe runs");
        Ran {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts pipe in the background with stdin, stdout and stderr on /dev/null (tests that
    /// signal or kill it).
    pub fn spawn(self) -> Child {
        self.spawn_with(Stdio::null(), Stdio::null())
    }

    /// Starts pipe in the background with stdin on /dev/null and the given stdout and stderr.
    pub fn spawn_with(mut self, stdout: Stdio, stderr: Stdio) -> Child {
        assert!(self.stdin.is_none(), "spawn gives pipe no stdin");
        self.cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("pipe starts")
    }
}

/// What one run of pipe did.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The exit code; -1 when a signal ended pipe.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Stdout parsed as JSON (panics with stdout and stderr when it is not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}), exit {}\nstdout:\n{}\nstderr:\n{}",
                self.status, self.stdout, self.stderr
            )
        })
    }

    /// Asserts pipe exited with `code`, showing what it printed otherwise.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "pipe exited {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts pipe exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }
}
