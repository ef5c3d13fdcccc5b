//! JUnit XML (as pytest and most runners write it) into per-test results.

use quick_xml::Reader;
use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    /// `classname::name` when the runner gives a class, else the name.
    pub id: String,
    pub name: String,
    pub outcome: TestOutcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JunitError {
    #[error("malformed JUnit XML at line {line}, column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the JUnit report is empty")]
    Empty,
    #[error("not JUnit XML: no <testsuite> or <testsuites> element")]
    NotJunit,
}

/// Parses a JUnit report. A `<testcase>` with a `<failure>` is failed, with an `<error>` is an
/// error, with a `<skipped>` skipped, else passed.
pub fn parse(xml: &[u8]) -> Result<Vec<TestCase>, JunitError> {
    if xml.iter().all(u8::is_ascii_whitespace) {
        return Err(JunitError::Empty);
    }
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut cases = Vec::new();
    let mut current: Option<TestCase> = None;
    let mut saw_suite = false;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            let (line, column) = line_col(xml, reader.error_position());
            JunitError::Malformed {
                line,
                column,
                message: e.to_string(),
            }
        })?;
        match event {
            Event::Start(e) | Event::Empty(e)
                if matches!(e.name().as_ref(), "testsuite" | "testsuites") =>
            {
                saw_suite = true;
            }
            Event::Start(e) if e.name().as_ref() == "testcase" => {
                current = Some(case_from(&e));
            }
            Event::Empty(e) if e.name().as_ref() == "testcase" => {
                cases.push(case_from(&e));
            }
            Event::Start(e) | Event::Empty(e) if current.is_some() => {
                let outcome = match e.name().as_ref() {
                    "failure" => Some(TestOutcome::Failed),
                    "error" => Some(TestOutcome::Error),
                    "skipped" => Some(TestOutcome::Skipped),
                    _ => None,
                };
                if let (Some(o), Some(c)) = (outcome, current.as_mut()) {
                    // An error (e.g. in teardown) after a failure keeps the failure.
                    if c.outcome == TestOutcome::Passed || o == TestOutcome::Failed {
                        c.outcome = o;
                    }
                    if c.message.is_empty() {
                        c.message = attr(&e, "message").chars().take(500).collect();
                    }
                }
            }
            Event::End(e) if e.name().as_ref() == "testcase" => {
                if let Some(c) = current.take() {
                    cases.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_suite {
        return Err(JunitError::NotJunit);
    }
    Ok(cases)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(xml: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
    let before = String::from_utf8_lossy(&xml[..end]);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn attr(e: &quick_xml::events::BytesStart<'_>, name: &str) -> String {
    e.attributes()
        .filter_map(Result::ok)
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::default())
                .ok()
                .map(std::borrow::Cow::into_owned)
        })
        .unwrap_or_default()
}

fn case_from(e: &quick_xml::events::BytesStart<'_>) -> TestCase {
    let name = attr(e, "name");
    let class = attr(e, "classname");
    let id = if class.is_empty() {
        name.clone()
    } else {
        format!("{class}::{name}")
    };
    TestCase {
        id,
        name,
        outcome: TestOutcome::Passed,
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pytest_output() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4">
<testcase classname="test_a" name="test_ok" time="0.001" />
<testcase classname="test_a" name="test_bad" time="0.001"><failure message="assert 1 == 2">trace</failure></testcase>
<testcase classname="test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="why" /></testcase>
<testcase classname="test_a" name="test_err" time="0"><error message="fixture &lt;x&gt; failed">trace</error></testcase>
</testsuite></testsuites>"#;
        let cases = parse(xml).unwrap();
        let outcomes: Vec<_> = cases.iter().map(|c| (c.name.as_str(), c.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![
                ("test_ok", TestOutcome::Passed),
                ("test_bad", TestOutcome::Failed),
                ("test_skip", TestOutcome::Skipped),
                ("test_err", TestOutcome::Error)
            ]
        );
        assert_eq!(cases[3].message, "fixture <x> failed");
        assert_eq!(cases[0].id, "test_a::test_ok");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse(b"<testsuite><testcase name='a'></testsuite>"),
            Err(JunitError::Malformed { .. })
        ));
        assert_eq!(parse(b"<html></html>"), Err(JunitError::NotJunit));
        assert_eq!(parse(b""), Err(JunitError::Empty));
        assert_eq!(parse(b" \n"), Err(JunitError::Empty));
    }

    #[test]
    fn locates_malformed_xml_by_line_and_column() {
        let err = parse(b"<testsuite>\n  <testcase name='a'>\n</testsuite>\n").unwrap_err();
        let JunitError::Malformed { line, column, .. } = err else {
            panic!("expected a malformed report, got {err:?}")
        };
        assert_eq!((line, column), (3, 1), "{err}");
    }

    #[test]
    fn a_suite_without_test_cases_parses_to_none() {
        assert_eq!(
            parse(br#"<testsuite name="x" tests="0"></testsuite>"#),
            Ok(Vec::new())
        );
        assert_eq!(parse(b"<testsuites/>"), Ok(Vec::new()));
    }
}
