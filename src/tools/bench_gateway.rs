//! `pipe bench gateway`: what the model gateway adds to one model call. A local endpoint on
//! 127.0.0.1 answers a fixed completion at once; the same request (a CLI's: a 4 KiB prompt,
//! tools, streamed) goes to it directly over TCP, through a build's gateway over its unix
//! socket, and through the relay a sandbox runs in front of that socket (`relay.py`, on a
//! loopback port), each on a kept-alive connection as CLIs hold them. The calls are
//! interleaved, so a noisy machine slows all three alike; the report gives medians, what the
//! gateway adds and the ratios.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::base::names::SafeName;
use crate::base::stats::median;
use crate::config::{GatewayLimits, ProviderConfig, ProviderKind};
use crate::gateway::{Gateway, Spec};
use crate::provider::{AnyProvider, Providers, openai::OpenAiProvider};
use crate::vocab::Sampling;

/// Calls made on each path before timing.
const WARMUP: usize = 50;

/// The endpoint's answer: a completion of about 2 KiB with usage.
fn answer() -> Bytes {
    Bytes::from(
        json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
            "choices": [{ "index": 0, "finish_reason": "stop",
                "message": { "role": "assistant", "content": "x".repeat(2048) } }],
            "usage": { "prompt_tokens": 1200, "completion_tokens": 500 },
        })
        .to_string(),
    )
}

/// A CLI's request: system and user text, a tool, streamed.
fn request_body() -> Bytes {
    Bytes::from(
        json!({
            "model": "bench", "stream": true, "stream_options": { "include_usage": true },
            "messages": [
                { "role": "system", "content": "You are a coding agent." },
                { "role": "user", "content": "y".repeat(4096) },
            ],
            "tools": [{ "type": "function", "function": { "name": "write_file",
                "parameters": { "type": "object", "properties": { "path": { "type": "string" } } } } }],
        })
        .to_string(),
    )
}

async fn endpoint(listener: tokio::net::TcpListener) {
    let body = answer();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .expect("a static response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A kept-alive HTTP/1 connection over `io`.
async fn connect<I>(io: I) -> Result<Sender, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One call, its whole answer read; its time in microseconds.
async fn call(sender: &mut Sender, token: &str, body: &Bytes) -> Result<f64, String> {
    let req = Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let us = t.elapsed().as_secs_f64() * 1e6;
    if !status.is_success() || bytes.to_bytes().is_empty() {
        return Err(format!("the call was answered {status}"));
    }
    Ok(us)
}

fn providers(base_url: String) -> Providers {
    let config = ProviderConfig {
        name: "bench".into(),
        kind: ProviderKind::OpenAi {
            base_url,
            api_key_env: None,
            timeout_secs: 30,
            max_retries: 0,
            retry_base_ms: 100,
            retry_max_ms: 1000,
            outage_secs: 0,
            headers: std::collections::BTreeMap::new(),
        },
        max_concurrency: 4,
    };
    Providers {
        by_name: [(
            "bench".to_string(),
            AnyProvider::OpenAi(Box::new(OpenAiProvider::new(&config))),
        )]
        .into(),
        recorder: None,
        budget: None,
    }
}

pub async fn gateway(calls: usize) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(endpoint(listener));
    let providers = providers(format!("http://{addr}/v1"));
    let name = |n: &str| SafeName::new(n).map_err(|e| e.to_string());
    let gw = Gateway::open(Spec {
        provider: "bench".into(),
        model: "bench/model".into(),
        sampling: Sampling::default(),
        price: None,
        stage: name("build")?,
        model_id: name("bench")?,
        subject: "1".into(),
        limits: GatewayLimits {
            max_requests: u32::MAX,
            ..GatewayLimits::default()
        },
    })
    .map_err(|e| e.to_string())?;
    let quiet = |_: &str| {};
    let relay_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let measure = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut direct = connect(tcp).await?;
        let unix = tokio::net::UnixStream::connect(gw.socket())
            .await
            .map_err(|e| e.to_string())?;
        let mut through = connect(unix).await?;
        let relay_port = start_relay(&relay_dir, &gw.socket()).await?;
        let relayed = tokio::net::TcpStream::connect(("127.0.0.1", relay_port))
            .await
            .map_err(|e| e.to_string())?;
        relayed.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut relayed = connect(relayed).await?;
        let body = request_body();
        let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for i in 0..WARMUP + calls {
            let d = call(&mut direct, "none", &body).await?;
            let g = call(&mut through, gw.token(), &body).await?;
            let r = call(&mut relayed, gw.token(), &body).await?;
            if i >= WARMUP {
                times[0].push(d);
                times[1].push(g);
                times[2].push(r);
            }
        }
        Ok::<_, String>(times)
    };
    let times = tokio::select! {
        t = measure => t?,
        never = gw.serve(&providers, &quiet) => match never {},
    };
    Ok(report(calls, &times))
}

/// Starts the sandbox's relay in front of `socket` (as a build's script does); its port.
async fn start_relay(dir: &tempfile::TempDir, socket: &std::path::Path) -> Result<u16, String> {
    let script = dir.path().join("relay.py");
    let port_file = dir.path().join("port");
    std::fs::write(&script, crate::gateway::RELAY_PY).map_err(|e| e.to_string())?;
    let child = tokio::process::Command::new("python3")
        .arg("-I")
        .arg(&script)
        .arg(socket)
        .arg(&port_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the relay with python3: {e}"))?;
    // The child lives as long as the process (the bench ends with it).
    std::mem::forget(child);
    for _ in 0..200 {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && let Ok(port) = p.trim().parse()
        {
            return Ok(port);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err("the relay did not start within 5 s".into())
}

fn report(calls: usize, times: &[Vec<f64>; 3]) -> String {
    let (d, g, r) = (
        median(&times[0]).unwrap_or(0.0),
        median(&times[1]).unwrap_or(0.0),
        median(&times[2]).unwrap_or(0.0),
    );
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "model gateway, {calls} calls each, interleaved, after {WARMUP} warm-up calls"
    );
    let _ = writeln!(
        o,
        "  direct (TCP to the endpoint)      median {d:8.1} us   mean {:8.1} us",
        mean(&times[0])
    );
    let _ = writeln!(
        o,
        "  through the gateway (unix socket) median {g:8.1} us   mean {:8.1} us",
        mean(&times[1])
    );
    let _ = writeln!(
        o,
        "  through the sandbox's relay       median {r:8.1} us   mean {:8.1} us",
        mean(&times[2])
    );
    let _ = writeln!(
        o,
        "  added per call (median): gateway {:.1} us, gateway and relay {:.1} us; ratios to direct {:.2} and {:.2}",
        g - d,
        r - d,
        g / d,
        r / d
    );
    o
}
