//! Where log lines go: a call appends its line to a batch in memory and goes on; a thread of
//! the sink's own wakes at the first line, lets more gather for `GATHER`, and writes them all
//! to standard error with one write. Past `MAX_QUEUED_BYTES` waiting, new lines are dropped
//! and counted rather than calls slowed.
//!
//! Written here rather than taken from tracing-appender: its writer allocates every line,
//! sends it over a channel and frees it on the other thread, which the profile of a GetUser
//! under load showed as a cost paid on every call. Here a line is one copy into a buffer
//! that is reused.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of lines waiting to be written before new ones are dropped (about 100,000 access-log
/// lines).
const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

/// How long the writer lets lines gather after the first: a busy server's lines cost one
/// wake-up and one write per interval, not one per line, and none waits longer than this.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// What a written batch's buffer keeps for the next one.
const KEPT_CAPACITY: usize = 256 * 1024;

struct Batch {
    bytes: Vec<u8>,
    /// The writer thread sleeps until a line arrives.
    writer_waiting: bool,
    /// The writer thread is to stop once the batch is empty.
    closed: bool,
    /// The writer thread has stopped: lines are written where they are made.
    finished: bool,
}

struct Shared {
    batch: Mutex<Batch>,
    arrived: Condvar,
    dropped: AtomicU64,
    /// Where lines are written: by the writer thread, then, once it has stopped, by callers.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            batch: Mutex::new(Batch {
                bytes: Vec::with_capacity(KEPT_CAPACITY),
                writer_waiting: false,
                closed: false,
                finished: false,
            }),
            arrived: Condvar::new(),
            dropped: AtomicU64::new(0),
            out: Mutex::new(Box::new(out)),
        }
    }

    fn batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` out now. A failed write (a closed pipe, a full disk) loses these lines,
    /// not the server.
    fn write_out(&self, bytes: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }

    fn push(&self, line: &[u8]) {
        let mut batch = self.batch();
        if batch.finished {
            drop(batch);
            self.write_out(line);
            return;
        }
        if batch.bytes.len() + line.len() > MAX_QUEUED_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let wake = batch.writer_waiting && batch.bytes.is_empty();
        batch.bytes.extend_from_slice(line);
        drop(batch);
        if wake {
            self.arrived.notify_one();
        }
    }

    /// The writer thread: waits for a line, lets more gather for `GATHER`, then takes all that
    /// are waiting and writes them at once. Only the first line after a write wakes it.
    fn write_batches(&self) {
        let mut taken = Vec::with_capacity(KEPT_CAPACITY);
        loop {
            let mut batch = self.batch();
            while batch.bytes.is_empty() && !batch.closed {
                batch.writer_waiting = true;
                batch = self.arrived.wait(batch).unwrap_or_else(|p| p.into_inner());
            }
            batch.writer_waiting = false;
            if batch.bytes.is_empty() {
                return;
            }
            if !batch.closed {
                drop(batch);
                std::thread::sleep(GATHER);
                batch = self.batch();
            }
            std::mem::swap(&mut batch.bytes, &mut taken);
            drop(batch);
            self.write_out(&taken);
            taken.clear();
            taken.shrink_to(KEPT_CAPACITY);
        }
    }
}

/// The running sink; `finish` writes every line still waiting.
pub struct Sink {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the writer thread, writing to standard error.
    pub fn start() -> io::Result<Self> {
        Self::start_into(io::stderr())
    }

    /// Starts the writer thread, writing to `out`.
    fn start_into(out: impl Write + Send + 'static) -> io::Result<Self> {
        let shared = Arc::new(Shared::new(out));
        let writing = shared.clone();
        let writer = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writing.write_batches())?;
        Ok(Self {
            shared,
            writer: Some(writer),
        })
    }

    /// What the log formatter writes each line to.
    pub fn lines(&self) -> Lines {
        Lines(self.shared.clone())
    }

    /// Lines dropped so far because too many were waiting.
    pub fn dropped(&self) -> Dropped {
        Dropped(self.shared.clone())
    }

    /// Writes every line still waiting and stops the writer thread; lines made later are
    /// written at once.
    pub fn finish(&mut self) {
        self.shared.batch().closed = true;
        self.shared.arrived.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // Lines that came after the writer's last look, then every later one, in order.
        let rest = {
            let mut batch = self.shared.batch();
            batch.finished = true;
            std::mem::take(&mut batch.bytes)
        };
        self.shared.write_out(&rest);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The count of dropped lines, readable from anywhere.
#[derive(Clone)]
pub struct Dropped(Arc<Shared>);

impl Dropped {
    pub fn count(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Appends whole lines to the sink's batch. The formatter writes each line with one
/// `write_all`, so lines never interleave.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard error's stand-in: what the sink wrote.
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_those_after_finish_too() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut sink = Sink::start_into(Written(out.clone())).unwrap();
        let lines = sink.lines();
        for n in 0..10_000 {
            lines
                .make_writer()
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
        }
        sink.finish();
        // A line made after the writer stopped is written at once, after the others.
        lines.make_writer().write_all(b"after\n").unwrap();
        let written = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let expected: String = (0..10_000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(
            written,
            expected + "after\n",
            "lines were lost, split or reordered"
        );
        assert_eq!(sink.dropped().count(), 0);
    }

    #[test]
    fn lines_past_the_bound_are_dropped_and_counted() {
        let shared = Shared::new(io::sink());
        // No writer thread runs, so nothing leaves the batch.
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..20 {
            shared.push(&line);
        }
        assert_eq!(shared.batch().bytes.len(), MAX_QUEUED_BYTES);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 4);
    }
}
