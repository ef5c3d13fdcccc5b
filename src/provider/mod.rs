//! Model providers: the one seam between a stage and a language model.
//!
//! A stage builds a [`ChatRequest`], a [`Provider`] answers it with a [`ChatResponse`]. Two kinds:
//! `openai` speaks the OpenAI-compatible chat-completions API over HTTP; `replay` answers from a
//! recordings directory. Both report token usage per call so cost is computed the same way.

pub mod budget;
pub mod openai;
pub mod replay;

use crate::vocab::{Sampling, Usage};

use serde::{Deserialize, Serialize};

/// One chat message. `tool_calls` (an assistant asking for tools) and `tool_call_id` (a tool's
/// result answering one call) are left out when absent, so plain messages serialise, and digest,
/// as they always did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
    /// An assistant turn that asks for tools (none: a plain assistant message).
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..Self::new("assistant", content)
        }
    }
    /// The result of the tool call `id`.
    pub fn tool(id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(id.into()),
            ..Self::new("tool", content)
        }
    }
}

/// One tool call of an assistant message, in the chat-completions wire shape:
/// `{"id", "type": "function", "function": {"name", "arguments"}}`; `arguments` is a JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as the model wrote them: a JSON text, possibly invalid.
    #[serde(default)]
    pub arguments: String,
}

impl ToolCall {
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A request for one completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name the endpoint knows (e.g. `deepseek/deepseek-v4-pro`).
    pub model: String,
    pub messages: Vec<Message>,
    pub sampling: Sampling,
    /// A JSON schema the answer must follow, sent as `response_format` when the endpoint supports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
    /// Tool definitions (chat-completions `tools`), sent only when there are some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
    /// Chat-completions `tool_choice`, passed on as given (an agent CLI behind the gateway may
    /// insist on a tool); left out when absent, so requests without it digest as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
}

impl ChatRequest {
    /// A stable digest of everything that can change the answer; recordings keep it so a replay
    /// can tell when the request it is answering differs from the one that was recorded.
    ///
    /// The text of tool results is left out: a replay executes the recorded tool calls again, and
    /// what they print (a test run's timings, temp paths) differs from run to run although the
    /// conversation is the same. What the model asked for stays in: the assistant messages, with
    /// tool arguments in one JSON spelling (a recording keeps them as data, not as the text the
    /// endpoint sent).
    pub fn digest(&self) -> String {
        let with_tools = self
            .messages
            .iter()
            .any(|m| m.tool_call_id.is_some() || m.tool_calls.is_some());
        let bytes = if with_tools {
            let mut stable = self.clone();
            for m in &mut stable.messages {
                if m.tool_call_id.is_some() {
                    m.content.clear();
                }
                for call in m.tool_calls.iter_mut().flatten() {
                    if let Ok(v) =
                        serde_json::from_str::<serde_json::Value>(&call.function.arguments)
                    {
                        call.function.arguments = v.to_string();
                    }
                }
            }
            serde_json::to_vec(&stable)
        } else {
            serde_json::to_vec(self)
        };
        let bytes = bytes.expect("a request always serialises");
        blake3::hash(&bytes).to_hex()[..16].to_string()
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: String,
    pub usage: Usage,
    /// Wall time of the call, retries included, in milliseconds.
    pub latency_ms: u64,
    /// Attempts made (1 when the first one answered).
    pub attempts: u32,
    /// The tools the model asked for (chat-completions `tool_calls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped (`stop`, `tool_calls`, `length`), when the endpoint says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Time the call spent throttled: waiting after a 429, or queued behind a lowered
    /// concurrency limit, in milliseconds.
    #[serde(default, skip_serializing_if = "crate::vocab::is_zero")]
    pub throttled_ms: u64,
}

/// Why a call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The endpoint (or the network) failed: not the model's fault.
    #[error("endpoint failed after {attempts} attempt(s): {message}")]
    Infrastructure {
        attempts: u32,
        message: String,
        usage: Usage,
    },
    /// The request is wrong (4xx other than 429): retrying will not help.
    #[error("request rejected: {message}")]
    Rejected { message: String },
    /// No recording answers this request.
    #[error("{0}")]
    Replay(String),
    /// A spending cap (`max_cost_usd`) is reached: the call did not start.
    #[error("{0}")]
    Budget(String),
}

/// Where a call belongs in a round, used by recordings to lay exchanges out by stage, model and
/// subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    /// Stage name (`build`, `judge`, ...).
    pub stage: crate::base::names::SafeName,
    /// The model making the call (the builder, or the judge).
    pub model: crate::base::names::SafeName,
    /// What the call is about: `1` for build sample 1, `alpha-1` for judging alpha's sample 1.
    pub subject: String,
    /// Turn within the exchange (0 for the first request, 1 for a repair turn, ...).
    pub turn: usize,
}

/// The providers of a round, by name, and an optional recorder of every live exchange.
pub struct Providers {
    pub by_name: std::collections::BTreeMap<String, AnyProvider>,
    pub recorder: Option<replay::Recorder>,
    /// The round's spending caps; none when it sets none.
    pub budget: Option<budget::Budget>,
}

/// A model endpoint.
pub enum AnyProvider {
    OpenAi(Box<openai::OpenAiProvider>),
    Replay(replay::ReplayProvider),
}

impl Providers {
    /// Builds the providers of a pipeline. `strict` makes replay mismatches errors.
    pub fn new(
        pipeline: &crate::config::Pipeline,
        strict: bool,
        record: Option<std::path::PathBuf>,
    ) -> Self {
        let by_name = pipeline
            .providers
            .iter()
            .map(|(name, cfg)| {
                let p = match &cfg.kind {
                    crate::config::ProviderKind::OpenAi { .. } => {
                        AnyProvider::OpenAi(Box::new(openai::OpenAiProvider::new(cfg)))
                    }
                    crate::config::ProviderKind::Replay {
                        recordings,
                        delay_ms,
                        jitter_ms,
                    } => AnyProvider::Replay(replay::ReplayProvider {
                        dir: recordings.clone(),
                        strict,
                        delay: (*delay_ms, *jitter_ms),
                    }),
                };
                (name.clone(), p)
            })
            .collect();
        Self {
            by_name,
            recorder: record.map(|dir| replay::Recorder { dir }),
            budget: budget::Budget::of(pipeline),
        }
    }

    /// Time each (provider, model) has spent throttled so far, for the run log.
    pub fn throttled(&self) -> Vec<(String, String, std::time::Duration)> {
        self.by_name
            .iter()
            .filter_map(|(name, p)| match p {
                AnyProvider::OpenAi(o) => Some((name, o.throttled())),
                AnyProvider::Replay(_) => None,
            })
            .flat_map(|(name, by_model)| {
                by_model
                    .into_iter()
                    .map(move |(model, d)| (name.clone(), model, d))
            })
            .collect()
    }

    /// Sends a request through the named provider; records the exchange when recording.
    pub async fn chat(
        &self,
        provider: &str,
        site: &CallSite,
        request: &ChatRequest,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ChatResponse, ProviderError> {
        let p = self
            .by_name
            .get(provider)
            .ok_or_else(|| ProviderError::Rejected {
                message: format!("unknown provider `{provider}`"),
            })?;
        if let Some(b) = &self.budget {
            b.admit(&site.model).map_err(ProviderError::Budget)?;
        }
        let answered = match p {
            AnyProvider::OpenAi(o) => o.chat(site, request, notify).await,
            AnyProvider::Replay(r) => {
                let wait = r.latency(site);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                r.chat(site, request, notify)
            }
        };
        if let Some(b) = &self.budget {
            match &answered {
                Ok(r) => b.spend(&site.model, r.usage),
                Err(ProviderError::Infrastructure { usage, .. }) => b.spend(&site.model, *usage),
                Err(_) => {}
            }
        }
        let response = answered?;
        if let Some(rec) = &self.recorder
            && let Err(e) = rec.record(site, request, &response)
        {
            notify(&format!("cannot write recording: {e}"));
        }
        Ok(response)
    }
}
