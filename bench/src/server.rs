//! The processes the bench measures (the Wharf server, the bare baseline) and the one-off HTTP
//! calls it makes to them: readiness polls and seeding.
//!
//! Children are spawned with `kill_on_drop`, so an error or Ctrl-C anywhere in the bench still
//! kills them; `stop` is the orderly path (SIGTERM, then SIGKILL if they linger).

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::ChildStdout;
use tokio::time::Instant;

/// A free loopback port. Another process could take it before the child binds it; on a
/// bench machine that race is not worth a retry loop.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

pub struct Child {
    name: String,
    process: tokio::process::Child,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// Where the child listens.
    pub addr: SocketAddr,
    /// Taken just before the spawn: start time is measured from here.
    pub spawned_at: Instant,
}

impl Child {
    /// Spawns `program args…` in `cwd` with `WHARF_LOG=warn`. Stderr is inherited so the
    /// server's warnings stay visible; stdout is kept only when `capture_stdout`.
    pub fn spawn<I, S>(
        program: &Path,
        args: I,
        cwd: &Path,
        addr: SocketAddr,
        capture_stdout: bool,
    ) -> anyhow::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_with_env(program, args, cwd, addr, capture_stdout, &[])
    }

    /// As [`Child::spawn`], with extra environment variables.
    pub fn spawn_with_env<I, S>(
        program: &Path,
        args: I,
        cwd: &Path,
        addr: SocketAddr,
        capture_stdout: bool,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            // A `wharf.toml` in the caller's directory must not change what is measured.
            .current_dir(cwd)
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let mut process = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = process.stdout.take().map(|s| BufReader::new(s).lines());
        Ok(Child {
            name: program.display().to_string(),
            process,
            stdout,
            addr,
            spawned_at,
        })
    }

    /// Polls `GET path` every millisecond until it answers 200; returns the time since spawn.
    pub async fn wait_ready(&mut self, path: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = self.spawned_at + timeout;
        loop {
            if let Ok((StatusCode::OK, _)) = call(self.addr, Method::GET, path, None, None).await {
                return Ok(self.spawned_at.elapsed());
            }
            if let Some(status) = self.process.try_wait()? {
                bail!("{} exited with {status} before it was ready", self.name);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer 200 on {path} within {timeout:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The first stdout line that starts with `prefix`, if the child prints one soon.
    pub async fn stdout_line(&mut self, prefix: &str) -> Option<String> {
        let lines = self.stdout.as_mut()?;
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(1), find)
            .await
            .ok()
            .flatten()
    }

    /// SIGTERM (so the server shuts down as in production and leaves a clean data dir), then
    /// SIGKILL after five seconds.
    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.process.id() {
            // Through kill(1): the workspace forbids `unsafe`, which libc::kill would need.
            let sent = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .is_ok_and(|s| s.success());
            if sent
                && tokio::time::timeout(Duration::from_secs(5), self.process.wait())
                    .await
                    .is_ok()
            {
                return Ok(());
            }
        }
        self.process.kill().await?;
        Ok(())
    }
}

/// One request on a fresh connection; the body is parsed as JSON when it is JSON.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut conn = Connection::open(addr, token.unwrap_or_default()).await?;
    let body = body.map(serde_json::to_vec).transpose()?;
    conn.send(method, path, body).await
}

/// A keep-alive HTTP/1.1 connection carrying one caller's bearer token (none when empty).
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    bearer: Option<HeaderValue>,
}

impl Connection {
    pub async fn open(addr: SocketAddr, token: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // A broken connection fails `send_request`, which is where it is reported.
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
            bearer: (!token.is_empty())
                .then(|| HeaderValue::from_str(&format!("Bearer {token}")))
                .transpose()?,
        })
    }

    /// POSTs a JSON body that is already serialized.
    pub async fn post(&mut self, path: &str, json: Vec<u8>) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::POST, path, Some(json)).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(b) = &self.bearer {
            req = req.header(AUTHORIZATION, b.clone());
        }
        if json.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let payload = Bytes::from(json.unwrap_or_default());
        self.sender.ready().await?;
        let res = self
            .sender
            .send_request(req.body(Full::new(payload))?)
            .await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }
}
