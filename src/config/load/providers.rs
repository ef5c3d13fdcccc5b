//! `[providers.NAME]`: openai endpoints and replay recordings.

use std::collections::BTreeMap;

use super::ctx::{Loader, root};
use crate::base::diag::did_you_mean;
use crate::config::check::{kind_of, section};
use crate::config::raw::RawProvider;
use crate::config::{ProviderConfig, ProviderKind};
use crate::source::KeyPath;

/// Default first backoff ceiling of an openai provider, in milliseconds.
pub const DEFAULT_RETRY_BASE_MS: u64 = 1000;

/// Default tolerance of an outage (an endpoint refusing connections), in seconds.
pub const DEFAULT_OUTAGE_SECS: u64 = 600;

/// Headers a provider may not fix: pipe sets them itself, or they carry credentials (which come
/// from the environment only, through `api_key_env`).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// Default longest backoff of an openai provider, in milliseconds.
pub const DEFAULT_RETRY_MAX_MS: u64 = 60_000;

impl Loader<'_> {
    pub(super) fn providers(&mut self) -> BTreeMap<String, ProviderConfig> {
        let mut out = BTreeMap::new();
        let at = root().key("providers");
        let Some(value) = self.doc.get(&at) else {
            return out;
        };
        let Some(map) = value.as_object() else {
            let msg = format!(
                "[providers] must be a table of named providers, found {}",
                kind_of(value)
            );
            self.err(&at, msg);
            return out;
        };
        for name in map.keys() {
            let p = at.key(name);
            let Some(raw) = section::<RawProvider>(
                self.doc,
                &p,
                &format!("provider `{name}`"),
                &mut self.diags,
            ) else {
                continue;
            };
            let kind = match raw.kind.as_str() {
                "openai" => {
                    let Some(kind) = self.openai(&p, name, &raw) else {
                        continue;
                    };
                    kind
                }
                "replay" => {
                    let Some(rel) = raw.recordings.clone() else {
                        self.err(&p, format!("provider `{name}` of kind replay needs `recordings`")).help =
                            Some("the directory a `pipe run --record DIR` wrote, relative to the pipeline file".into());
                        continue;
                    };
                    let dir = self.dir.join(&rel);
                    if !dir.is_dir() {
                        self.err(
                            &p.key("recordings"),
                            format!("recordings directory `{rel}` not found"),
                        );
                    }
                    for (key, set) in [
                        ("outage_secs", raw.outage_secs.is_some()),
                        ("headers", raw.headers.is_some()),
                    ] {
                        if set {
                            self.err(&p.key(key), format!("`{key}` is for openai providers"))
                                .help =
                                Some("a replay provider calls no endpoint: remove the key".into());
                        }
                    }
                    let delay_ms = raw.delay_ms.unwrap_or(0);
                    let jitter_ms = raw.delay_jitter_ms.unwrap_or(0);
                    if jitter_ms > delay_ms {
                        self.err(
                            &p.key("delay_jitter_ms"),
                            format!(
                                "delay_jitter_ms {jitter_ms} is larger than delay_ms {delay_ms}"
                            ),
                        )
                        .help =
                            Some("a latency of delay_ms +- delay_jitter_ms must stay >= 0".into());
                    }
                    ProviderKind::Replay {
                        recordings: dir,
                        delay_ms,
                        jitter_ms,
                    }
                }
                other => {
                    let help = did_you_mean(other, ["openai", "replay"]);
                    self.err(&p.key("kind"), format!("unknown provider kind `{other}`"))
                        .help = help;
                    continue;
                }
            };
            if raw.max_concurrency == Some(0) {
                self.err(
                    &p.key("max_concurrency"),
                    "max_concurrency must be at least 1",
                );
            }
            out.insert(
                name.clone(),
                ProviderConfig {
                    name: name.clone(),
                    kind,
                    max_concurrency: raw.max_concurrency.unwrap_or(4).max(1) as usize,
                },
            );
        }
        out
    }

    /// An `openai` provider's settings, checked; none when `base_url` is missing.
    fn openai(&mut self, p: &KeyPath, name: &str, raw: &RawProvider) -> Option<ProviderKind> {
        let Some(base_url) = raw.base_url.clone() else {
            self.err(
                p,
                format!("provider `{name}` of kind openai needs `base_url`"),
            )
            .help = Some("e.g. base_url = \"https://openrouter.ai/api/v1\"".into());
            return None;
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            self.err(
                &p.key("base_url"),
                format!("base_url `{base_url}` is not an http(s) URL"),
            );
        }
        if let Some(var) = &raw.api_key_env {
            self.check_key_var(&p.key("api_key_env"), var);
        }
        let headers = self.fixed_headers(&p.key("headers"), raw.headers.as_ref());
        for (key, set) in [
            ("delay_ms", raw.delay_ms.is_some()),
            ("delay_jitter_ms", raw.delay_jitter_ms.is_some()),
        ] {
            if set {
                self.err(&p.key(key), format!("`{key}` is for replay providers"))
                    .help = Some(
                    "an openai provider's latency is the endpoint's own: remove the key".into(),
                );
            }
        }
        let (retry_base_ms, retry_max_ms) = self.retry_backoff(p, raw);
        self.timeout(&p.key("timeout_secs"), raw.timeout_secs, "one model call");
        Some(ProviderKind::OpenAi {
            base_url,
            api_key_env: raw.api_key_env.clone(),
            timeout_secs: raw.timeout_secs.unwrap_or(600),
            max_retries: raw.max_retries.unwrap_or(5),
            retry_base_ms,
            retry_max_ms,
            outage_secs: raw.outage_secs.unwrap_or(DEFAULT_OUTAGE_SECS),
            headers,
        })
    }

    /// `retry_base_ms` and `retry_max_ms` of an openai provider, defaults filled in: both at
    /// least 1, and the base no longer than the cap.
    pub(super) fn retry_backoff(&mut self, p: &KeyPath, raw: &RawProvider) -> (u64, u64) {
        let base = raw.retry_base_ms.unwrap_or(DEFAULT_RETRY_BASE_MS);
        let max = raw.retry_max_ms.unwrap_or(DEFAULT_RETRY_MAX_MS);
        let mut ok = true;
        for (key, value) in [("retry_base_ms", base), ("retry_max_ms", max)] {
            if value == 0 {
                self.err(&p.key(key), format!("{key} must be at least 1"))
                    .help =
                    Some("a wait in milliseconds; leave the key out for the default".into());
                ok = false;
            }
        }
        if ok && base > max {
            // Point at whichever of the two the file sets (the base when it sets both).
            let (key, message) = match (raw.retry_base_ms, raw.retry_max_ms) {
                (_, None) => (
                    "retry_base_ms",
                    format!("retry_base_ms {base} exceeds retry_max_ms ({max}, the default)"),
                ),
                (None, Some(_)) => (
                    "retry_max_ms",
                    format!("retry_max_ms {max} is below retry_base_ms ({base}, the default)"),
                ),
                (Some(_), Some(_)) => (
                    "retry_base_ms",
                    format!("retry_base_ms {base} exceeds retry_max_ms {max}"),
                ),
            };
            self.err(&p.key(key), message).help = Some(
                "the first backoff (retry_base_ms) must not be longer than the longest (retry_max_ms)"
                    .into(),
            );
        }
        (base, max)
    }

    /// A provider's fixed headers: valid HTTP names and values, none that pipe sets itself,
    /// and none that looks like a credential (a secret in a pipeline file would end up in git).
    fn fixed_headers(
        &mut self,
        at: &KeyPath,
        headers: Option<&BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, value) in headers.into_iter().flatten() {
            let here = at.key(name);
            let lower = name.to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.err(&here, format!("`{name}` is not a valid HTTP header name"))
                    .help = Some("letters, digits and `-`, e.g. \"X-Title\"".into());
                continue;
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                self.err(&here, format!("header `{name}` is set by pipe"))
                    .help = Some(
                    "pipe sends its own User-Agent, content headers and the key from api_key_env: remove it"
                        .into(),
                );
                continue;
            }
            if ["key", "token", "secret", "auth", "password"]
                .iter()
                .any(|w| lower.contains(w))
            {
                self.err(&here, format!("header `{name}` looks like a credential"))
                    .help = Some(
                    "secrets come from the environment only: put the key in a variable and name it in api_key_env"
                        .into(),
                );
                continue;
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                self.err(
                    &here,
                    format!("the value of header `{name}` is not a valid HTTP header value"),
                )
                .help = Some("one line of visible ASCII characters".into());
                continue;
            }
            out.insert(name.clone(), value.clone());
        }
        out
    }

    pub(super) fn check_key_var(&mut self, at: &KeyPath, var: &str) {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return;
        }
        let message = format!("the API key variable `{var}` is not set");
        let help = format!(
            "export {var}=... before `pipe run` (the key is read from the environment only)"
        );
        let d = self.missing_var(at, message);
        self.diags.push(d.help(help));
    }
}
