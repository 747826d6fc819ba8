//! Log output that never panics and never blocks a task, whatever stderr is.
//!
//! Logs go to stderr, and stderr is often a pipe to a log shipper. When the
//! reader of that pipe is gone, every write fails with `EPIPE`; when it is
//! stalled, every write blocks once the pipe's buffer is full. Written from
//! the task that logs, the first would panic (tracing's formatter reports a
//! failed write with `eprintln!`, which panics) and the second would freeze
//! a runtime worker — either can take the signal task, and with it shutdown.
//!
//! So a task only hands its formatted line to a bounded queue, never
//! waiting: when the queue is full the line is dropped and counted. One
//! thread of its own writes the queue to stderr and ignores write errors;
//! the count of dropped lines is reported in the output once it flows again.
//! (`tracing-appender` does the same; it is not among this workspace's
//! dependencies, and this is all of it that Herald needs.)

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tracing_subscriber::fmt::MakeWriter;

/// Lines that may wait for stderr; about a few MiB of the longest log lines.
const QUEUE_LINES: usize = 8192;

/// How long exiting waits for queued lines to reach stderr.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// What the writer thread is asked to do.
enum Message {
    /// Write one formatted log line.
    Line(Vec<u8>),
    /// Acknowledge once everything queued before has been written.
    Flush(SyncSender<()>),
}

/// Installs the global `tracing` subscriber with `filter` (`RUST_LOG` syntax),
/// writing through the queue. Keep the returned guard until exit: dropping it
/// waits (briefly) for queued lines to be written.
pub(crate) fn init(filter: &str) -> Result<Flush> {
    let env_filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow!("--log {filter:?}: {e}"))?;
    // A descriptor of its own: a write blocked on a stalled pipe then holds no
    // lock that anyone else writing to stderr (a panic message) would wait for.
    let stderr = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .context("cannot duplicate stderr for the log writer")?;
    let (sender, receiver) = sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let thread_dropped = dropped.clone();
    std::thread::Builder::new()
        .name("herald-log".to_owned())
        .spawn(move || write_lines(stderr, receiver, &thread_dropped))
        .context("cannot start the log writer thread")?;
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(QueueWriter {
            sender: sender.clone(),
            dropped,
        })
        // Colours only on a terminal: logs piped to files, containers and CI stay plain text.
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        // Writes cannot fail here; and reporting one would mean `eprintln!`, which panics.
        .log_internal_errors(false)
        .init();
    Ok(Flush { sender })
}

/// The writer thread: stderr, errors ignored, until every sender is gone.
fn write_lines(mut stderr: File, receiver: Receiver<Message>, dropped: &AtomicU64) {
    for message in receiver {
        match message {
            Message::Line(line) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(
                        stderr,
                        "herald: {lost} log lines dropped: the log output did not keep up"
                    );
                }
                let _ = stderr.write_all(&line);
            }
            Message::Flush(ack) => {
                let _ = stderr.flush();
                let _ = ack.try_send(());
            }
        }
    }
}

/// Hands every log line to the writer thread without waiting.
struct QueueWriter {
    /// The writer thread's queue.
    sender: SyncSender<Message>,
    /// Lines lost to a full queue.
    dropped: Arc<AtomicU64>,
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            line: Vec::new(),
            owner: self,
        }
    }
}

/// Collects one event's output and queues it when the formatter is done with it.
pub(crate) struct LineWriter<'a> {
    /// The formatted event.
    line: Vec<u8>,
    /// Where it goes.
    owner: &'a QueueWriter,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        if self.owner.sender.try_send(Message::Line(line)).is_err() {
            self.owner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits, on drop, up to [`FLUSH_WAIT`] for queued lines to be written.
pub(crate) struct Flush {
    /// The writer thread's queue.
    sender: SyncSender<Message>,
}

impl Flush {
    /// Queues `line` as it is, past the log filter: what the process must say
    /// last (its error) must not block on a stalled stderr either.
    pub(crate) fn say(&self, line: String) {
        let _ = self.sender.try_send(Message::Line(line.into_bytes()));
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let (ack, acked) = sync_channel(1);
        let mut message = Message::Flush(ack);
        loop {
            match self.sender.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    message = again;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = acked.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}
