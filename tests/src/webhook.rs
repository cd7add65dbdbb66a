//! A webhook receiver for tests: records every accepted JSON body, answers the first requests
//! with scripted status codes and 200 after that. A 200 answer carries `{"errcode": 0,
//! "errmsg": "ok"}`, so the receiver also stands in for a WeCom or DingTalk group robot (post to
//! `/hook?key=…` or `/hook?access_token=…`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Recorded {
    script: VecDeque<u16>,
    requests: usize,
    bodies: Vec<serde_json::Value>,
    /// When each recorded body arrived (milliseconds since the Unix epoch).
    arrived_ms: Vec<i64>,
    /// How long to wait before answering (the body is recorded at once): a slow receiver.
    answer_after: std::time::Duration,
    /// Answers 500 to every request within this long of the first one: an outage by the clock.
    down_for: Option<(std::time::Duration, Option<std::time::Instant>)>,
}

/// A running receiver at `http://127.0.0.1:<port>/hook`; stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers the first requests with `script` (then 200). Bodies of
    /// requests answered with 2xx are recorded.
    pub async fn start(script: Vec<u16>) -> WebhookReceiver {
        WebhookReceiver::start_on(0, script).await
    }

    /// A receiver that records each body on arrival but answers 200 only after `delay`: a sender
    /// that dies meanwhile never learns it was received.
    pub async fn start_slow(delay: std::time::Duration) -> WebhookReceiver {
        let receiver = WebhookReceiver::start_on(0, Vec::new()).await;
        receiver.lock().answer_after = delay;
        receiver
    }

    /// A receiver that answers 500 to every request within `down_for` of the first one, then
    /// 200: an outage by the clock, however often it is asked meanwhile.
    pub async fn start_down_for(down_for: std::time::Duration) -> WebhookReceiver {
        let receiver = WebhookReceiver::start_on(0, Vec::new()).await;
        receiver.lock().down_for = Some((down_for, None));
        receiver
    }

    /// Like [`WebhookReceiver::start`], on a given port (0: any).
    pub async fn start_on(port: u16, script: Vec<u16>) -> WebhookReceiver {
        let recorded = Arc::new(Mutex::new(Recorded { script: script.into(), ..Recorded::default() }));
        let app = Router::new().route("/hook", post(receive)).with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("webhook receiver");
        });
        WebhookReceiver { addr, recorded, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The port it listens on (for configs that write the URL themselves).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request that arrived, accepted or not.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Bodies of the accepted requests, in arrival order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.lock().bodies.clone()
    }

    /// Bodies of the accepted requests with the time each arrived (ms since the Unix epoch).
    pub fn bodies_with_arrival(&self) -> Vec<(serde_json::Value, i64)> {
        let recorded = self.lock();
        recorded.bodies.iter().cloned().zip(recorded.arrived_ms.iter().copied()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(recorded): State<Arc<Mutex<Recorded>>>, Json(body): Json<serde_json::Value>) -> (StatusCode, Json<serde_json::Value>) {
    let (status, delay) = {
        let mut recorded = recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recorded.requests += 1;
        let down = match &mut recorded.down_for {
            Some((lasting, first)) => first.get_or_insert_with(std::time::Instant::now).elapsed() < *lasting,
            None => false,
        };
        let status = if down { 500 } else { recorded.script.pop_front().unwrap_or(200) };
        if (200..300).contains(&status) {
            recorded.bodies.push(body);
            recorded.arrived_ms.push(now_ms());
        }
        (status, recorded.answer_after)
    };
    tokio::time::sleep(delay).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let answer = if status.is_success() { serde_json::json!({"errcode": 0, "errmsg": "ok"}) } else { serde_json::json!({"errcode": -1, "errmsg": "refused"}) };
    (status, Json(answer))
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
