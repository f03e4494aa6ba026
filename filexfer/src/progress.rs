//! How a transfer reports what it is doing. The library only reports; drawing a bar or printing
//! lines is the caller's business (the `send` and `receive` binaries draw on stderr), so a
//! program embedding `filexfer` decides itself what, if anything, people see.

/// Receives a transfer's events, in this order: any number of [`note`](Progress::note)s, then
/// [`start`](Progress::start) with the totals, then per file [`file`](Progress::file),
/// [`advance`](Progress::advance) as its data moves and [`file_done`](Progress::file_done),
/// and [`finish`](Progress::finish) once everything is verified; or [`failed`](Progress::failed)
/// at any point. Every method does nothing by default.
///
/// The transfer calls these from its own task, between network reads and writes: an
/// implementation must return quickly and never block on I/O of its own.
pub trait Progress: Send + Sync {
    /// A step worth telling a person about, e.g. that the peer arrived or a file was skipped.
    fn note(&self, message: &str) {
        let _ = message;
    }

    /// Data starts to flow: `files` files (and texts) of `bytes` bytes in all (streams of
    /// unknown length count 0). `name` is the first top-level name, as the sender announced it
    /// (not yet escaped for printing).
    fn start(&self, name: &str, files: u64, bytes: u64) {
        let _ = (name, files, bytes);
    }

    /// The data of the file `path` (`size` bytes if known) starts at `from`: the first `from`
    /// bytes were already at the receiver and do not cross again.
    fn file(&self, path: &str, size: Option<u64>, from: u64) {
        let _ = (path, size, from);
    }

    /// `bytes` more went through.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }

    /// The current file is complete.
    fn file_done(&self) {}

    /// The transfer succeeded: `bytes` crossed in all, everything verified by the receiver.
    fn finish(&self, bytes: u64) {
        let _ = bytes;
    }

    /// The transfer stopped short; the error follows as the transfer's result. Called so a
    /// live display can be cleared before anyone prints that error.
    fn failed(&self) {}
}

/// Reports nothing: for tests and programs that show no progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
