//! The L4 proxy of the daemon run in-process on the epoll path (the default), against loopback
//! servers on port 0; its counters read from the daemon's status.

/// The top-level `io` of the daemon under test.
const IO: &str = "epoll";

include!("l4_cases/cases.rs");
