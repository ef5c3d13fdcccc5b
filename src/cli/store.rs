//! `pipe store stats` and `pipe store gc`: what the result store holds, and removing what was not
//! used for a while or what is past a size.

use std::fmt::Write as _;

use crate::cli::args::StoreCommand;
use crate::cli::exit::{EXIT_FAILED, EXIT_OK};
use crate::results::{self, GcOptions, GcReport, Stats};

pub fn store(cmd: &StoreCommand) -> i32 {
    match cmd {
        StoreCommand::Stats { at, json } => match results::stats(&at.root()) {
            Ok(s) if *json => print_json(&s),
            Ok(s) => {
                print!("{}", render_stats(&s));
                EXIT_OK
            }
            Err(e) => fail(&e),
        },
        StoreCommand::Gc {
            at,
            older_than,
            max_size,
            dry_run,
            json,
        } => {
            let opts = GcOptions {
                older_than: *older_than,
                max_bytes: *max_size,
                dry_run: *dry_run,
            };
            match results::gc(&at.root(), opts) {
                Ok(r) if *json => print_json(&r),
                Ok(r) => {
                    print!("{}", render_gc(&r));
                    EXIT_OK
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            EXIT_OK
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    EXIT_FAILED
}

/// Bytes for people: `912 B`, `4.2 KiB`, `1.5 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn render_stats(s: &Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "store    {}", s.store.display());
    let _ = write!(o, "entries  {} ({})", s.entries, human(s.entry_bytes));
    if s.invalid_entries > 0 {
        let _ = write!(o, ", {} not pipe's", s.invalid_entries);
    }
    let _ = writeln!(o);
    let _ = write!(o, "blobs    {} ({})", s.blobs, human(s.blob_bytes));
    if s.unreferenced_blobs > 0 {
        let _ = write!(o, ", {} named by no entry", s.unreferenced_blobs);
    }
    let _ = writeln!(o);
    if let (Some(old), Some(new)) = (&s.oldest_used, &s.newest_used) {
        let _ = writeln!(o, "used     {old} .. {new}");
    }
    if !s.stages.is_empty() {
        let stages: Vec<String> = s.stages.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "stages   {}", stages.join(", "));
    }
    o
}

fn render_gc(r: &GcReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    format!(
        "{verb} {} entr{} and {} blob(s), {}; kept {} entr{} and {} blob(s), {}\n",
        r.entries_removed,
        if r.entries_removed == 1 { "y" } else { "ies" },
        r.blobs_removed,
        human(r.bytes_freed),
        r.entries_kept,
        if r.entries_kept == 1 { "y" } else { "ies" },
        r.blobs_kept,
        human(r.bytes_kept),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_for_people() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 << 30), "10.0 GiB");
    }
}
