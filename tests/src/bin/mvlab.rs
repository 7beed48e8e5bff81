//! The programs that the BGP namespace tests run inside their namespaces (tests/src/bgp.rs):
//!
//! - `mvlab hold IFACE VIP...`: owns the VIP interface through the `announce` crate, the way
//!   maas-vip will: creates it, announces, prints `ready`, then SIGUSR1 withdraws, SIGUSR2
//!   announces again, SIGTERM withdraws and exits. SIGKILL leaves the kernel to clean up,
//!   which is what the fate-sharing test checks.
//! - `mvlab serve ADDR NAME`: a TCP server that writes NAME to every connection and closes.
//! - `mvlab fetch ADDR COUNT`: COUNT connections one after the other (each from a new source
//!   port), printing `{"names":{NAME:n,...},"errors":n}`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use announce::{HostPrefix, VipLink};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("hold") if args.len() >= 3 => hold(&args[1], &args[2..]),
        Some("serve") if args.len() == 3 => serve(&args[1], &args[2]),
        Some("fetch") if args.len() == 3 => fetch(&args[1], &args[2]),
        _ => Err("usage: mvlab hold IFACE VIP... | serve ADDR NAME | fetch ADDR COUNT".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mvlab: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), String>;

fn hold(iface: &str, vips: &[String]) -> Res {
    let vips = vips
        .iter()
        .map(|v| v.parse::<HostPrefix>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
        let mut usr2 = signal(SignalKind::user_defined2()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let link = VipLink::create(iface, &vips)
            .await
            .map_err(|e| e.to_string())?;
        link.announce().await.map_err(|e| e.to_string())?;
        println!("ready {} index {}", link.name(), link.index());
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    link.withdraw().await.map_err(|e| e.to_string())?;
                    println!("withdrawn");
                }
                _ = usr2.recv() => {
                    link.announce().await.map_err(|e| e.to_string())?;
                    println!("announced");
                }
                _ = term.recv() => {
                    link.withdraw().await.map_err(|e| e.to_string())?;
                    println!("withdrawn, exiting");
                    return Ok(());
                }
            }
        }
    })
}

fn serve(addr: &str, name: &str) -> Res {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening {addr}");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.write_all(name.as_bytes());
    }
    Ok(())
}

fn fetch(addr: &str, count: &str) -> Res {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let count: usize = count.parse().map_err(|e| format!("{count}: {e}"))?;
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = 0;
    for _ in 0..count {
        let got = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        });
        match got {
            Ok(n) if !n.is_empty() => *names.entry(n).or_default() += 1,
            _ => errors += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({ "names": names, "errors": errors })
    );
    Ok(())
}
