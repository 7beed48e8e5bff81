//! Invariants shared by the importer targets.

use std::path::Path;

use import::{ImportError, Imported};

/// What an import gave: either a config that is valid TOML with only known keys, or a syntax
/// error naming a line.
pub(crate) fn check(result: Result<Imported, ImportError>) {
    match result {
        Ok(imported) => {
            if let Err(e) = toml::de::DeTable::parse(&imported.toml) {
                panic!(
                    "import produced invalid TOML: {e}\n---\n{}\n---",
                    imported.toml
                );
            }
            // The output is meant for `maas-vip check`: its values may be refused (the
            // importer carries over what the source says), its key names may not.
            let report = match config::parse(Path::new("imported.toml"), imported.toml.clone()) {
                Ok((_, r)) | Err(r) => r,
            };
            for f in &report.findings {
                assert!(
                    !f.message.contains("unknown field"),
                    "import produced a key that maas-vip.toml does not know: {}\n---\n{}\n---",
                    f.message,
                    imported.toml
                );
            }
            let _ = report.to_string();
        }
        Err(ImportError::Syntax { line, message, .. }) => {
            assert!(line >= 1, "line 0: {message}");
        }
        Err(e) => panic!("unexpected import error: {e}"),
    }
}
