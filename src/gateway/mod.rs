//! The model gateway: the only way out of a command build's sandbox.
//!
//! While an agent CLI builds, pipe serves an OpenAI-compatible endpoint to that build alone, on a
//! unix socket in a directory of its own that the sandbox binds in. Inside, a relay
//! ([`RELAY_PY`]) listens on a loopback port of the sandbox's own network namespace and passes
//! each connection to the socket, so the CLI sees a plain base URL; the sandbox has no other
//! network. The gateway holds nothing the CLI could carry out: requests must present the build's
//! token (random, made for this build, worthless outside it), and are answered through the round's
//! provider, whose key stays in pipe's environment.
//!
//! Each request is read into pipe's own [`ChatRequest`](crate::provider::ChatRequest) (the
//! round's endpoint model and sampling), sent through [`Providers::chat`] (retries, concurrency,
//! the round's spending caps, recording or replay, exactly as an agent build's calls), metered
//! from the answer's usage, and written back whole, or as a server-sent-event stream when the CLI
//! streams. Calls go up one at a time, in the order they arrive, so a recording's turns are the
//! CLI's requests in order and a replay answers them in the same order. The build's limits
//! ([`GatewayLimits`]) are checked before each call.
//!
//! Routes: `POST /v1/chat/completions` (or `/chat/completions`), `GET /v1/models` (or `/models`:
//! the one model). Anything else is a 404; a missing or wrong token a 401; a body over
//! [`MAX_BODY_BYTES`] a 413; a malformed one a 400; a request past a limit a 400 of type
//! `budget_exceeded`, which CLIs do not retry.

pub mod meter;
pub mod wire;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::UnixListener;

use crate::base::names::SafeName;
use crate::config::GatewayLimits;
use crate::provider::{CallSite, ChatResponse, ProviderError, Providers};
use crate::vocab::{Price, Sampling, Usage};
use meter::Meter;
pub use meter::Report;

/// The socket's file name in the gateway's directory.
pub const SOCKET: &str = "gw.sock";
/// The in-sandbox relay from a loopback port to the socket: `python3 -I relay.py SOCKET PORTFILE`.
pub const RELAY_PY: &str = include_str!("relay.py");
/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Connections served at once; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 64;

/// What one build's gateway serves.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The provider the model's calls go through, and the endpoint's name for the model.
    pub provider: String,
    pub model: String,
    pub sampling: Sampling,
    pub price: Option<Price>,
    /// Where the calls belong in the round (recordings): the build stage, the model, the subject.
    pub stage: SafeName,
    pub model_id: SafeName,
    pub subject: String,
    pub limits: GatewayLimits,
}

/// Why the gateway's build must not count as the model's result: the node fails (or is
/// skipped, for the round's spending cap) as an agent build's would.
#[derive(Debug)]
pub enum Stop {
    /// The endpoint failed after its retries: the build faulted.
    Fault(String),
    /// The round's or the model's spending cap is reached.
    Budget(String),
    /// The setup is wrong: no recording answers, the endpoint rejects the request.
    Setup(String),
}

/// What the gateway saw, once the build is over.
#[derive(Debug)]
pub struct Finished {
    pub usage: Usage,
    pub report: Report,
    pub stop: Option<Stop>,
}

/// One build's gateway: its directory (holding the socket), its token and its account.
pub struct Gateway {
    dir: tempfile::TempDir,
    listener: UnixListener,
    token: String,
    spec: Spec,
    meter: Mutex<Meter>,
    stop: Mutex<Option<Stop>>,
    /// One call up at a time, in arrival order.
    upstream: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Binds a fresh socket in a new directory, open to the sandbox's user (the token guards it).
    pub fn open(spec: Spec) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("pipe-gateway-").tempdir()?;
        let socket = dir.path().join(SOCKET);
        let listener = UnixListener::bind(&socket)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
        let token = format!(
            "pipe-gw-{:032x}{:016x}",
            rand::random::<u128>(),
            rand::random::<u64>()
        );
        Ok(Self {
            dir,
            listener,
            token,
            meter: Mutex::new(Meter::new(spec.limits, spec.price)),
            spec,
            stop: Mutex::new(None),
            upstream: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory the sandbox binds in; the socket is [`SOCKET`] in it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join(SOCKET)
    }

    /// The build's token: the API key the CLI is given.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Serves until dropped: run it beside the build's sandbox job and drop it when the job ends.
    pub async fn serve(
        &self,
        providers: &Providers,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Infallible {
        let mut connections = FuturesUnordered::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept(), if connections.len() < MAX_CONNECTIONS => {
                    match accepted {
                        Ok((stream, _)) => {
                            let service = hyper::service::service_fn(move |req| async move {
                                Ok::<_, Infallible>(self.handle(req, providers, notify).await)
                            });
                            connections.push(
                                hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service),
                            );
                        }
                        // Out of descriptors, or a connection gone before it was taken: wait.
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    }
                }
                Some(_) = connections.next(), if !connections.is_empty() => {}
            }
        }
    }

    /// The account, once the build is over.
    pub fn finish(self) -> Finished {
        let meter = self
            .meter
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Finished {
            usage: meter.usage,
            report: meter.report,
            stop: self
                .stop
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    fn meter(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.meter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let h = req.headers();
        let presented = h
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
            .or_else(|| h.get("api-key").and_then(|v| v.to_str().ok()));
        presented.is_some_and(|p| same(p.trim().as_bytes(), self.token.as_bytes()))
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        providers: &Providers,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            return error(
                StatusCode::UNAUTHORIZED,
                "the gateway needs this build's token (it is $OPENAI_API_KEY and $PIPE_GATEWAY_TOKEN in the sandbox)",
                "invalid_api_key",
            );
        }
        let path = req.uri().path().trim_end_matches('/').to_string();
        let route = path.strip_prefix("/v1").unwrap_or(&path);
        match (req.method(), route) {
            (&Method::POST, "/chat/completions") => self.chat(req, providers, notify).await,
            (&Method::GET, "/models") => json_response(
                StatusCode::OK,
                &json!({ "object": "list", "data": [{
                    "id": self.spec.model, "object": "model", "created": 0, "owned_by": "pipe"
                }]}),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                "the gateway serves POST /v1/chat/completions and GET /v1/models",
                "not_found",
            ),
        }
    }

    async fn chat(
        &self,
        req: Request<Incoming>,
        providers: &Providers,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Response<Full<Bytes>> {
        let Ok(body) = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        else {
            self.meter().refused();
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the request body is over the gateway's {MAX_BODY_BYTES} bytes, or was cut off"
                ),
                "invalid_request_error",
            );
        };
        let body = body.to_bytes();
        let incoming = match wire::read_request(&body, &self.spec.model, &self.spec.sampling) {
            Ok(i) => i,
            Err(e) => {
                self.meter().refused();
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("pipe gateway: {e}"),
                    "invalid_request_error",
                );
            }
        };
        let _one_at_a_time = self.upstream.lock().await;
        if let Some(stop) = self.stopped() {
            self.meter().refused();
            return error(StatusCode::BAD_GATEWAY, &stop, "upstream_error");
        }
        let turn = match self.meter().admit() {
            Ok(t) => t,
            Err(limit) => return budget(&limit),
        };
        let site = CallSite {
            stage: self.spec.stage.clone(),
            model: self.spec.model_id.clone(),
            subject: self.spec.subject.clone(),
            turn,
        };
        match providers
            .chat(&self.spec.provider, &site, &incoming.request, notify)
            .await
        {
            Ok(r) => {
                self.meter().answered(&r);
                answer(&incoming, turn, &r)
            }
            Err(e) => self.failed(e),
        }
    }

    /// A request the provider could not answer: the CLI gets an error, the build a stop.
    fn failed(&self, e: ProviderError) -> Response<Full<Bytes>> {
        self.meter().refused();
        let (stop, response) = match e {
            ProviderError::Infrastructure { message, usage, .. } => {
                self.meter().spend(usage);
                let r = error(
                    StatusCode::BAD_GATEWAY,
                    &format!("pipe gateway: {message}"),
                    "upstream_error",
                );
                (Stop::Fault(message), r)
            }
            ProviderError::Budget(m) => {
                let r = budget(&m);
                (Stop::Budget(m), r)
            }
            ProviderError::Rejected { message } | ProviderError::Replay(message) => {
                let r = error(
                    StatusCode::BAD_REQUEST,
                    &format!("pipe gateway: {message}"),
                    "invalid_request_error",
                );
                (Stop::Setup(message), r)
            }
        };
        let mut s = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.get_or_insert(stop);
        response
    }

    /// Once the endpoint failed (or the round's cap is spent), later requests fail at once.
    fn stopped(&self) -> Option<String> {
        let s = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.as_ref().map(|s| match s {
            Stop::Fault(m) | Stop::Budget(m) | Stop::Setup(m) => {
                format!("pipe gateway: an earlier request failed: {m}")
            }
        })
    }
}

/// The answer to a CLI's request: whole, or as its stream.
fn answer(incoming: &wire::Incoming, turn: usize, r: &ChatResponse) -> Response<Full<Bytes>> {
    let id = format!("chatcmpl-pipe-{}", turn + 1);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if incoming.stream {
        let body = wire::stream(
            &id,
            created,
            &incoming.asked_model,
            r,
            incoming.include_usage,
        );
        Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "text/event-stream")
            .header(hyper::header::CACHE_CONTROL, "no-cache")
            .body(Full::new(Bytes::from(body)))
            .expect("a static response is well formed")
    } else {
        json_response(
            StatusCode::OK,
            &wire::completion(&id, created, &incoming.asked_model, r),
        )
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("a static response is well formed")
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response<Full<Bytes>> {
    json_response(status, &wire::error(message, kind))
}

/// A request past a limit: a 400, which CLIs report and do not retry.
fn budget(limit: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("pipe gateway: {limit}"),
        "budget_exceeded",
    )
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
