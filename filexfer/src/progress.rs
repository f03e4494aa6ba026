//! How a transfer reports what it is doing. The library only reports; drawing a bar or printing
//! lines is the caller's business (the `send` and `receive` binaries draw on stderr), so a
//! program embedding `filexfer` decides itself what, if anything, people see.

/// Receives a transfer's events, in this order: any number of [`note`](Progress::note)s, then
/// [`start`](Progress::start), [`advance`](Progress::advance) as data moves, and
/// [`finish`](Progress::finish) once the file is verified; or [`failed`](Progress::failed) at
/// any point. Every method does nothing by default.
///
/// The transfer calls these from its own task, between network reads and writes: an
/// implementation must return quickly and never block on I/O of its own.
pub trait Progress: Send + Sync {
    /// A step worth telling a person about before data flows, e.g. that the peer arrived.
    fn note(&self, message: &str) {
        let _ = message;
    }

    /// Data starts to flow: the file `name` (as the sender announced it, not yet escaped for
    /// printing) of `size` bytes.
    fn start(&self, name: &str, size: u64) {
        let _ = (name, size);
    }

    /// `bytes` more went through.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }

    /// The transfer succeeded: `bytes` in all, verified by the receiver.
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
