//! The config loader of the `maas-vip` binary (`bin/src/config.rs`, compiled in here as it is):
//! any text gives a config or a report, never a panic; a rejected file always carries at least
//! one error; printing the report (what `maas-vip check` shows, with line, column and caret)
//! never panics either.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

// The binary's module, compiled here from its file.
#[allow(dead_code, unreachable_pub)]
#[path = "../../bin/src"]
mod bin {
    pub(crate) mod config;
}
use bin::config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(Path::new("fuzz.toml"), text.to_owned()) {
        Ok((_config, report)) => {
            assert!(!report.has_errors());
            let _ = report.to_string();
        }
        Err(report) => {
            assert!(report.errors() > 0, "rejected without an error");
            let _ = report.to_string();
        }
    }
});
