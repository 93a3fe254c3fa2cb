//! Where log lines go: one output (stdout in the binary), written whole,
//! with the lines of each event-loop thread batched until it idles.
//!
//! An event-loop thread that calls [`idle`] before it parks (a tokio
//! `on_thread_park` hook) keeps its lines in a buffer of its own from then
//! on, and writes them with one `write(2)` when it is about to park again,
//! when the buffer holds [`BATCH_BYTES`], or when the thread ends. Under load a thread
//! parks every few requests, so a busy proxy writes a few kilobytes at a
//! time; an idle one writes each line as it comes. Any other thread writes
//! its line at once. Writes hold the output's lock, so lines from different
//! threads never interleave (`write_all` may take several `write(2)`s into a
//! pipe), and a thread blocks while the output does, as nginx's workers do:
//! no line is dropped.
//!
//! Issue 13: this replaced tracing-appender's writer thread, which took
//! each line over a channel (a copy and a wake-up per line) and cost 0.19 s
//! of CPU per 100k access lines on its own (`bench/README.md`).

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// The most a thread keeps before it writes.
pub const BATCH_BYTES: usize = 64 * 1024;

/// The output every log line goes to (see the [module docs](self)). Cloning
/// it shares the output.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for LogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOutput").finish_non_exhaustive()
    }
}

impl LogOutput {
    /// Lines to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Box::new(out))),
        }
    }

    /// Lines to the process's standard output.
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }

    /// Writes `bytes` (whole lines) to the output, under its lock. A write
    /// error loses the lines, as a log does when its output is gone.
    fn write_out(&self, bytes: &[u8]) {
        let mut out = self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }
}

thread_local! {
    /// Whether this thread batches its lines (it calls [`idle`] before it parks).
    static BATCHING: Cell<bool> = const { Cell::new(false) };
    /// This thread's lines not yet written, and the output they are for.
    static BATCH: RefCell<Batch> = const {
        RefCell::new(Batch {
            bytes: Vec::new(),
            output: None,
        })
    };
}

/// A thread's lines not yet written.
struct Batch {
    bytes: Vec<u8>,
    output: Option<LogOutput>,
}

impl Batch {
    fn flush(&mut self) {
        if let Some(output) = &self.output {
            if !self.bytes.is_empty() {
                output.write_out(&self.bytes);
                self.bytes.clear();
            }
        }
    }
}

impl Drop for Batch {
    /// The thread ends: its last lines are written.
    fn drop(&mut self) {
        self.flush();
    }
}

/// This event-loop thread is about to park (tokio's `on_thread_park`):
/// writes the lines it has kept, and keeps its next ones until it calls
/// this again. Only a thread that runs this hook every time it parks may
/// call it (a blocking-pool thread does not park through it).
pub fn idle() {
    BATCHING.with(|b| b.set(true));
    // A thread being torn down has already written its lines.
    let _ = BATCH.try_with(|batch| {
        if let Ok(mut batch) = batch.try_borrow_mut() {
            batch.flush();
        }
    });
}

/// One line's writer (see [`LogOutput`]).
#[derive(Debug)]
pub struct LineWriter<'a> {
    output: &'a LogOutput,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if BATCHING.with(Cell::get) {
            let kept = BATCH.try_with(|batch| {
                let Ok(mut batch) = batch.try_borrow_mut() else {
                    return false;
                };
                let ours = batch
                    .output
                    .as_ref()
                    .is_some_and(|o| Arc::ptr_eq(&o.shared, &self.output.shared));
                if !ours {
                    // Lines for another output (a test's) go first, there.
                    batch.flush();
                    batch.output = Some(self.output.clone());
                }
                batch.bytes.extend_from_slice(buf);
                if batch.bytes.len() >= BATCH_BYTES {
                    batch.flush();
                }
                true
            });
            if kept == Ok(true) {
                return Ok(buf.len());
            }
        }
        self.output.write_out(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { output: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an output received, write by write.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(output: &LogOutput, text: &str) {
        output.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn other_threads_write_each_line_at_once() {
        let writes = Writes::default();
        let output = LogOutput::new(writes.clone());
        std::thread::spawn(move || {
            line(&output, "a\n");
            line(&output, "b\n");
        })
        .join()
        .unwrap();
        assert_eq!(*writes.0.lock().unwrap(), [b"a\n".to_vec(), b"b\n".to_vec()]);
    }

    #[test]
    fn a_batching_thread_writes_when_it_idles_fills_up_or_ends() {
        let writes = Writes::default();
        let output = LogOutput::new(writes.clone());
        let seen = writes.clone();
        std::thread::spawn(move || {
            line(&output, "before the first park\n");
            assert_eq!(seen.0.lock().unwrap().len(), 1, "written at once");
            idle();
            line(&output, "a\n");
            line(&output, "b\n");
            assert_eq!(seen.0.lock().unwrap().len(), 1, "kept until the thread idles");
            idle();
            assert_eq!(seen.0.lock().unwrap()[1], b"a\nb\n");
            idle();
            assert_eq!(seen.0.lock().unwrap().len(), 2, "nothing more to write");
            // A full batch goes at once.
            let long = "x".repeat(BATCH_BYTES - 1) + "\n";
            line(&output, &long);
            assert_eq!(seen.0.lock().unwrap().len(), 3);
            line(&output, "last\n");
        })
        .join()
        .unwrap();
        let writes = writes.0.lock().unwrap();
        assert_eq!(writes.len(), 4, "the last line written as the thread ended");
        assert_eq!(writes[3], b"last\n");
    }

    #[test]
    fn a_batch_for_another_output_is_written_there_first() {
        let (first, second) = (Writes::default(), Writes::default());
        let (one, two) = (LogOutput::new(first.clone()), LogOutput::new(second.clone()));
        std::thread::spawn(move || {
            idle();
            line(&one, "to one\n");
            line(&two, "to two\n");
            idle();
        })
        .join()
        .unwrap();
        assert_eq!(*first.0.lock().unwrap(), [b"to one\n".to_vec()]);
        assert_eq!(*second.0.lock().unwrap(), [b"to two\n".to_vec()]);
    }

    #[test]
    fn lines_from_threads_at_once_stay_whole() {
        let writes = Writes::default();
        let output = LogOutput::new(writes.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let output = output.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        // Half the threads batch, idling now and then.
                        if t % 2 == 0 && i % 37 == 0 {
                            idle();
                        }
                        line(&output, &format!("thread {t} line {i} {}\n", "y".repeat(200)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all: Vec<u8> = writes.0.lock().unwrap().concat();
        let text = String::from_utf8(all).unwrap();
        assert_eq!(text.lines().count(), 2000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(mine.len(), 500);
            for (i, l) in mine.iter().enumerate() {
                assert_eq!(
                    *l,
                    format!("thread {t} line {i} {}", "y".repeat(200)),
                    "in order and whole"
                );
            }
        }
    }
}
