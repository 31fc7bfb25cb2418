//! Webhook receivers: real HTTP servers whose answers follow a script, and a clock the
//! tests move forward so retry schedules run without waiting hours.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use wharf_core::ports::Clock;

#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> String {
        self.headers[name].to_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    hits: Vec<Hit>,
    started: usize,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

async fn handle(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let answer = {
        let mut inner = r.inner.lock().unwrap();
        inner.started += 1;
        inner.script.pop_front().unwrap_or(Answer::Status(200))
    };
    if let Answer::Hang = answer {
        // A hanging endpoint: time itself is what the sender's timeout is tested against.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    r.inner.lock().unwrap().hits.push(Hit { headers, body });
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::RetryAfter(code, secs) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Answer::Hang => StatusCode::OK.into_response(),
    }
}

impl Receiver {
    pub async fn start(script: Vec<Answer>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into(),
            ..Inner::default()
        }));
        let receiver = Receiver { inner, url };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// Requests answered so far (a hanging one is not answered).
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// Requests received so far, answered or not.
    pub fn started(&self) -> usize {
        self.inner.lock().unwrap().started
    }
}

/// Verifies a delivery with the independent `standardwebhooks` implementation: the
/// signature of (webhook-id, webhook-timestamp, body) under `secret` is among those sent.
pub fn signed_with(hit: &Hit, secret: &str) -> bool {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let id = hit.header("webhook-id");
    let ts: i64 = hit.header("webhook-timestamp").parse().unwrap();
    let expected = wh.sign(&id, ts, &hit.body).unwrap();
    hit.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

/// A clock tests move forward.
pub struct TestClock(Mutex<OffsetDateTime>);

impl TestClock {
    pub fn new() -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(OffsetDateTime::now_utc())))
    }
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += by;
    }
    pub fn set(&self, to: OffsetDateTime) {
        *self.0.lock().unwrap() = to;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// Waits until `check` holds, polling; fails the test after a generous bound.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // A minute: the aws shape on its emulator is slower than the local shape, never wrong.
    for _ in 0..1200 {
        if check().await {
            return;
        }
        // The one poll interval of the tests that wait on another task or process.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A minimal SMTP server that accepts every message and keeps it.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = SmtpSink {
            port: listener.local_addr().unwrap().port(),
            messages: Arc::default(),
        };
        let messages = sink.messages.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let messages = messages.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink ready\r\n").await.unwrap();
                    let mut data: Option<String> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(body) = data.as_mut() {
                            if line == "." {
                                messages.lock().unwrap().push(std::mem::take(body));
                                data = None;
                                write.write_all(b"250 queued\r\n").await.unwrap();
                            } else {
                                body.push_str(&line);
                                body.push('\n');
                            }
                            continue;
                        }
                        let verb = line
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase();
                        let answer: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 sink\r\n",
                            "DATA" => {
                                data = Some(String::new());
                                b"354 end with .\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await.unwrap();
                                return;
                            }
                            _ => b"250 ok\r\n",
                        };
                        write.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        sink
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}
