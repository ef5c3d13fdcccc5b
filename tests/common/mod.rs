//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod needs;
mod pipe;

#[allow(unused_imports)] // each test file uses some of them
pub use pipe::{Pipe, Ran, pipe};
use std::path::{Path, PathBuf};

/// Copies a directory tree (regular files and directories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every regular file under `dir` (none when it does not exist).
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(all_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The ids of the nodes with `outcome` in a `pipe run --json` summary, sorted.
pub fn ids_with(summary: &serde_json::Value, outcome: &str) -> Vec<String> {
    let mut ids: Vec<String> = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["outcome"] == outcome)
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Serves `app` on a free port of 127.0.0.1 from a thread of its own (the tests themselves are
/// synchronous) and returns the OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`. The
/// server lives as long as the test process.
pub fn serve_in_thread(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/v1")
}
