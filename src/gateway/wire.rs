//! The gateway's side of the chat-completions API: a CLI's request body read into pipe's
//! [`ChatRequest`], and pipe's [`ChatResponse`] written back as a `chat.completion` or, when the
//! CLI streams, as the `chat.completion.chunk` events of a server-sent-event stream.
//!
//! The body comes from code running in the sandbox, so it is read strictly: a size cap before
//! parsing (the server's), text-only content, a bounded number of messages and tools. What the
//! model sees is the round's: the endpoint model and the sampling are the model's own in the
//! pipeline; the model name and temperature the CLI asks for are not used.

use serde_json::{Map, Value, json};

use crate::provider::{ChatRequest, ChatResponse, Message, ToolCall};
use crate::vocab::{Sampling, Usage};

/// Messages one request may carry.
pub const MAX_MESSAGES: usize = 4096;
/// Tool definitions one request may carry.
pub const MAX_TOOLS: usize = 256;

/// A CLI's request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub request: ChatRequest,
    /// Answer as a server-sent-event stream.
    pub stream: bool,
    /// A streamed answer ends with a chunk carrying the usage (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The model name the CLI asked for, echoed in the answer.
    pub asked_model: String,
}

/// Reads a request body. `model` and `sampling` are the round's; a `max_tokens` of the CLI's is
/// used only when the round sets none. The error is a message for the CLI (a 400).
pub fn read_request(body: &[u8], model: &str, sampling: &Sampling) -> Result<Incoming, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the body is not a JSON object")?;
    let raw_messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is missing or not an array")?;
    if raw_messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    if raw_messages.len() > MAX_MESSAGES {
        return Err(format!(
            "{} messages, over the gateway's limit of {MAX_MESSAGES}",
            raw_messages.len()
        ));
    }
    let messages = raw_messages
        .iter()
        .enumerate()
        .map(|(i, m)| read_message(m).map_err(|e| format!("messages[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(n) = obj.get("n").and_then(Value::as_u64)
        && n != 1
    {
        return Err(format!("`n` is {n}: the gateway answers one choice"));
    }
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) if t.len() > MAX_TOOLS => {
            return Err(format!(
                "{} tools, over the gateway's limit of {MAX_TOOLS}",
                t.len()
            ));
        }
        Some(Value::Array(t)) => {
            if let Some(i) = t.iter().position(|d| !d.is_object()) {
                return Err(format!("tools[{i}] is not an object"));
            }
            t.clone()
        }
        Some(_) => return Err("`tools` is not an array".into()),
    };
    let tool_choice = obj
        .get("tool_choice")
        .filter(|c| !c.is_null() && !tools.is_empty())
        .cloned();
    let json_schema = obj
        .get("response_format")
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("json_schema"))
        .and_then(|f| f.pointer("/json_schema/schema"))
        .cloned();
    let mut sampling = sampling.clone();
    if sampling.max_tokens.is_none() {
        sampling.max_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_u64))
            .and_then(|n| u32::try_from(n).ok());
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Incoming {
        request: ChatRequest {
            model: model.to_string(),
            messages,
            sampling,
            json_schema,
            tools,
            tool_choice,
        },
        stream,
        include_usage,
        asked_model: obj
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .chars()
            .take(200)
            .collect(),
    })
}

fn read_message(m: &Value) -> Result<Message, String> {
    let obj = m.as_object().ok_or("not an object")?;
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("developer" | "system") => "system",
        Some(r @ ("user" | "assistant" | "tool")) => r,
        Some(other) => {
            return Err(format!(
                "role `{}` is not one the gateway passes on",
                other.chars().take(40).collect::<String>()
            ));
        }
        None => return Err("`role` is missing".into()),
    };
    let content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => text_parts(parts)?,
        Some(_) => return Err("`content` is neither text nor a list of parts".into()),
    };
    let mut message = Message {
        role: role.to_string(),
        content,
        tool_calls: None,
        tool_call_id: None,
    };
    if role == "assistant"
        && let Some(calls) = obj.get("tool_calls").filter(|c| !c.is_null())
    {
        let calls = calls.as_array().ok_or("`tool_calls` is not an array")?;
        let calls = calls
            .iter()
            .enumerate()
            .map(|(i, c)| read_call(c).map_err(|e| format!("tool_calls[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        message.tool_calls = (!calls.is_empty()).then_some(calls);
    }
    if role == "tool" {
        let id = obj
            .get("tool_call_id")
            .and_then(Value::as_str)
            .ok_or("a tool message needs `tool_call_id`")?;
        message.tool_call_id = Some(id.to_string());
    }
    Ok(message)
}

/// The text of a content given as parts; any other kind of part (an image, audio, a file) is
/// refused: the gateway passes text only.
fn text_parts(parts: &[Value]) -> Result<String, String> {
    let mut texts = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        match (
            p.get("type").and_then(Value::as_str),
            p.get("text").and_then(Value::as_str),
        ) {
            (Some("text" | "input_text"), Some(t)) => texts.push(t),
            (kind, _) => {
                return Err(format!(
                    "content[{i}] is a `{}` part: the gateway passes text only",
                    kind.unwrap_or("untyped")
                        .chars()
                        .take(40)
                        .collect::<String>()
                ));
            }
        }
    }
    Ok(texts.join("\n"))
}

fn read_call(c: &Value) -> Result<ToolCall, String> {
    let id = c
        .get("id")
        .and_then(Value::as_str)
        .ok_or("`id` is missing")?;
    let f = c.get("function").ok_or("`function` is missing")?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or("`function.name` is missing")?;
    let arguments = match f.get("arguments") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(ToolCall::new(id, name, arguments))
}

/// `usage` as chat-completions spells it.
fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": { "cached_tokens": u.cache_read_tokens },
    })
}

fn calls_json(calls: &[ToolCall], indexed: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut o = Map::new();
                if indexed {
                    o.insert("index".into(), json!(i));
                }
                o.insert("id".into(), json!(c.id));
                o.insert("type".into(), json!("function"));
                o.insert(
                    "function".into(),
                    json!({ "name": c.function.name, "arguments": c.function.arguments }),
                );
                Value::Object(o)
            })
            .collect(),
    )
}

/// Why the answer stopped: the endpoint's word, else `tool_calls` or `stop`.
fn finish_reason(r: &ChatResponse) -> String {
    r.finish_reason.clone().unwrap_or_else(|| {
        if r.tool_calls.is_empty() {
            "stop".into()
        } else {
            "tool_calls".into()
        }
    })
}

/// A whole `chat.completion`.
pub fn completion(id: &str, created: u64, model: &str, r: &ChatResponse) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if r.content.is_empty() && !r.tool_calls.is_empty() {
            Value::Null
        } else {
            json!(r.content)
        },
    );
    if !r.tool_calls.is_empty() {
        message.insert("tool_calls".into(), calls_json(&r.tool_calls, false));
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "finish_reason": finish_reason(r),
        }],
        "usage": usage_json(r.usage),
    })
}

/// The answer as a server-sent-event stream: the role and text in one chunk, the tool calls
/// in the next, the finish reason, the usage when asked for, then `[DONE]`. The endpoint was
/// called whole (so it could be retried, metered and recorded); the CLI reads it as a stream.
pub fn stream(id: &str, created: u64, model: &str, r: &ChatResponse, usage: bool) -> Vec<u8> {
    let chunk = |choices: Value, extra: Option<(&str, Value)>| {
        let mut o = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        });
        if let Some((k, v)) = extra {
            o[k] = v;
        }
        o
    };
    let mut events = vec![chunk(
        json!([{ "index": 0, "delta": { "role": "assistant", "content": r.content }, "finish_reason": null }]),
        None,
    )];
    if !r.tool_calls.is_empty() {
        events.push(chunk(
            json!([{ "index": 0, "delta": { "tool_calls": calls_json(&r.tool_calls, true) }, "finish_reason": null }]),
            None,
        ));
    }
    events.push(chunk(
        json!([{ "index": 0, "delta": {}, "finish_reason": finish_reason(r) }]),
        None,
    ));
    if usage {
        events.push(chunk(json!([]), Some(("usage", usage_json(r.usage)))));
    }
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(e.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// An error body as the OpenAI-compatible APIs write one.
pub fn error(message: &str, kind: &str) -> Value {
    json!({ "error": { "message": message, "type": kind, "code": kind } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling() -> Sampling {
        Sampling {
            temperature: Some(0.0),
            seed: None,
            max_tokens: None,
        }
    }

    #[test]
    fn a_cli_request_becomes_the_rounds_request() {
        let body = json!({
            "model": "whatever-the-cli-says",
            "temperature": 0.9,
            "max_tokens": 4000,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "write_file", "arguments": "{\"path\":\"x\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "write_file"}}],
            "tool_choice": "auto"
        });
        let got = read_request(body.to_string().as_bytes(), "vendor/model", &sampling()).unwrap();
        assert!(got.stream && got.include_usage);
        assert_eq!(got.asked_model, "whatever-the-cli-says");
        let r = &got.request;
        assert_eq!(r.model, "vendor/model");
        assert_eq!(r.sampling.temperature, Some(0.0));
        assert_eq!(r.sampling.max_tokens, Some(4000));
        assert_eq!(r.messages[0], Message::system("be brief"));
        assert_eq!(r.messages[1].content, "a\nb");
        assert_eq!(
            r.messages[2].tool_calls.as_deref(),
            Some(&[ToolCall::new("c1", "write_file", "{\"path\":\"x\"}")][..])
        );
        assert_eq!(r.messages[3], Message::tool("c1", "ok"));
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tool_choice, Some(json!("auto")));
    }

    #[test]
    fn what_the_gateway_does_not_pass_is_refused_by_name() {
        let bad = [
            (json!([]), "not a JSON object"),
            (json!({"messages": []}), "`messages` is empty"),
            (json!({}), "`messages` is missing"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "messages[0]: content[0] is a `image_url` part",
            ),
            (
                json!({"messages": [{"role": "function", "content": "x"}]}),
                "role `function`",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "needs `tool_call_id`",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 3}),
                "`n` is 3",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [1]}),
                "tools[0] is not an object",
            ),
        ];
        for (body, want) in bad {
            let e = read_request(body.to_string().as_bytes(), "m", &sampling()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert!(
            read_request(b"{not json", "m", &sampling())
                .unwrap_err()
                .contains("not JSON")
        );
    }

    fn answer(calls: bool) -> ChatResponse {
        ChatResponse {
            content: if calls { String::new() } else { "done".into() },
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 2,
            },
            latency_ms: 1,
            attempts: 1,
            tool_calls: if calls {
                vec![ToolCall::new("call_1", "write_file", "{\"path\":\"a.py\"}")]
            } else {
                Vec::new()
            },
            finish_reason: None,
            throttled_ms: 0,
        }
    }

    #[test]
    fn a_whole_answer_reads_as_a_completion() {
        let c = completion("chatcmpl-1", 7, "m", &answer(true));
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "write_file"
        );
        assert_eq!(c["usage"]["total_tokens"], 15);
        assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
        let plain = completion("chatcmpl-1", 7, "m", &answer(false));
        assert_eq!(plain["choices"][0]["message"]["content"], "done");
        assert_eq!(plain["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn a_streamed_answer_is_chunks_then_done() {
        let bytes = stream("chatcmpl-1", 7, "m", &answer(true), true);
        let text = String::from_utf8(bytes).unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").unwrap())
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"],
            0
        );
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[3]["usage"]["completion_tokens"], 5);
        assert_eq!(chunks[3]["choices"], json!([]));
        let no_usage = String::from_utf8(stream("i", 7, "m", &answer(false), false)).unwrap();
        assert_eq!(no_usage.matches("data: ").count(), 3);
    }
}
