//! A real `redis-server` child process on a free loopback port, killed on drop.
//!
//! The binary comes from `REDIS_SERVER_BIN`, else `redis-server` on `PATH`; if neither exists
//! the test fails and says how to install it (tests never pass by skipping).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::{free_port, ScratchDir};

pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    binary: PathBuf,
    child: Option<Child>,
    paused: bool,
    directory: ScratchDir,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> RedisServer {
        RedisServer::start_on_some_free_port(None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_on_some_free_port(Some(password.to_owned()))
    }

    /// Another process may grab the "free" port between our probe and Redis binding it, so a
    /// failed start is retried on a fresh port a few times.
    fn start_on_some_free_port(password: Option<String>) -> RedisServer {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut server = RedisServer::stopped(password.clone());
            match server.try_restart() {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    /// Reserves a port and a directory but does not start the server yet.
    pub fn stopped(password: Option<String>) -> RedisServer {
        RedisServer {
            port: free_port(),
            password,
            binary: redis_server_binary(),
            child: None,
            paused: false,
            directory: ScratchDir::new("redis"),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.directory.0.join("redis.log")
    }

    /// The server's log, for panic messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_else(|error| format!("(no log: {error})"))
    }

    /// (Re)starts the server on its port and waits until it answers PING.
    pub fn restart(&mut self) {
        if let Err(failure) = self.try_restart() {
            panic!("{failure}");
        }
    }

    fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is already running");
        let port = self.port.to_string();
        let log_path = self.log_path();
        let mut command = Command::new(&self.binary);
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.directory.0)
            .arg("--logfile")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);
        self.wait_until_up()
    }

    fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server on port {} exited with {status} while starting; its log:\n{}",
                        self.port,
                        self.log()
                    ));
                }
            }
            if let Ok(reply) = self.try_command(&["PING"]) {
                if reply == "PONG" || reply.starts_with("NOAUTH") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING within 10 s; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server disappears without closing anything politely.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                self.signal_child(&child, Signal::CONT);
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets open but answers nothing.
    pub fn pause(&mut self) {
        let child = self.child.as_ref().expect("redis-server is not running");
        self.signal_child(child, Signal::STOP);
        self.paused = true;
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&mut self) {
        let child = self.child.as_ref().expect("redis-server is not running");
        self.signal_child(child, Signal::CONT);
        self.paused = false;
    }

    fn signal_child(&self, child: &Child, signal: Signal) {
        let pid = Pid::from_child(child);
        kill_process(pid, signal)
            .unwrap_or_else(|error| panic!("kill({pid:?}, {signal:?}) failed: {error}"));
    }

    /// Runs one command (authenticating first when the server has a password) and returns the
    /// reply as text; panics with the server log when Redis cannot be reached.
    pub fn command(&self, arguments: &[&str]) -> String {
        self.try_command(arguments).unwrap_or_else(|error| {
            panic!(
                "redis command {arguments:?} failed: {error}; redis log:\n{}",
                self.log()
            )
        })
    }

    fn try_command(&self, arguments: &[&str]) -> std::io::Result<String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(password) = &self.password {
            writer.write_all(&encode(&["AUTH", password]))?;
            read_reply(&mut reader)?;
        }
        writer.write_all(&encode(arguments))?;
        read_reply(&mut reader)
    }

    /// Redis's count of commands it has executed, to prove a request did not reach it.
    pub fn commands_processed(&self) -> u64 {
        let info = self.command(&["INFO", "stats"]);
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_commands_processed in INFO: {info}"))
    }

    /// How often Redis ran `command` (lower case, `script|load` for a subcommand) and how many
    /// of those calls failed, from `INFO commandstats`; (0, 0) for a command it never ran.
    pub fn command_calls(&self, command: &str) -> (u64, u64) {
        let info = self.command(&["INFO", "commandstats"]);
        let Some(stats) = info
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:")))
        else {
            return (0, 0);
        };
        let field = |name: &str| {
            stats
                .split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
        };
        (field("calls"), field("failed_calls"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REDIS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "REDIS_SERVER_BIN={} is not a file; point it at a redis-server binary",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "redis-server not found: these tests need a real Redis. Install it \
             (`apt-get install redis-server`), or set REDIS_SERVER_BIN to a redis-server binary, \
             or run `cargo xtask ci`, which provides the pinned one"
        )
    })
}

fn encode(arguments: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", arguments.len()).into_bytes();
    for argument in arguments {
        out.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        out.extend_from_slice(argument.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP reply; arrays become their elements joined by newlines.
fn read_reply(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | "-" | ":" => Ok(rest.to_owned()),
        "$" => {
            let length: i64 = rest.parse().map_err(std::io::Error::other)?;
            if length < 0 {
                return Ok("(nil)".to_owned());
            }
            let mut data = vec![0_u8; usize::try_from(length).map_err(std::io::Error::other)? + 2];
            reader.read_exact(&mut data)?;
            data.truncate(data.len() - 2);
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        "*" => {
            let count: i64 = rest.parse().map_err(std::io::Error::other)?;
            let mut items = Vec::new();
            for _ in 0..count.max(0) {
                items.push(read_reply(reader)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(std::io::Error::other(format!("unexpected reply {line:?}"))),
    }
}
