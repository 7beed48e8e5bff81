//! The L4 proxy's cases (l4_cases/cases.rs) on the io_uring path, top-level `io = "io_uring"`:
//! each case checks that the engine threads run, so a host without io_uring fails here instead
//! of passing on epoll.

/// The top-level `io` of the daemon under test.
const IO: &str = "io_uring";

include!("l4_cases/cases.rs");
