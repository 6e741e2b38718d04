//! Logging set-up: `tracing` events written as JSON lines (default) or text.
//!
//! Split into [`get_subscriber`] and [`init_subscriber`] so tests can build a subscriber that
//! writes to `std::io::sink` (or to stdout when `TEST_LOG` is set).
//!
//! The binary writes through [`batched`]: a request only formats its line and hands it to a
//! bounded queue (`tracing-appender`'s non-blocking writer, lossy), never waiting for stdout.
//! The queue's worker thread appends lines to a batch, which goes to stdout in one `write` when
//! it reaches [`BATCH_BYTES`] and at least every flush interval (a flusher thread), and once more
//! when the [`LogGuard`] is dropped at shutdown. Each `write` to a container's stdout costs the
//! Docker daemons CPU, whatever its size, so fewer and larger writes are the point.
//! A line that finds the queue full is dropped and counted ([`LogGuard::dropped_lines`], and
//! `webapp_log_lines_dropped_total` in `/metrics`); the first drop is reported by one warning.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::Context;
use tracing::Subscriber;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// A batch this large is written at once, without waiting for the flush interval. nginx's
/// access log uses the same size; it is also the capacity of a Linux pipe.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Lines the queue holds before new ones are dropped: several seconds of lines at the rates a
/// replica reaches, a few MiB at most (a line is about 250 bytes).
pub const QUEUE_LINES: usize = 16 * 1024;

/// Builds a subscriber; `RUST_LOG` overrides `default_filter`.
pub fn get_subscriber<Sink>(
    default_filter: &str,
    format: LogFormat,
    sink: Sink,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_target(false);
    match format {
        // Flat objects (fields next to "message", no span lists) keep lines short and easy to query.
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(false).finish()),
    }
}

/// Installs `subscriber` as the process-wide default; call once.
pub fn init_subscriber(subscriber: Box<dyn Subscriber + Send + Sync>) -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(subscriber).context("install the log subscriber")
}

/// How [`batched`] writes.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Longest a line waits in the batch.
    pub flush_interval: Duration,
    /// A batch this large is written at once.
    pub batch_bytes: usize,
    /// Lines the queue holds before new ones are dropped.
    pub queue_lines: usize,
    /// The filter and format of the one warning about dropped lines, as for [`get_subscriber`].
    pub default_filter: String,
    pub format: LogFormat,
}

impl BatchSettings {
    pub fn new(flush_interval: Duration, default_filter: &str, format: LogFormat) -> BatchSettings {
        BatchSettings {
            flush_interval,
            batch_bytes: BATCH_BYTES,
            queue_lines: QUEUE_LINES,
            default_filter: default_filter.to_string(),
            format,
        }
    }
}

/// A non-blocking, batching writer to `out`: give the writer to [`get_subscriber`] and keep the
/// guard until the end; dropping the guard writes out everything still queued or batched.
pub fn batched<W>(out: W, settings: BatchSettings) -> anyhow::Result<(NonBlocking, LogGuard)>
where
    W: Write + Send + 'static,
{
    let batch = Arc::new(Batch {
        state: Mutex::new(BatchState {
            buffer: Vec::with_capacity(settings.batch_bytes),
            out: Box::new(out),
        }),
        batch_bytes: settings.batch_bytes,
        lost_to_write_errors: AtomicU64::new(0),
    });
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(settings.queue_lines)
        .thread_name("log-writer")
        .finish(BatchWriter(Arc::clone(&batch)));
    let dropped = DroppedLines {
        queue_full: Some(writer.error_counter()),
        batch: Some(Arc::clone(&batch)),
    };
    let (stop, stopped) = mpsc::channel();
    let flusher = {
        let batch = Arc::clone(&batch);
        let dropped = dropped.clone();
        thread::Builder::new()
            .name(String::from("log-flusher"))
            .spawn(move || flush_periodically(&batch, &dropped, &settings, &stopped))
            .context("start the log flusher thread")?
    };
    let guard = LogGuard {
        worker: Some(worker),
        stop: Some(stop),
        flusher: Some(flusher),
        batch,
        dropped,
    };
    Ok((writer, guard))
}

/// Keeps the writer threads; dropping it drains the queue, writes the last batch and stops them.
pub struct LogGuard {
    worker: Option<WorkerGuard>,
    stop: Option<mpsc::Sender<()>>,
    flusher: Option<thread::JoinHandle<()>>,
    batch: Arc<Batch>,
    dropped: DroppedLines,
}

impl LogGuard {
    /// Counts the lines dropped so far (queue full, or stdout refused them).
    pub fn dropped_lines(&self) -> DroppedLines {
        self.dropped.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // The worker writes every queued line into the batch before it stops.
        drop(self.worker.take());
        drop(self.stop.take());
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        self.batch.write_out();
    }
}

/// The number of log lines lost so far; zero for a process that logs without [`batched`].
#[derive(Clone, Default)]
pub struct DroppedLines {
    queue_full: Option<ErrorCounter>,
    batch: Option<Arc<Batch>>,
}

impl DroppedLines {
    pub fn get(&self) -> u64 {
        let queue_full = self
            .queue_full
            .as_ref()
            .map_or(0, |counter| counter.dropped_lines() as u64);
        let write_errors = self.batch.as_ref().map_or(0, |batch| {
            batch.lost_to_write_errors.load(Ordering::Relaxed)
        });
        queue_full + write_errors
    }
}

static PROCESS_DROPPED_LINES: OnceLock<DroppedLines> = OnceLock::new();

/// Makes `dropped` the count [`dropped_log_lines`] reports (the process's one log writer).
pub fn publish_dropped_lines(dropped: DroppedLines) {
    let _ = PROCESS_DROPPED_LINES.set(dropped);
}

/// Log lines this process dropped so far (0 until [`publish_dropped_lines`]).
pub fn dropped_log_lines() -> u64 {
    PROCESS_DROPPED_LINES.get().map_or(0, DroppedLines::get)
}

/// Lines waiting to be written, and where they go.
struct Batch {
    state: Mutex<BatchState>,
    batch_bytes: usize,
    lost_to_write_errors: AtomicU64,
}

struct BatchState {
    buffer: Vec<u8>,
    out: Box<dyn Write + Send>,
}

impl Batch {
    /// The batch, even if a thread panicked while holding it: losing the log would be worse.
    fn lock(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, bytes: &[u8]) {
        let mut state = self.lock();
        state.buffer.extend_from_slice(bytes);
        if state.buffer.len() >= self.batch_bytes {
            self.write_locked(&mut state);
        }
    }

    fn write_out(&self) {
        let mut state = self.lock();
        self.write_locked(&mut state);
    }

    fn write_locked(&self, state: &mut BatchState) {
        if state.buffer.is_empty() {
            return;
        }
        let BatchState { buffer, out } = state;
        let written = out.write_all(buffer).and_then(|()| out.flush());
        if written.is_err() {
            // Nowhere to report it but the count: stdout itself failed.
            let lines = buffer.iter().filter(|byte| **byte == b'\n').count() as u64;
            self.lost_to_write_errors
                .fetch_add(lines.max(1), Ordering::Relaxed);
        }
        buffer.clear();
    }
}

/// What the queue's worker thread writes into: the batch.
struct BatchWriter(Arc<Batch>);

impl Write for BatchWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.append(bytes);
        Ok(bytes.len())
    }

    /// Called by the worker whenever its queue is empty: batching means not writing yet.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The flusher thread: writes the batch every `flush_interval` until told to stop, and warns
/// once (straight into the batch, past the full queue) when lines were dropped.
fn flush_periodically(
    batch: &Arc<Batch>,
    dropped: &DroppedLines,
    settings: &BatchSettings,
    stop: &mpsc::Receiver<()>,
) {
    let mut warned = false;
    loop {
        let stopping = match stop.recv_timeout(settings.flush_interval) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        let lost = dropped.get();
        if lost > 0 && !warned {
            warned = true;
            let direct = {
                let batch = Arc::clone(batch);
                move || BatchWriter(Arc::clone(&batch))
            };
            let subscriber = get_subscriber(&settings.default_filter, settings.format, direct);
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(
                    dropped_lines = lost,
                    "the log writer fell behind: log lines were dropped (counted in webapp_log_lines_dropped_total; this is logged once)"
                );
            });
        }
        batch.write_out();
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;
    use std::time::Instant;

    use super::*;

    /// Records every `write_all` it gets, one entry per write; can be held shut.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<String>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Recorder {
        fn shut(&self) {
            *self.gate.0.lock().expect("gate") = true;
        }

        fn open(&self) {
            *self.gate.0.lock().expect("gate") = false;
            self.gate.1.notify_all();
        }

        fn writes(&self) -> Vec<String> {
            self.writes.lock().expect("writes").clone()
        }

        fn wait_for_writes(&self, count: usize) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let writes = self.writes();
                if writes.len() >= count || Instant::now() > deadline {
                    return writes;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (shut, opened) = &*self.gate;
            let mut shut = shut.lock().expect("gate");
            while *shut {
                shut = opened.wait(shut).expect("gate");
            }
            self.writes
                .lock()
                .expect("writes")
                .push(String::from_utf8_lossy(bytes).into_owned());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn settings(flush_interval: Duration, batch_bytes: usize, queue_lines: usize) -> BatchSettings {
        BatchSettings {
            flush_interval,
            batch_bytes,
            queue_lines,
            default_filter: String::from("warn"),
            format: LogFormat::Json,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn lines_are_held_back_and_written_in_one_write_when_the_guard_drops() -> anyhow::Result<()> {
        let out = Recorder::default();
        let (mut writer, guard) = batched(out.clone(), settings(HOUR, BATCH_BYTES, 64))?;
        for line in ["one\n", "two\n", "three\n"] {
            writer.write_all(line.as_bytes())?;
        }
        thread::sleep(Duration::from_millis(50));
        assert_eq!(out.writes(), Vec::<String>::new());

        drop(guard);

        assert_eq!(out.writes(), vec![String::from("one\ntwo\nthree\n")]);
        Ok(())
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_interval() -> anyhow::Result<()> {
        let out = Recorder::default();
        let (mut writer, _guard) = batched(out.clone(), settings(HOUR, 20, 64))?;
        for line in ["line 1 ...\n", "line 2 ...\n", "line 3 ...\n"] {
            writer.write_all(line.as_bytes())?;
        }

        let writes = out.wait_for_writes(1);

        assert_eq!(
            writes.first().map(String::as_str),
            Some("line 1 ...\nline 2 ...\n")
        );
        Ok(())
    }

    #[test]
    fn an_idle_writer_still_writes_its_batch_after_the_interval() -> anyhow::Result<()> {
        let out = Recorder::default();
        let (mut writer, _guard) = batched(
            out.clone(),
            settings(Duration::from_millis(50), BATCH_BYTES, 64),
        )?;
        writer.write_all(b"lonely line\n")?;

        assert_eq!(out.wait_for_writes(1), vec![String::from("lonely line\n")]);
        Ok(())
    }

    #[test]
    fn lines_that_find_the_queue_full_are_counted_and_warned_about_once() -> anyhow::Result<()> {
        let out = Recorder::default();
        // Every line is a full batch; the first write blocks, so the queue of 4 fills up.
        let (mut writer, guard) = batched(out.clone(), settings(Duration::from_millis(20), 1, 4))?;
        out.shut();
        for number in 0..50 {
            writer.write_all(format!("line {number}\n").as_bytes())?;
        }
        let dropped = guard.dropped_lines();
        assert!(dropped.get() >= 40, "dropped {}", dropped.get());
        let lost = dropped.get();

        out.open();
        drop(guard);

        let writes = out.writes();
        let warnings: Vec<&String> = writes
            .iter()
            .filter(|write| write.contains("log lines were dropped"))
            .collect();
        assert_eq!(warnings.len(), 1, "{writes:?}");
        assert!(
            warnings[0].contains(&format!("\"dropped_lines\":{lost}")),
            "{warnings:?}"
        );
        let lines = writes
            .iter()
            .filter(|write| write.starts_with("line "))
            .count() as u64;
        assert_eq!(lines + lost, 50, "{writes:?}");
        assert_eq!(dropped.get(), lost);
        Ok(())
    }

    #[test]
    fn a_failing_output_counts_its_lines_as_dropped() -> anyhow::Result<()> {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut writer, guard) = batched(Broken, settings(HOUR, BATCH_BYTES, 64))?;
        writer.write_all(b"a\nb\n")?;
        writer.write_all(b"c\n")?;
        let dropped = guard.dropped_lines();

        drop(guard);

        // The warning about them is lost too: it goes to the same broken output.
        assert!(dropped.get() >= 3, "dropped {}", dropped.get());
        Ok(())
    }
}
