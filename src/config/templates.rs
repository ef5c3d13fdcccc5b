//! Prompt templates (minijinja, strict undefined) and the contexts stages render them with.
//! Validation renders every template once against a sample context of the same shape, so a
//! misspelt variable is an error at `pipe validate`, not in the middle of a round.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::base::diag::Diag;
use crate::base::limits;
use crate::config::Template;
use crate::config::rubric::Rubric;

#[derive(Debug, Clone, Serialize)]
pub struct TaskCtx {
    pub name: String,
    pub spec: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileCtx {
    pub path: String,
    pub content: String,
}

/// What `prompts/build.md.j2` sees.
#[derive(Debug, Clone, Serialize)]
pub struct BuildCtx {
    pub task: TaskCtx,
    /// Starter files the build may read and change.
    pub workspace: Vec<FileCtx>,
    /// Globs of files the build may not write.
    pub protected: Vec<String>,
    pub model: String,
    pub sample: u32,
}

/// The model as a command harness's `run` template sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandModelCtx {
    /// The round's short id (`deepseek`).
    pub id: String,
    /// The endpoint's model name (`deepseek/deepseek-v4-pro`).
    pub slug: String,
    /// The provider's name in the pipeline, and its base URL (empty for a replay provider).
    pub provider: String,
    pub base_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandTaskCtx {
    pub name: String,
}

/// What the `run` template of `harness = "command"` sees.
#[derive(Debug, Clone, Serialize)]
pub struct CommandCtx {
    pub model: CommandModelCtx,
    pub task: CommandTaskCtx,
    pub sample: u32,
}

impl CommandCtx {
    pub fn sample() -> Self {
        Self {
            model: CommandModelCtx {
                id: "model".into(),
                slug: "vendor/model".into(),
                provider: "provider".into(),
                base_url: "https://example.invalid/v1".into(),
            },
            task: CommandTaskCtx {
                name: "task".into(),
            },
            sample: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GateCtx {
    pub passed: bool,
    pub tests_passed: usize,
    pub tests_total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImplCtx {
    /// The blind label: never the model's name.
    pub label: String,
    /// The implementation fenced with `boundary`, ready to embed: a manifest, the files, the
    /// names of those left out for the size budget. Nothing derived from the implementation
    /// (names, sizes, cut notes) is offered outside it.
    pub listing: String,
    /// The fence marker; the implementation cannot contain it.
    pub boundary: String,
}

/// What `prompts/judge.md.j2` sees.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeCtx {
    pub task: TaskCtx,
    pub rubric: Rubric,
    pub implementation: ImplCtx,
    pub gate: Option<GateCtx>,
    /// The JSON schema of the answer, pretty-printed.
    pub answer_schema: String,
}

impl BuildCtx {
    pub fn sample() -> Self {
        Self {
            task: TaskCtx {
                name: "task".into(),
                spec: "spec".into(),
            },
            workspace: vec![FileCtx {
                path: "README.md".into(),
                content: "x".into(),
            }],
            protected: vec!["test_*.py".into()],
            model: "model".into(),
            sample: 1,
        }
    }
}

impl JudgeCtx {
    pub fn sample(rubric: &Rubric) -> Self {
        Self {
            task: TaskCtx {
                name: "task".into(),
                spec: "spec".into(),
            },
            rubric: rubric.clone(),
            implementation: ImplCtx {
                label: "impl-x".into(),
                listing: "files".into(),
                boundary: "B".into(),
            },
            gate: Some(GateCtx {
                passed: true,
                tests_passed: 1,
                tests_total: 1,
            }),
            answer_schema: "{}".into(),
        }
    }
}

/// Renders a template with strict undefined: a missing variable is an error. Every rendering has
/// a budget: [`TEMPLATE_FUEL`](limits::TEMPLATE_FUEL) instructions,
/// [`TEMPLATE_RECURSION`](limits::TEMPLATE_RECURSION) nested calls and
/// [`MAX_RENDERED_BYTES`](limits::MAX_RENDERED_BYTES) of output; past any of them the rendering
/// stops with a located error.
pub fn render<S: Serialize>(template: &Template, ctx: &S) -> Result<String, Diag> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(limits::TEMPLATE_FUEL));
    env.set_recursion_limit(limits::TEMPLATE_RECURSION);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    env.set_syntax(syntax.build().expect("default delimiters are valid"));
    let name = template.path.display().to_string();
    let diag = |e: minijinja::Error| {
        let ctx = serde_json::to_value(ctx).unwrap_or_default();
        template_diag(&template.path, &template.text, &e, &ctx)
    };
    env.add_template(&name, &template.text).map_err(diag)?;
    let tmpl = env.get_template(&name).map_err(diag)?;
    let mut out = Capped::default();
    match tmpl.render_captured_to(minijinja::value::Serde(ctx), &mut out) {
        Ok(_) => Ok(String::from_utf8(out.bytes).expect("a rendering is UTF-8")),
        Err(_) if out.over => Err(Diag::error(
            &template.path,
            format!(
                "the template renders more than {}",
                limits::bytes(limits::MAX_RENDERED_BYTES as u64)
            ),
        )
        .help("a prompt this long is no prompt a model can take; look for a loop that repeats too much")),
        Err(e) => Err(diag(e)),
    }
}

/// A rendering's output, refused past [`MAX_RENDERED_BYTES`](limits::MAX_RENDERED_BYTES).
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > limits::MAX_RENDERED_BYTES {
            self.over = true;
            return Err(std::io::Error::other("the rendering is too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A template rendered while a round runs: an error is the operator's (a configuration failure),
/// named by the template's file, line and column.
pub fn render_for_run<S: Serialize>(template: &Template, ctx: &S) -> Result<String, String> {
    render(template, ctx).map_err(|d| {
        let place = match d.line {
            0 => d.file.display().to_string(),
            line => format!("{}:{line}:{}", d.file.display(), d.col),
        };
        let help = d.help.map(|h| format!(" ({h})")).unwrap_or_default();
        format!("{place}: {}{help}", d.message)
    })
}

/// Checks a template by rendering it against a sample context.
pub fn check<S: Serialize>(template: &Template, sample: &S) -> Option<Diag> {
    render(template, sample).err()
}

fn template_diag(path: &Path, text: &str, e: &minijinja::Error, ctx: &serde_json::Value) -> Diag {
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    let recursion = e.detail() == Some("recursion limit exceeded");
    let message = match e.kind() {
        minijinja::ErrorKind::UndefinedError => format!("undefined variable in template{detail}"),
        minijinja::ErrorKind::SyntaxError => format!("template syntax error{detail}"),
        minijinja::ErrorKind::OutOfFuel => format!(
            "the template runs too long: it used up its budget of {} steps",
            limits::TEMPLATE_FUEL
        ),
        _ if recursion => format!(
            "the template nests calls more than {} deep",
            limits::TEMPLATE_RECURSION
        ),
        kind => format!("template error ({kind}){detail}"),
    };
    let budget_help = match e.kind() {
        minijinja::ErrorKind::OutOfFuel => Some(
            "a prompt template renders in a few thousand steps; look for a loop over a large \
             `range(...)` or loops nested in loops",
        ),
        _ if recursion => Some("look for a macro that calls itself without end"),
        _ => None,
    };
    let diag = Diag::error(path, message);
    match (e.range(), e.line()) {
        (Some(range), _) => diag.at(text, range.start),
        (None, Some(line)) => {
            let offset = text
                .split_inclusive('\n')
                .take(line.saturating_sub(1))
                .map(str::len)
                .sum();
            diag.at(text, offset)
        }
        _ => diag,
    }
    .help_opt(budget_help.map(str::to_string).or_else(|| {
        matches!(e.kind(), minijinja::ErrorKind::UndefinedError).then(|| {
            e.range()
                .and_then(|r| text.get(r))
                .and_then(|expr| undefined_help(expr, ctx))
                .unwrap_or_else(|| {
                    "the variables a template can use are listed in README.md \
                     (\"Prompt templates\")"
                        .to_string()
                })
        })
    }))
}

/// For an undefined `a.b.c`, the closest name the context has where the lookup failed.
fn undefined_help(expr: &str, ctx: &serde_json::Value) -> Option<String> {
    let segs: Vec<&str> = expr.trim().split('.').map(str::trim).collect();
    if segs
        .iter()
        .any(|s| s.is_empty() || !s.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return None;
    }
    let mut cur = ctx;
    for (i, seg) in segs.iter().enumerate() {
        let serde_json::Value::Object(map) = cur else {
            return None;
        };
        if let Some(next) = map.get(*seg) {
            cur = next;
            continue;
        }
        // A loop variable (`c` in `for c in rubric.criteria`) is not in the context: no guess.
        if i == 0
            && segs.len() > 1
            && crate::base::diag::suggest(seg, map.keys().map(String::as_str)).is_none()
        {
            return None;
        }
        let prefix = segs[..i].join(".");
        let full = |k: &str| {
            if prefix.is_empty() {
                format!("`{k}`")
            } else {
                format!("`{prefix}.{k}`")
            }
        };
        if let Some(best) = crate::base::diag::suggest(seg, map.keys().map(String::as_str)) {
            return Some(format!("did you mean {}?", full(best)));
        }
        let all: Vec<String> = map.keys().map(|k| full(k)).collect();
        return Some(format!("this template can use {}", all.join(", ")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Template {
        Template {
            path: "p.md.j2".into(),
            text: text.into(),
        }
    }

    #[test]
    fn undefined_variable_is_located() {
        let d = check(
            &t("Spec:\n{{ task.spec }}\n{{ task.specc }}\n"),
            &BuildCtx::sample(),
        )
        .unwrap();
        assert_eq!(d.line, 3, "{d:?}");
        assert!(d.message.contains("undefined"), "{}", d.message);
    }

    #[test]
    fn syntax_error_is_located() {
        let d = check(&t("ok\n{% if x %}\n"), &BuildCtx::sample()).unwrap();
        assert!(d.message.contains("syntax"), "{}", d.message);
        assert!(d.line >= 2);
    }

    #[test]
    fn undefined_variable_suggests_the_close_name() {
        let d = check(&t("{{ task.specc }}"), &BuildCtx::sample()).unwrap();
        assert_eq!(d.help.as_deref(), Some("did you mean `task.spec`?"));
        let d = check(&t("{{ modle }}"), &BuildCtx::sample()).unwrap();
        assert_eq!(d.help.as_deref(), Some("did you mean `model`?"));
        // A loop variable is not in the context: no guess, the README pointer instead.
        let d = check(
            &t("{% for f in workspace %}{{ f.pth }}{% endfor %}"),
            &BuildCtx::sample(),
        )
        .unwrap();
        assert!(d.help.unwrap().contains("README.md"));
    }

    #[test]
    fn a_template_that_would_run_forever_stops_at_its_budget() {
        // 10^10 iterations: hours without a budget.
        let d = check(
            &t("Spec\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\n"),
            &BuildCtx::sample(),
        )
        .unwrap();
        assert_eq!(
            d.message,
            format!(
                "the template runs too long: it used up its budget of {} steps",
                limits::TEMPLATE_FUEL
            )
        );
        assert_eq!(d.file, Path::new("p.md.j2"));
        assert_eq!(d.line, 2, "{d:?}");
        assert!(d.help.unwrap().contains("range"));
        // One range too large for minijinja is refused outright.
        let d = check(
            &t("{% for i in range(100000000) %}x{% endfor %}"),
            &BuildCtx::sample(),
        )
        .unwrap();
        assert_eq!(d.line, 1, "{d:?}");
    }

    #[test]
    fn a_macro_that_calls_itself_stops_at_the_recursion_limit() {
        let text = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}\n";
        // On a thread with a small stack (a tokio worker has 2 MiB), without overflowing it.
        let d = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || check(&t(text), &BuildCtx::sample()))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(
            d.message,
            format!(
                "the template nests calls more than {} deep",
                limits::TEMPLATE_RECURSION
            )
        );
        assert!(d.line >= 1, "{d:?}");
    }

    #[test]
    fn a_rendering_is_capped_in_size() {
        let d = check(
            &t("{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}"),
            &BuildCtx::sample(),
        )
        .unwrap();
        assert_eq!(
            d.message,
            "the template renders more than 16 MiB (16777216 bytes)"
        );
        assert!(
            render_for_run(&t("{{ nope }}"), &BuildCtx::sample())
                .unwrap_err()
                .starts_with("p.md.j2:1:4: undefined variable in template")
        );
    }

    #[test]
    fn renders() {
        assert_eq!(
            render(&t("{{ model }}#{{ sample }}"), &BuildCtx::sample()).unwrap(),
            "model#1"
        );
    }
}
