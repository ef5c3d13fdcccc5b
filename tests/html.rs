//! The HTML report in a real browser: run the real `pipe` binary on the offline atomic-write
//! round, render `report.html` from its aggregate with `pipe::report::html::render`, screenshot it with
//! headless Chromium (Debian package `chromium`) and check the picture is not blank.
//!
//! The page's own checks run everywhere; the screenshot needs `chromium` on PATH and is ignored
//! (saying so) where the build found none. The page and the screenshot are kept in
//! `target/tmp/html-report/` for a human to look at.

mod common;
use std::collections::HashSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUND: &str = "atomic-write-offline-2026-05-08";

/// `pipe run` on the offline round; returns the aggregate node's `aggregate.json`.
fn run_round(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let res = common::pipe()
        .cwd(root)
        .args([
            "run",
            "pipelines/atomic-write-offline.toml",
            "--sandbox",
            "local",
            "--out",
        ])
        .arg(out)
        .run();
    assert!(
        res.status.success(),
        "pipe run failed: {}\nstdout {}\nstderr {}",
        res.status,
        res.stdout,
        res.stderr
    );
    let agg = out.join(ROUND).join("nodes/aggregate/aggregate.json");
    assert!(agg.is_file(), "no {}", agg.display());
    agg
}

/// Headless Chromium writes a screenshot of `html` to `png`; killed after `limit`.
fn screenshot(chromium: &Path, html: &Path, png: &Path, limit: Duration) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--window-size=1280,2400")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "chromium failed: {status}\nstderr {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Width, height and RGB pixels of a PNG.
fn decode(bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    (info.width, info.height, px)
}

/// Pixels within a small distance of `rgb`.
fn near(px: &[[u8; 3]], rgb: [u8; 3]) -> usize {
    px.iter()
        .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 4))
        .count()
}

/// The offline round's `report.html`, rendered from its aggregate.
fn rendered_report() -> String {
    let out = tempfile::tempdir().unwrap();
    let agg_path = run_round(out.path());
    let agg: pipe::aggregate::Aggregate =
        serde_json::from_slice(&std::fs::read(&agg_path).unwrap()).unwrap();
    pipe::report::html::render(&agg)
}

#[test]
fn the_report_page_is_self_contained_and_names_every_model() {
    let html = rendered_report();
    assert_eq!(html.matches("<svg").count(), 4, "four charts");
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.to_lowercase().contains("<script"));
    for model in ["alpha", "bravo", "charlie", "delta"] {
        assert!(html.contains(model), "{model} missing from the page");
    }
    assert!(html.contains("Replayed round"));
    assert!(html.contains("build failed"), "delta's failed build");
}

#[test]
#[cfg_attr(
    not(pipe_has_chromium),
    ignore = "needs chromium on PATH: apt-get install chromium, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn report_renders_in_chromium() {
    let chromium = common::needs::chromium();
    let html = rendered_report();
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&keep).unwrap();
    let page = keep.join("report.html");
    let png = keep.join("report.png");
    std::fs::write(&page, &html).unwrap();
    let _ = std::fs::remove_file(&png);
    screenshot(&chromium, &page, &png, Duration::from_secs(120));

    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.len() > 20_000, "screenshot of {} bytes", bytes.len());
    let (w, h, px) = decode(&bytes);
    assert_eq!((w, h), (1280, 2400));
    let distinct: HashSet<[u8; 3]> = px.iter().copied().collect();
    assert!(distinct.len() > 50, "{} distinct colours", distinct.len());
    // The charts' own colours: the winner's bar, passed and failed tests.
    for (what, rgb) in [
        ("the first bar", [0x4e, 0x79, 0xa7]),
        ("passed tests", [0x2e, 0x9e, 0x52]),
        ("failed tests", [0xd9, 0x42, 0x3b]),
    ] {
        let n = near(&px, rgb);
        assert!(n > 200, "{what}: {n} pixels of {rgb:?}");
    }
    eprintln!("screenshot: {}", png.display());
}
