//! The built `webapp` binary as a child process, for what only a real process shows:
//! signals, exit codes, and what it prints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::free_port;

pub struct BinaryApp {
    pub port: u16,
    child: Child,
    output: Arc<Mutex<String>>,
    /// The threads copying stdout and stderr into `output`; they end at the pipes' EOF.
    readers: Vec<JoinHandle<()>>,
}

impl BinaryApp {
    /// Starts `webapp` with `environment` on top of a loopback port; waits until /healthz answers.
    ///
    /// Retries on a fresh port if the probed one was taken before the app could bind it.
    pub fn start(environment: &[(&str, &str)]) -> BinaryApp {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match BinaryApp::try_start(environment) {
                Ok(app) => return app,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("webapp did not start:\n{}", failures.join("\n"));
    }

    fn try_start(environment: &[(&str, &str)]) -> Result<BinaryApp, String> {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_webapp"));
        command
            .env("WEBAPP_BIND", "127.0.0.1")
            .env("WEBAPP_PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the webapp binary");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().expect("output lock");
                    output.push_str(&line);
                    output.push('\n');
                }
            }));
        }
        let mut app = BinaryApp {
            port,
            child,
            output,
            readers,
        };
        app.wait_until_live()?;
        Ok(app)
    }

    fn wait_until_live(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.collect_remaining_output();
                return Err(format!(
                    "webapp exited with {status} while starting; output:\n{}",
                    self.output()
                ));
            }
            if proxy::probe::check(&format!("http://127.0.0.1:{}/healthz", self.port)) == 0 {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "webapp did not answer /healthz within 10 s; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Once the process has exited: waits until the output threads have read its pipes to the
    /// end, so `output()` holds every line it wrote, including those of its last moments.
    fn collect_remaining_output(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader thread panicked");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits until the output contains `needle`; false if it did not within `limit`.
    /// Log lines are written in batches (at least every `LOG_FLUSH_INTERVAL_MS`), so a line
    /// appears a moment after what it reports.
    pub fn wait_for_output(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.output().contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn send_sigterm(&self) {
        kill_process(Pid::from_child(&self.child), Signal::TERM).expect("kill(SIGTERM) failed");
    }

    /// Waits for the process to exit, failing the test (with its output) after `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the webapp process") {
                self.collect_remaining_output();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "webapp still running {limit:?} after SIGTERM; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinaryApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
