//! End-to-end encrypted file transfer through a relay (work in progress).
