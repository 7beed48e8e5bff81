//! `maas-vip import --haproxy` (`bin/src/import.rs`, compiled in here as it is): any text gives
//! a config or an error naming a line, never a panic; the produced config is valid TOML and uses
//! only keys that maas-vip.toml knows.
//!
//! Each input is imported alone and beside the MAAS guide's keepalived.conf (the cross checks
//! between the two files, such as track_backends naming a frontend, run only then).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

// The binary's modules, compiled here from their files: a `#[path]` on an inline module makes
// `bin/src` the directory, so `import.rs` finds its submodules in `bin/src/import/`.
#[allow(dead_code, unreachable_pub)]
#[path = "../../bin/src"]
mod bin {
    pub(crate) mod config;
    pub(crate) mod import;
}
use bin::{config, import};
#[path = "common.rs"]
mod common;

const GUIDE_KEEPALIVED: &str = include_str!("../../tests/fixtures/import/guide-keepalived.conf");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let k = Path::new("keepalived.conf");
    let h = Path::new("haproxy.cfg");
    common::check(import::import(None, Some((h, text))));
    common::check(import::import(Some((k, GUIDE_KEEPALIVED)), Some((h, text))));
});
