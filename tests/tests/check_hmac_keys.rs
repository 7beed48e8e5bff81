//! `maas-vip check` reads the auth_hmac keys (issue 17): a key file open to group or others,
//! a missing key file, a key of the wrong length or bad `hex:`, and a missing systemd
//! credential are each reported at the line of their `key_file` / `credential` in
//! maas-vip.toml, with what to do about it; `run` refuses the same config before it starts.
//! No privileges needed: nothing here opens a socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use maas_vip_tests::maas_vip_bin;

/// 64 hex digits: a 32-byte key.
const KEY_HEX: &str = "hex:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

fn write_mode(path: &Path, content: &str, mode: u32) {
    std::fs::write(path, content).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A config whose auth_hmac has key 1 in `key_file` (line 9) and key 2 as the credential
/// `vrrp_hmac_2` (line 10).
fn config(dir: &Path, key_file: &Path) -> PathBuf {
    let path = dir.join("maas-vip.toml");
    let text = format!(
        r#"[[vrrp]]
name = "maas_region"
interface = "lo"
virtual_router_id = 51
virtual_ipaddresses = ["10.0.0.100/24"]

[vrrp.auth_hmac]
keys = [
    {{ id = 1, key_file = "{}" }},
    {{ id = 2, credential = "vrrp_hmac_2" }},
]
active_key = 1
"#,
        key_file.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn maas_vip(args: &[&str], cfg: &Path, creds: Option<&Path>) -> Output {
    let mut cmd = Command::new(maas_vip_bin());
    cmd.args(args).arg("-c").arg(cfg);
    match creds {
        Some(d) => cmd.env("CREDENTIALS_DIRECTORY", d),
        None => cmd.env_remove("CREDENTIALS_DIRECTORY"),
    };
    cmd.output().expect("run maas-vip")
}

fn check(cfg: &Path, creds: Option<&Path>) -> (Option<i32>, String) {
    let out = maas_vip(&["check"], cfg, creds);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    creds: PathBuf,
    cfg: PathBuf,
}

/// A good key file and a good credential.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("vrrp-hmac-1.key");
    write_mode(&key, KEY_HEX, 0o600);
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).expect("mkdir");
    write_mode(&creds.join("vrrp_hmac_2"), KEY_HEX, 0o400);
    let cfg = config(dir.path(), &key);
    Setup {
        dir,
        key,
        creds,
        cfg,
    }
}

#[test]
fn good_keys_pass() {
    let s = setup();
    let (code, text) = check(&s.cfg, Some(&s.creds));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");
    // Never the key, not even in part.
    assert!(!text.contains("00112233"), "{text}");
}

#[test]
fn key_file_open_to_others_is_an_error_at_its_line() {
    let s = setup();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let (code, text) = check(&s.cfg, Some(&s.creds));
        assert_eq!(code, Some(2), "{mode:o}: {text}");
        let want = format!(
            "error: {}:9:26: key file {}: mode {mode:04o} lets group or others at it; refused \
             (chmod 600 {})",
            s.cfg.display(),
            s.key.display(),
            s.key.display()
        );
        assert!(text.contains(&want), "{mode:o}: want {want}\n{text}");
    }
}

#[test]
fn missing_key_file_says_how_to_create_it() {
    let s = setup();
    std::fs::remove_file(&s.key).expect("rm");
    let (code, text) = check(&s.cfg, Some(&s.creds));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "error: {}:9:26: key file {} does not exist",
            s.cfg.display(),
            s.key.display()
        )),
        "{text}"
    );
    assert!(text.contains("openssl rand -hex 32"), "{text}");
}

#[test]
fn bad_key_syntax_is_an_error_at_its_line() {
    let s = setup();
    for (content, says) in [
        (
            "hex:00112233zz\n",
            "`hex:` must be followed by hex digits only",
        ),
        (
            "too short\n",
            "key 1 is 9 bytes; keys are 32 to 64 bytes (`hex:` and 64 to 128 hex digits",
        ),
        ("hex:00\n", "key 1 is 1 bytes"),
    ] {
        write_mode(&s.key, content, 0o600);
        let (code, text) = check(&s.cfg, Some(&s.creds));
        assert_eq!(code, Some(2), "{content}: {text}");
        assert!(
            text.contains(&format!("error: {}:9:26: key file", s.cfg.display())),
            "{content}: {text}"
        );
        assert!(text.contains(says), "{content}: want {says}\n{text}");
        assert!(!text.contains("too short"), "the key leaked: {text}");
    }
}

#[test]
fn missing_credential_is_an_error_where_systemd_would_have_put_it() {
    let s = setup();
    std::fs::remove_file(s.creds.join("vrrp_hmac_2")).expect("rm");
    let (code, text) = check(&s.cfg, Some(&s.creds));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "error: {}:10:28: credential `vrrp_hmac_2` is not in {} (is \
             LoadCredential=vrrp_hmac_2:... in the unit?)",
            s.cfg.display(),
            s.creds.display()
        )),
        "{text}"
    );
    // A credential open to others is refused as a key file is.
    write_mode(&s.creds.join("vrrp_hmac_2"), KEY_HEX, 0o444);
    let (code, text) = check(&s.cfg, Some(&s.creds));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("10:28: key file"), "{text}");
    assert!(text.contains("lets group or others at it"), "{text}");
}

#[test]
fn credentials_directory_unset_warns_in_check_and_stops_run() {
    let s = setup();
    // By hand, outside systemd: the credential cannot be seen, which is not the file's fault.
    let (code, text) = check(&s.cfg, None);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "warning: {}:10:28: credential `vrrp_hmac_2` not checked: $CREDENTIALS_DIRECTORY is \
             not set",
            s.cfg.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("CREDENTIALS_DIRECTORY=/dir/holding/vrrp_hmac_2 maas-vip check"),
        "{text}"
    );
    // The key file is still judged.
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, text) = check(&s.cfg, None);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("9:26: key file"), "{text}");

    // The daemon needs every key: it does not start, and says why (before it needs root).
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = maas_vip(&["run"], &s.cfg, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "error: {}:10:28: credential `vrrp_hmac_2`: $CREDENTIALS_DIRECTORY is not set (run \
             under systemd with LoadCredential=vrrp_hmac_2:/path/to/key in the unit)",
            s.cfg.display()
        )),
        "{err}"
    );
    drop(s.dir);
}
