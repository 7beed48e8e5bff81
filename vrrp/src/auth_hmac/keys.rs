//! Loading HMAC keys from files and systemd credentials.
//!
//! A key file holds what keepalived 2.4's `key ID VALUE` takes: `hex:` and hex digits (spaces
//! and tabs allowed between them), or else the key itself as bytes; trailing newlines (`\n`,
//! `\r`) are dropped and nothing else. At most 139 bytes are read, as keepalived does.
//!
//! A file anyone but its owner may read, write or run is refused: keepalived reports such a
//! file as a security error (and still uses it); maas-vip does not use it. `chmod 600` it.
//! A systemd credential (`LoadCredential=NAME:PATH` or `LoadCredentialEncrypted=` in the unit)
//! is the file `$CREDENTIALS_DIRECTORY/NAME`, which systemd makes readable by the service
//! alone; the same rules apply to it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Key, KeyError};

/// The environment variable systemd sets for a unit with credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// Longest key file, in bytes (keepalived: `hex:`, 128 digits, 7 bytes of slack).
pub const KEY_FILE_MAX: usize = 139;

/// Why a key could not be loaded. The messages name the file, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file is not there.
    #[error(
        "key file {} does not exist (create it, the same key on every host of the LAN: \
         umask 077; printf 'hex:%s\\n' \"$(openssl rand -hex 32)\" > {})",
        path.display(),
        path.display()
    )]
    Missing { path: PathBuf },
    /// The file cannot be opened or read.
    #[error("key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("key file {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// Group or others have access to it.
    #[error(
        "key file {}: mode {mode:04o} lets group or others at it; refused (chmod 600 {})",
        path.display(),
        path.display()
    )]
    Exposed {
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Longer than [`KEY_FILE_MAX`] bytes.
    #[error("key file {}: longer than {KEY_FILE_MAX} bytes", path.display())]
    TooLarge { path: PathBuf },
    /// `hex:` followed by something else than hex digits.
    #[error(
        "key file {}: `hex:` must be followed by hex digits only (e.g. the 64 that \
         `openssl rand -hex 32` prints)",
        path.display()
    )]
    Hex { path: PathBuf },
    /// The key itself is not usable (length).
    #[error(
        "key file {}: {source} (`hex:` and 64 to 128 hex digits, or 32 to 64 bytes as they are)",
        path.display()
    )]
    Key {
        path: PathBuf,
        /// What is wrong with the key.
        #[source]
        source: KeyError,
    },
    /// A credential name that is not a file name.
    #[error("credential name `{0}` must be a file name (no `/`, not `.` or `..`)")]
    CredentialName(String),
    /// `$CREDENTIALS_DIRECTORY` is not set: not run by systemd with the credential.
    #[error(
        "credential `{name}`: ${CREDENTIALS_DIRECTORY} is not set (run under systemd with \
         LoadCredential={name}:/path/to/key in the unit)"
    )]
    NoCredentialsDirectory {
        /// The credential's name (`LoadCredential=NAME:...`).
        name: String,
    },
    /// The credential is not in `$CREDENTIALS_DIRECTORY`.
    #[error(
        "credential `{name}` is not in {} (is LoadCredential={name}:... in the unit?)",
        dir.display()
    )]
    CredentialMissing {
        /// The credential's name (`LoadCredential=NAME:...`).
        name: String,
        /// `$CREDENTIALS_DIRECTORY`.
        dir: PathBuf,
    },
}

/// Decodes a key value as keepalived does: `hex:` then hex digits, else the bytes themselves.
/// Hex digits go in pairs; spaces and tabs between them are skipped, and a lone digit before a
/// space or the end is one byte (`hex:0 1` is 00 01). keepalived reads the value as a C
/// string: it ends at a NUL byte. `None`: `hex:` with no digits or with another character.
pub fn decode_value(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let value = value.split(|b| *b == 0).next().unwrap_or(&[]);
    let Some(hex) = value.strip_prefix(b"hex:") else {
        return Some(Zeroizing::new(value.to_vec()));
    };
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
    let mut i = 0;
    while i < hex.len() {
        if hex[i] == b' ' || hex[i] == b'\t' {
            i += 1;
            continue;
        }
        let mut v = digit(hex[i])?;
        i += 1;
        if i < hex.len() && hex[i] != b' ' {
            v = v << 4 | digit(hex[i])?;
            i += 1;
        }
        out.push(v);
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Reads key `id` from `path` (see the module docs for the format and the rules).
pub fn load_key_file(id: u8, path: &Path) -> Result<Key, KeyFileError> {
    let read = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            KeyFileError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            read(source)
        }
    })?;
    let meta = f.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if meta.mode() & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(KEY_FILE_MAX + 1));
    f.take(KEY_FILE_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(read)?;
    if buf.len() > KEY_FILE_MAX {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut n = buf.len();
    while n > 0 && (buf[n - 1] == b'\n' || buf[n - 1] == b'\r') {
        n -= 1;
    }
    let bytes = decode_value(&buf[..n]).ok_or_else(|| KeyFileError::Hex {
        path: path.to_path_buf(),
    })?;
    Key::new(id, &bytes).map_err(|source| KeyFileError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// `$CREDENTIALS_DIRECTORY`, if set and not empty.
pub fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Reads key `id` from the systemd credential `name` in `dir` (the value of
/// `$CREDENTIALS_DIRECTORY`, see [`credentials_directory`]; `None` when it is not set).
pub fn load_credential(id: u8, name: &str, dir: Option<&Path>) -> Result<Key, KeyFileError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(KeyFileError::CredentialName(name.to_string()));
    }
    let Some(dir) = dir else {
        return Err(KeyFileError::NoCredentialsDirectory {
            name: name.to_string(),
        });
    };
    let path = dir.join(name);
    match load_key_file(id, &path) {
        Err(KeyFileError::Missing { .. }) => Err(KeyFileError::CredentialMissing {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        }),
        other => other,
    }
}
