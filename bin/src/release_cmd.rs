//! `maas-vip release-vips`: the unit's `ExecStopPost=` (see [`vrrp::release_vips`]).

use std::path::Path;
use std::process::ExitCode;

/// How the service ended, from the variables systemd gives `ExecStopPost=` commands:
/// "killed (KILL)", "exited (1)"; `None` when not run by systemd or after a clean stop.
fn how_it_ended() -> Option<String> {
    let result = std::env::var("SERVICE_RESULT").ok()?;
    if result == "success" {
        return None;
    }
    let code = std::env::var("EXIT_CODE").unwrap_or_default();
    let status = std::env::var("EXIT_STATUS").unwrap_or_default();
    Some(format!("{result}: {code} {status}").trim().to_string())
}

/// Runs it; prints what it removed.
pub(crate) fn run(config: &Path) -> ExitCode {
    let configs = match config::load(config) {
        Ok((c, _)) => Some(
            c.vrrp
                .into_iter()
                .map(vrrp::VrrpConfig::from)
                .collect::<Vec<_>>(),
        ),
        Err(report) => {
            // The marks are enough on current kernels; the config is only the fallback.
            eprintln!(
                "maas-vip release-vips: {} cannot be used ({} error(s)); going by the marks \
                 maas-vip sets on its addresses",
                config.display(),
                report.errors()
            );
            None
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("maas-vip release-vips: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ended = how_it_ended().map_or_else(String::new, |h| format!(" (maas-vip ended: {h})"));
    match rt.block_on(vrrp::release_vips(configs.as_deref())) {
        Ok((ownership, released)) => {
            let how = match ownership {
                vrrp::Ownership::Marked => "marked as maas-vip's",
                vrrp::Ownership::ConfigVips => "VIPs of the config (this kernel keeps no marks)",
            };
            if released.is_empty() {
                println!("maas-vip release-vips: no virtual address left to remove{ended}");
            }
            for r in &released {
                println!(
                    "maas-vip release-vips: removed {}/{} from {} ({how}){ended}",
                    r.addr, r.prefix, r.interface
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("maas-vip release-vips: {e}");
            ExitCode::from(1)
        }
    }
}
