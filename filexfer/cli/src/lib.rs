//! What `send` and `receive` share beyond `relay-bin`'s process plumbing: how a transfer's
//! progress looks on stderr ([`StderrProgress`]). The transfer itself is the `filexfer`
//! library's; this package only presents it.

mod progress;

pub use progress::{Side, StderrProgress};
