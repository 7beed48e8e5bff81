//! The command line as an operator meets it. Having an integration test here also makes
//! `cargo test --workspace` build `target/<profile>/maas-vip`, which the tests package runs.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_maas-vip");

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "status", "import", "demo"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`{cmd}` missing from --help:\n{text}"
        );
    }
}

#[test]
fn shipped_configs_pass_check() {
    for file in ["maas-vip.toml", "try-out.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../conf")
            .join(file);
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run check");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK ("));
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .args(["run", "--no-such-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
