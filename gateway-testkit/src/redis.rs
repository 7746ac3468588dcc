//! A real `redis-server` on a free loopback port, started by the test and killed on drop.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `redis-server` package installs the binary (`.ci/run` installs it).
pub const REDIS_BIN: &str = "/usr/bin/redis-server";

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn pong(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts a server; panics with a message naming the missing binary when Redis is not installed.
    pub fn start() -> Self {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
        };
        s.spawn();
        s
    }

    /// A server object for a free port with nothing listening yet (call [`Self::spawn`] later).
    pub fn not_started() -> Self {
        RedisServer {
            child: None,
            port: free_port(),
        }
    }

    /// (Re)starts the server on the same port.
    pub fn spawn(&mut self) {
        assert!(
            std::path::Path::new(REDIS_BIN).exists(),
            "these tests need a real Redis: {REDIS_BIN} is missing (apt-get install redis-server)"
        );
        let child = Command::new(REDIS_BIN)
            .args(server_args(self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {REDIS_BIN}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pong(self.port) {
            assert!(
                Instant::now() < deadline,
                "{REDIS_BIN} did not answer PING on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (the port stays reserved for [`Self::spawn`]).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Sends one inline command and returns the raw reply (for assertions on keys).
    pub fn command(&self, cmd: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = s.write_all(format!("{cmd}\r\n").as_bytes());
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where Debian's `redis-tools` (a dependency of `redis-server`) installs the CLI.
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Runs `redis-cli -p <port> <args>` against 127.0.0.1 and returns its stdout (empty on failure).
/// Bounded: `redis-cli` gives up on a dead port at once.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new(REDIS_CLI)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Starts `redis-server` with `args` (stdout/stderr discarded) and waits until it answers PING
/// on `port` (10 s at most).
pub fn spawn_server(port: u16, args: &[String]) -> Child {
    assert!(
        std::path::Path::new(REDIS_BIN).exists(),
        "these tests need a real Redis: {REDIS_BIN} is missing (apt-get install redis-server)"
    );
    let child = Command::new(REDIS_BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {REDIS_BIN}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pong(port) {
        assert!(
            Instant::now() < deadline,
            "{REDIS_BIN} did not answer PING on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The arguments of a throw-away test server on `port`: loopback only, no persistence.
pub(crate) fn server_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
