//! The agent's state files (JSON, one per concern, written durably): what survives a
//! restart of the agent, for the TPM flow and the SEV-SNP one alike.

use std::path::{Path, PathBuf};

use attestor_verify::fs::{write_atomically, WriteError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Why a state file could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The state in `path`, or `None` if there is none yet.
pub fn read_state<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` to `path` durably (a crash leaves the old or the new file).
pub fn write_state<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(write_atomically(path, &bytes)?)
}

/// Creates the state directory `dir` (and its parents).
pub fn create_state_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}
