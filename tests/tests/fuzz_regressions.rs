//! The fuzz targets' inputs as ordinary tests, so that CI replays them without cargo-fuzz:
//! every file of `fuzz/regressions/<target>/` (inputs that once crashed a target) and of
//! `fuzz/seeds/<target>/`.
//!
//! The VRRP and ARP decoders are called in-process with the invariants of their fuzz targets,
//! the region side's HTTP response decoder through the very function its target runs
//! (`lb::upstream::fuzzing::run`);
//! the config loader and the importers (the config/ and import/ crates, which the fuzz
//! targets call) are met here the way users meet them, through `maas-vip check` and
//! `maas-vip import`, which must answer with exit code 0 or 2, never with a panic (101) or a
//! signal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use maas_vip_tests::maas_vip_bin;
use vrrp::arp::{Garp, GARP_LEN};
use vrrp::packet::{IpPair, Ipv4Meta, Packet, Repr};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("fuzz")
}

/// The regression inputs and seeds of `target`, in a stable order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["regressions", "seeds"] {
        if let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) {
            out.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    out.retain(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README"));
    out.sort();
    out
}

fn decode_vrrp(payload: &[u8], ip: &IpPair) {
    let Ok(packet) = Packet::new_checked(payload) else {
        return;
    };
    if let Ok(repr) = Repr::parse(&packet, ip) {
        assert_eq!(repr.buffer_len(), payload.len());
        let bytes = repr.to_bytes(ip);
        let again = Repr::parse(&Packet::new_checked(&bytes[..]).expect("header"), ip);
        assert_eq!(again, Ok(repr));
    }
}

#[test]
fn vrrp_packet_inputs_decode_without_panic() {
    let files = inputs("vrrp_packet");
    assert!(!files.is_empty(), "no seeds in {}", fuzz_dir().display());
    let v4 = IpPair {
        src: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 11)),
        dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
    };
    let v6 = IpPair {
        src: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        dst: IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
    };
    let mut decoded = 0;
    for f in &files {
        let data = std::fs::read(f).expect("read input");
        if let Some(meta) = Ipv4Meta::parse(&data) {
            decode_vrrp(meta.payload(&data), &meta.pair());
            decoded += 1;
        }
        decode_vrrp(&data, &v4);
        decode_vrrp(&data, &v6);
    }
    println!(
        "vrrp_packet: {} inputs, {decoded} behind an IPv4 header",
        files.len()
    );
}

#[test]
fn arp_frame_inputs_decode_without_panic() {
    let files = inputs("arp_frame");
    assert!(!files.is_empty(), "no seeds in {}", fuzz_dir().display());
    for f in &files {
        let data = std::fs::read(f).expect("read input");
        if let Some(g) = Garp::parse(&data) {
            assert!(data.len() >= GARP_LEN);
            assert_eq!(Garp::parse(&g.to_frame()), Some(g));
        }
    }
}

#[test]
fn auth_hmac_inputs_split_and_parse_without_panic() {
    use vrrp::auth_hmac::{split_trailer, Trailer, TrailerRepr, TRAILER_LEN};
    let files = inputs("auth_hmac");
    assert!(!files.is_empty(), "no seeds in {}", fuzz_dir().display());
    let mut signed = 0;
    for f in &files {
        let data = std::fs::read(f).expect("read input");
        // The target's two selector bytes, then the payload.
        let payload = data.get(2..).unwrap_or(&[]);
        let (msg, t) = split_trailer(payload, 4);
        if let Some(t) = t {
            assert_eq!([msg, t].concat(), payload);
            let view = Trailer::new_checked(t).expect("28 bytes");
            signed += usize::from(TrailerRepr::parse(&view).is_ok());
        } else {
            assert_eq!(msg, payload);
        }
        let _ = vrrp::auth_hmac::keys::decode_value(payload);
        assert!(payload.len() != TRAILER_LEN || Trailer::new_checked(payload).is_ok());
    }
    // The captured keepalived adverts are among the seeds.
    assert!(signed >= 4, "{signed} signed adverts in the seeds");
}

#[test]
fn http_response_inputs_keep_their_invariants() {
    let files = inputs("http_response");
    assert!(!files.is_empty(), "no seeds in {}", fuzz_dir().display());
    for f in &files {
        let data = std::fs::read(f).expect("read input");
        let run = std::panic::catch_unwind(|| lb::upstream::fuzzing::run(&data));
        assert!(run.is_ok(), "http_response input {}", f.display());
    }
}

/// Runs the binary on each input; exit code 0 or 2 only.
fn cli_never_panics(target: &str, args: impl Fn(&Path) -> Vec<String>) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds in {}", fuzz_dir().display());
    for f in &files {
        let out = Command::new(maas_vip_bin())
            .args(args(f))
            .output()
            .expect("run maas-vip");
        assert!(
            matches!(out.status.code(), Some(0) | Some(2)),
            "{target} input {}: {}\n{}",
            f.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn config_inputs_never_panic_check() {
    cli_never_panics("config", |f| vec!["check".into(), "-c".into(), s(f)]);
}

#[test]
fn keepalived_import_inputs_never_panic_import() {
    cli_never_panics("keepalived_import", |f| {
        vec!["import".into(), "--keepalived".into(), s(f)]
    });
}

#[test]
fn haproxy_import_inputs_never_panic_import() {
    cli_never_panics("haproxy_import", |f| {
        vec!["import".into(), "--haproxy".into(), s(f)]
    });
}
