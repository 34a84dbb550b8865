//! The HTTP server behind `--metrics-addr`: `GET /metrics` and `GET /healthz`, HTTP/1.1 through
//! hyper, one task per connection, stopped by the run's token (so tests stop it without signals).
//!
//! `/healthz` answers `200 ok` while every Kafka client of the run has a broker connection up,
//! and `503` with a one-line reason (still connecting, brokers unreachable, credentials refused)
//! otherwise. It owns no counts: [`super::metrics`] renders them at each scrape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::health;
use super::metrics::{self, Sources};
use crate::error::ConfigError;

/// What the handlers read.
struct State {
    registry: Registry,
    sources: Sources,
    /// Set once the first broker contact succeeded and the loops were started.
    ready: AtomicBool,
}

/// A running metrics server.
pub struct Server {
    state: Arc<State>,
    /// The address it listens on (the port chosen by the OS for `:0`).
    pub local_addr: SocketAddr,
}

impl Server {
    /// Binds `addr` and serves until `stop` is cancelled. A busy or forbidden address is a
    /// configuration error naming the flag.
    pub async fn start(
        addr: SocketAddr,
        sources: Sources,
        stop: CancellationToken,
    ) -> Result<Server, ConfigError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ConfigError::Invalid {
                flag: "--metrics-addr",
                reason: format!("cannot listen on {addr}: {e}"),
            })?;
        let local_addr = listener.local_addr().unwrap_or(addr);
        let state = Arc::new(State {
            registry: metrics::registry(sources.clone()),
            sources,
            ready: AtomicBool::new(false),
        });
        info!(addr = %local_addr, "serving /metrics and /healthz");
        tokio::spawn(sample_rates(state.sources.clone(), stop.clone()));
        tokio::spawn(accept(listener, state.clone(), stop));
        Ok(Server { state, local_addr })
    }

    /// The brokers answered and the loops run: `/healthz` now reflects the clients.
    pub fn set_ready(&self) {
        self.state.ready.store(true, Ordering::SeqCst);
    }
}

async fn sample_rates(sources: Sources, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let (acked, consumed) = sources.counts();
                sources.rates.lock().expect("poisoned").sample(Instant::now(), acked, consumed);
            }
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {},
                r = conn => if let Err(e) = r { debug!(error = %e, "metrics: connection ended"); },
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn respond(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(&state.registry),
        ),
        "/healthz" => {
            let clients = state.sources.clients();
            match health::verdict(&clients, state.ready.load(Ordering::SeqCst), Instant::now()) {
                Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    format!("{}\n", one_line(&why)),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

/// librdkafka's reasons can span lines; a health answer is one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
