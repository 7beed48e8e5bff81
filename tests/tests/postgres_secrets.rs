//! A wrong password fails the PostgreSQL check as `auth failed`, and no password, wrong or
//! right, appears in any output: the check's log lines (captured at TRACE), its results, its
//! settings' `Debug`, its errors, the server's log. In a test binary of its own, so that the
//! global subscriber sees every event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthcheck::postgres::{self, AuthFailure, Password, PgCheck, PgResult, Role, SqlState};
use maas_vip_tests::postgres::{self as pg, Options, PgCluster, CHECK_USER};

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const WRONG: &str = "Wr0ng-pa55word-for-the-check";

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
async fn a_wrong_password_is_auth_failed_and_no_password_is_printed() {
    let bin = pg::require("a_wrong_password_is_auth_failed_and_no_password_is_printed");
    let out = Capture::default();
    let writer = out.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish(),
    )
    .expect("the only subscriber of this binary");

    let cluster = PgCluster::start(&bin, &Options::default());
    let a = cluster.server(0).addr();
    let wrong_file = cluster.root().join("wrong.password");
    std::fs::write(&wrong_file, format!("{WRONG}\n")).expect("write");
    let wrong = PgCheck::new(CHECK_USER, "postgres")
        .expect("valid")
        .with_password(Password::from_file(&wrong_file).expect("password file"));
    let right = PgCheck::new(CHECK_USER, "postgres")
        .expect("valid")
        .with_password(Password::from_file(cluster.password_file()).expect("password file"));

    let mut printed = Vec::new();
    for _ in 0..2 {
        let r = postgres::probe(a, &wrong, Duration::from_secs(5)).await;
        assert_eq!(
            r,
            PgResult::AuthFailed(AuthFailure::Rejected(SqlState::INVALID_PASSWORD))
        );
        assert!(r.to_string().starts_with("auth failed"), "{r}");
        printed.push(format!("{r} {r:?} {}", r.code()));
    }
    let r = postgres::probe(a, &right, Duration::from_secs(5)).await;
    assert_eq!(r, PgResult::Up(Role::Primary));
    printed.push(format!("{r} {r:?}"));
    printed.push(format!("{wrong:?} {right:#?}"));
    let e = Password::from_file(&cluster.root().join("missing")).expect_err("no such file");
    printed.push(format!("{e} {e:?}"));

    let logs = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf8");
    // The capture works: the server's reason is logged at debug level.
    assert!(
        logs.contains("password authentication failed for user"),
        "{logs}"
    );
    let server_log = cluster.server(0).log();
    assert!(
        server_log.contains("password authentication failed for user \"maas_check\""),
        "{server_log}"
    );
    printed.push(logs);
    printed.push(server_log);
    for text in &printed {
        for secret in [WRONG, cluster.password()] {
            assert!(!text.contains(secret), "a password in the output:\n{text}");
        }
    }
}
