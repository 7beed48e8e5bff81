//! `maas-vip import`: reads the files for the `import` crate and prints what it gives.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use import::{import_with, route_source, ImportError};

/// Reads the files, prints the TOML on stdout and the notes on stderr. Exit code 0 when a
/// config was produced (notes or not), 2 when a file is unreadable or malformed.
pub(crate) fn run(
    keepalived: Option<&Path>,
    haproxy: Option<&Path>,
    peers: &[PathBuf],
) -> ExitCode {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ImportError::Read {
            file: p.to_owned(),
            source,
        })
    };
    let result = (|| {
        let k = keepalived.map(read).transpose()?;
        let h = haproxy.map(read).transpose()?;
        let texts = peers
            .iter()
            .map(|p| read(p))
            .collect::<Result<Vec<_>, _>>()?;
        let peers: Vec<(&Path, &str)> = peers
            .iter()
            .map(PathBuf::as_path)
            .zip(texts.iter().map(String::as_str))
            .collect();
        import_with(
            keepalived.zip(k.as_deref()),
            haproxy.zip(h.as_deref()),
            &peers,
            &route_source,
        )
    })();
    match result {
        Ok(imported) => {
            for n in &imported.notes {
                eprintln!("note: {n}");
            }
            print!("{}", imported.toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("maas-vip import: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE_KEEPALIVED: &str =
        include_str!("../../tests/fixtures/import/guide-keepalived.conf");

    #[test]
    fn run_reports_unreadable_files() {
        let code = run(Some(Path::new("/nonexistent/keepalived.conf")), None, &[]);
        assert_eq!(format!("{code:?}"), format!("{:?}", ExitCode::from(2)));
        let dir = tempfile::tempdir().expect("tempdir");
        let k = dir.path().join("keepalived.conf");
        std::fs::write(&k, GUIDE_KEEPALIVED).expect("write");
        assert_eq!(
            format!("{:?}", run(Some(&k), None, &[])),
            format!("{:?}", ExitCode::SUCCESS)
        );
    }
}
