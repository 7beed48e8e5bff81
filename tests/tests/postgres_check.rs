//! The PostgreSQL check (healthcheck::postgres) against real PostgreSQL 15 servers: a primary
//! and its streaming standby, a promotion, the three login methods, and peers that are not
//! PostgreSQL at all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use healthcheck::postgres::{
    self, AuthFailure, Exchange, Password, PgCheck, PgResult, ProtocolError, Require, Role,
    SqlState,
};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use maas_vip_tests::postgres::{self as pg, Auth, Options, PgCluster, CHECK_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(5);

fn check(cluster: &PgCluster) -> PgCheck {
    PgCheck::new(CHECK_USER, "postgres")
        .expect("valid names")
        .with_password(Password::from_file(cluster.password_file()).expect("password file"))
}

async fn probe(addr: SocketAddr, check: &PgCheck) -> PgResult {
    postgres::probe(addr, check, TIMEOUT).await
}

/// Probes until the result is `want` (10 s at most); the last result.
async fn until(addr: SocketAddr, check: &PgCheck, want: PgResult) -> PgResult {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = probe(addr, check).await;
        if r == want || Instant::now() >= end {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const STANDBY_FOR_PRIMARY: PgResult = PgResult::WrongRole {
    role: Role::Standby,
    require: Require::Primary,
};

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
async fn a_primary_and_its_standby_are_told_apart() {
    let bin = pg::require("a_primary_and_its_standby_are_told_apart");
    let cluster = PgCluster::start(
        &bin,
        &Options {
            standby: true,
            ..Options::default()
        },
    );
    let (a, b) = (cluster.server(0).addr(), cluster.server(1).addr());
    assert_eq!(cluster.server(1).in_recovery(), Ok(true));
    // From in_hot_standby at startup, and from SELECT pg_is_in_recovery(): the same answers.
    for always_query in [false, true] {
        let primary = check(&cluster).with_always_query(always_query);
        assert_eq!(probe(a, &primary).await, PgResult::Up(Role::Primary));
        let r = probe(b, &primary).await;
        assert_eq!(r, STANDBY_FOR_PRIMARY);
        assert_eq!(r.to_string(), "standby (in recovery)");
        assert!(!r.passed());

        let standby = primary.clone().with_require(Require::Standby);
        assert_eq!(probe(b, &standby).await, PgResult::Up(Role::Standby));
        assert_eq!(
            probe(a, &standby).await,
            PgResult::WrongRole {
                role: Role::Primary,
                require: Require::Standby
            }
        );
        let any = primary.with_require(Require::Any);
        assert_eq!(probe(a, &any).await, PgResult::Up(Role::Primary));
        assert_eq!(probe(b, &any).await, PgResult::Up(Role::Standby));
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
async fn roles_follow_a_promotion_and_a_rejoin() {
    let bin = pg::require("roles_follow_a_promotion_and_a_rejoin");
    let mut cluster = PgCluster::start(
        &bin,
        &Options {
            standby: true,
            ..Options::default()
        },
    );
    let c = check(&cluster);
    let (a, b) = (cluster.server(0).addr(), cluster.server(1).addr());
    assert_eq!(probe(b, &c).await, STANDBY_FOR_PRIMARY);
    assert!(
        cluster.write(b, "to the standby").is_err(),
        "a standby takes no write"
    );

    cluster.server_mut(1).promote();
    let primary = PgResult::Up(Role::Primary);
    assert_eq!(until(b, &c, primary).await, primary);
    // Until it is stopped the old primary is a primary too: two servers pass the check.
    assert_eq!(probe(a, &c).await, primary);
    cluster
        .write(b, "to the new primary")
        .expect("a write to the new primary");

    cluster.server_mut(0).stop();
    assert_eq!(probe(a, &c).await, PgResult::Refused);
    assert!(probe(a, &c).await.is_unreachable());

    cluster.rejoin_as_standby(0, 1);
    assert_eq!(until(a, &c, STANDBY_FOR_PRIMARY).await, STANDBY_FOR_PRIMARY);
    assert_eq!(probe(b, &c).await, primary);
    assert!(cluster.write(a, "to the old primary").is_err());
    cluster
        .write(b, "again")
        .expect("a write to the new primary");
    // The rows written to b reached a by streaming.
    let rows = cluster
        .server(0)
        .psql(&format!("SELECT count(*) FROM {}", pg::WRITE_TABLE));
    assert_eq!(rows.as_deref().map(str::trim), Ok("2"));
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
async fn md5_logins() {
    let bin = pg::require("md5_logins");
    let cluster = PgCluster::start(
        &bin,
        &Options {
            auth: Auth::Md5,
            ..Options::default()
        },
    );
    // The password is stored as an MD5 hash, so the server asks for MD5 (a SCRAM verifier
    // would make it run SCRAM).
    let stored = cluster.server(0).psql(&format!(
        "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = '{CHECK_USER}'"
    ));
    assert_eq!(stored.as_deref().map(str::trim), Ok("md5"));
    let a = cluster.server(0).addr();
    assert_eq!(
        probe(a, &check(&cluster)).await,
        PgResult::Up(Role::Primary)
    );
    let bare = PgCheck::new(CHECK_USER, "postgres").expect("valid");
    assert_eq!(
        probe(a, &bare).await,
        PgResult::AuthFailed(AuthFailure::NoPassword)
    );
    let wrong = bare.with_password(Password::new("not the password"));
    assert_eq!(
        probe(a, &wrong).await,
        PgResult::AuthFailed(AuthFailure::Rejected(SqlState::INVALID_PASSWORD))
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
async fn trust_logins() {
    let bin = pg::require("trust_logins");
    let cluster = PgCluster::start(
        &bin,
        &Options {
            auth: Auth::Trust,
            ..Options::default()
        },
    );
    let a = cluster.server(0).addr();
    let bare = PgCheck::new(CHECK_USER, "postgres").expect("valid");
    assert_eq!(probe(a, &bare).await, PgResult::Up(Role::Primary));
    // A password the server never asks for does no harm.
    assert_eq!(
        probe(a, &check(&cluster)).await,
        PgResult::Up(Role::Primary)
    );
}

/// Lines of the server log from the check's sessions.
fn check_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(&format!("{CHECK_USER}@postgres/maas-vip-check")))
        .collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
async fn sessions_end_with_a_terminate_and_refusals_are_told_apart() {
    let bin = pg::require("sessions_end_with_a_terminate_and_refusals_are_told_apart");
    let cluster = PgCluster::start(
        &bin,
        &Options {
            // DEBUG1 shows "unexpected EOF on client connection" for a session closed without
            // a Terminate; disconnections mark each session's end.
            extra_conf: vec![
                "log_min_messages = debug1".into(),
                "log_connections = on".into(),
                "log_disconnections = on".into(),
            ],
            ..Options::default()
        },
    );
    let server = cluster.server(0);
    let a = server.addr();
    let c = check(&cluster);
    for always_query in [false, true, false] {
        let c = c.clone().with_always_query(always_query);
        assert_eq!(probe(a, &c).await, PgResult::Up(Role::Primary));
    }
    let ended = |log: &str, n: usize| {
        check_lines(log)
            .iter()
            .filter(|l| l.contains("disconnection: session time"))
            .count()
            >= n
    };
    assert!(
        maas_vip_tests::netns::wait_for(Duration::from_secs(10), || ended(&server.log(), 3))
            .is_some(),
        "three check sessions ended:\n{}",
        server.log()
    );
    let log = server.log();
    let lines = check_lines(&log);
    assert!(
        log.contains(
            "connection authorized: user=maas_check database=postgres application_name=maas-vip-check"
        ),
        "{log}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("unexpected EOF")),
        "a check session ended without a Terminate:\n{log}"
    );

    // The control: the same conversation, its socket dropped instead of the Terminate sent.
    let mut s = TcpStream::connect(a).await.expect("connect");
    let mut x = Exchange::new(&c);
    let mut buf = [0u8; 4096];
    let result = loop {
        s.write_all(&x.take_output()).await.expect("write");
        let n = s.read(&mut buf).await.expect("read");
        assert_ne!(n, 0, "closed early");
        if let Some(r) = x.received(&buf[..n]) {
            break r;
        }
    };
    assert_eq!(result, PgResult::Up(Role::Primary));
    drop(s);
    assert!(
        maas_vip_tests::netns::wait_for(Duration::from_secs(10), || {
            check_lines(&server.log())
                .iter()
                .any(|l| l.contains("unexpected EOF on client connection"))
        })
        .is_some(),
        "the server logs a session dropped without a Terminate:\n{}",
        server.log()
    );

    // Refusals: no such database; no pg_hba.conf line for the user; a database it may not
    // connect to.
    let nodb = PgCheck::new(CHECK_USER, "no_such_db")
        .expect("valid")
        .with_password(Password::from_file(cluster.password_file()).expect("file"));
    assert_eq!(
        probe(a, &nodb).await,
        PgResult::ServerError(SqlState::INVALID_CATALOG_NAME)
    );
    let stranger = PgCheck::new("stranger", "postgres").expect("valid");
    let r = probe(a, &stranger).await;
    assert_eq!(
        r,
        PgResult::AuthFailed(AuthFailure::Rejected(SqlState::INVALID_AUTHORIZATION))
    );
    assert_eq!(r.code(), "pg_auth_failed");
    for sql in [
        "CREATE DATABASE closed",
        "REVOKE CONNECT ON DATABASE closed FROM PUBLIC",
    ] {
        server.psql(sql).expect("create database");
    }
    let closed = PgCheck::new(CHECK_USER, "closed")
        .expect("valid")
        .with_password(Password::from_file(cluster.password_file()).expect("file"));
    assert_eq!(
        probe(a, &closed).await,
        PgResult::ServerError(SqlState::parse(b"42501").expect("valid"))
    );
}

/// An HTTP/1.1 server (hyper) answering 200 to every request it can parse.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<_>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn peers_that_are_not_postgres() {
    let c = PgCheck::new(CHECK_USER, "postgres")
        .expect("valid")
        .with_password(Password::new("pw"));
    let http = http_server().await;
    let r = probe(http, &c).await;
    assert_eq!(r, PgResult::NotPostgres(ProtocolError::Http));
    assert_eq!(r.to_string(), "not PostgreSQL: an HTTP server answered");
    assert_eq!(r.code(), "pg_protocol_error");

    assert_eq!(
        probe(maas_vip_tests::refused_addr(), &c).await,
        PgResult::Refused
    );

    let silent = maas_vip_tests::silent_server().await;
    let t0 = Instant::now();
    let r = postgres::probe(silent, &c, Duration::from_millis(300)).await;
    assert_eq!(r, PgResult::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    let (hole, _listener, _filler) = maas_vip_tests::blackhole_addr();
    let r = postgres::probe(hole, &c, Duration::from_millis(300)).await;
    assert_eq!(r, PgResult::ConnectTimeout);

    // A server that reads the StartupMessage and closes.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closer = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    assert_eq!(probe(closer, &c).await, PgResult::Closed);
}

#[test]
#[ignore = "needs PostgreSQL server binaries (Debian package postgresql)"]
fn the_cluster_is_gone_after_drop_and_after_a_panic() {
    let bin = pg::require("the_cluster_is_gone_after_drop_and_after_a_panic");
    let cluster = PgCluster::start(&bin, &Options::default());
    let (root, addr) = (cluster.root().to_path_buf(), cluster.server(0).addr());
    assert!(root.exists());
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "{addr} still answers"
    );

    let seen = std::sync::Mutex::new(None);
    let panicked = std::panic::catch_unwind(|| {
        let cluster = PgCluster::start(&bin, &Options::default());
        *seen.lock().expect("not poisoned") =
            Some((cluster.root().to_path_buf(), cluster.server(0).addr()));
        panic!("a failing test");
    });
    assert!(panicked.is_err());
    let (root, addr) = seen
        .into_inner()
        .expect("not poisoned")
        .expect("the cluster started");
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "{addr} still answers"
    );
}
