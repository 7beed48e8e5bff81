//! `maas-vip import --keepalived` (the `import` crate, `import/src/lib.rs`): any text
//! gives a config or an error naming a line, never a panic; the produced config is valid TOML
//! and uses only keys that maas-vip.toml knows.
//!
//! Each input is imported alone and beside the MAAS guide's haproxy.cfg (the cross checks
//! between the two files run only then).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

mod common;

const GUIDE_HAPROXY: &str = include_str!("../../tests/fixtures/import/guide-haproxy.cfg");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let k = Path::new("keepalived.conf");
    let h = Path::new("haproxy.cfg");
    common::check(import::import(Some((k, text)), None));
    common::check(import::import(Some((k, text)), Some((h, GUIDE_HAPROXY))));
});
