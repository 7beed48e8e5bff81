//! A VRRP-only daemon for trying the crate by hand: `vrrpd FILE` with `[[vrrp]]` blocks.
//! The real daemon is `maas-vip run`; this one exists for development.

use std::sync::Arc;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vrrp: Vec<vrrp::VrrpConfig>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let path = std::env::args().nth(1).ok_or("usage: vrrpd FILE")?;
    let text = std::fs::read_to_string(&path)?;
    let file: File = toml::from_str(&text)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = tx.send(true);
    });
    let blocks = file
        .vrrp
        .into_iter()
        .map(vrrp::ValidVrrp::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    vrrp::run(
        blocks,
        Arc::new(|_: &str| Some(true)),
        vrrp::StatusBoard::new(),
        rx,
    )
    .await?;
    Ok(())
}
