//! The checkpoint key's files in the ledger's state directory, and their rotation.
//!
//! `checkpoint.key` is the signing key (PKCS#8, mode 0600), `checkpoint.vkey` its public
//! verifier key for auditors. `attestor ledger rotate-key` writes the next key to
//! `checkpoint.key.next`; on SIGHUP the running ledger records the transition (signed by
//! both keys) in its store, then renames the old key to `checkpoint.key.retired-<key ID>`
//! and the next one to `checkpoint.key`. A crash between the two steps is finished at the
//! next start, since the store's key history names the pending key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use attestor_verify::fs::{sync_dir, write_atomically, WriteError};
use thiserror::Error;

use crate::log::sequencer::SequencerError;
use crate::store::{LedgerStore, StoreError};
use attestor_verify::ear::{EarError, EarSigner};
use attestor_verify::log::checkpoint::{CheckpointError, CheckpointSigner, NoteKeyAlgorithm};
use attestor_verify::log::keys::{KeyError, KeyHistory};

/// The signing key.
pub const KEY_FILE: &str = "checkpoint.key";
/// The next signing key, waiting for the running ledger to take it (SIGHUP).
pub const NEXT_KEY_FILE: &str = "checkpoint.key.next";
/// The current verifier key, published for auditors.
pub const VKEY_FILE: &str = "checkpoint.vkey";
/// The key EARs are signed with (PKCS#8, ES384); its public half is served as a JWKS.
pub const EAR_KEY_FILE: &str = "ear.key";

/// Why a key file cannot be read, written or rotated.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint key: {0}")]
    Key(#[from] CheckpointError),
    #[error("key history: {0}")]
    History(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rotate(#[from] SequencerError),
    #[error("{0} exists: a rotation is pending; reload the ledger (SIGHUP) to complete it")]
    Pending(PathBuf),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("EAR key: {0}")]
    Ear(#[from] EarError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a new key file (mode 0600, fsynced); refuses to replace one.
fn write_new_key(path: &Path, signer: &CheckpointSigner) -> Result<(), KeyFileError> {
    write_new_secret(path, &signer.to_pkcs8()?)
}

fn write_new_secret(path: &Path, pkcs8: &[u8]) -> Result<(), KeyFileError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(pkcs8).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Loads the EAR signing key, creating it on first start. Replicas of one log share it
/// (copy it with `checkpoint.key`), so an EAR verifies whichever replica judged.
pub fn load_or_create_ear_key(dir: &Path) -> Result<EarSigner, KeyFileError> {
    let path = dir.join(EAR_KEY_FILE);
    match std::fs::read(&path) {
        Ok(pkcs8) => Ok(EarSigner::from_pkcs8(&pkcs8)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = EarSigner::generate()?;
            write_new_secret(&path, &signer.to_pkcs8()?)?;
            sync_dir(&path)?;
            Ok(signer)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

fn read_key(path: &Path, origin: &str) -> Result<Option<CheckpointSigner>, KeyFileError> {
    match std::fs::read(path) {
        Ok(pkcs8) => Ok(Some(CheckpointSigner::from_pkcs8(origin, &pkcs8)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Loads the signing key, creating it on first start; first completes a rotation a crash
/// interrupted (the store already names the next key).
pub fn load_or_create(
    dir: &Path,
    origin: &str,
    algorithm: NoteKeyAlgorithm,
    store: &dyn LedgerStore,
) -> Result<CheckpointSigner, KeyFileError> {
    if let Some(next) = read_key(&dir.join(NEXT_KEY_FILE), origin)? {
        let transitions = store.key_transitions()?;
        let recorded = transitions.last().is_some_and(|last| {
            KeyHistory::follow(&next.verifier_key(), std::slice::from_ref(last))
                .is_ok_and(|h| h.newest() == next.verifier_key())
        });
        if recorded {
            promote(dir, origin, &next.verifier_key())?;
        }
    }
    let path = dir.join(KEY_FILE);
    match read_key(&path, origin)? {
        Some(signer) => Ok(signer),
        None => {
            let signer = CheckpointSigner::generate_with(origin, algorithm)?;
            write_new_key(&path, &signer)?;
            Ok(signer)
        }
    }
}

/// The verifier key of the state directory's signing key, if there is one.
pub fn current_vkey(dir: &Path, origin: &str) -> Result<Option<String>, KeyFileError> {
    Ok(read_key(&dir.join(KEY_FILE), origin)?.map(|k| k.verifier_key()))
}

/// Generates the next key (of `algorithm`: a rotation is how a log moves to Ed25519) into
/// `checkpoint.key.next`; returns its verifier key.
pub fn prepare_rotation(
    dir: &Path,
    origin: &str,
    algorithm: NoteKeyAlgorithm,
) -> Result<String, KeyFileError> {
    let path = dir.join(NEXT_KEY_FILE);
    if path.exists() {
        return Err(KeyFileError::Pending(path));
    }
    let signer = CheckpointSigner::generate_with(origin, algorithm)?;
    write_new_key(&path, &signer)?;
    Ok(signer.verifier_key())
}

/// The pending next key, if `rotate-key` prepared one.
pub fn pending(dir: &Path, origin: &str) -> Result<Option<CheckpointSigner>, KeyFileError> {
    read_key(&dir.join(NEXT_KEY_FILE), origin)
}

/// Makes the next key the current one on disk, keeping the old one as retired (the
/// operator archives or destroys it; the ledger never reads it again).
pub fn promote(dir: &Path, origin: &str, next_vkey: &str) -> Result<(), KeyFileError> {
    let (key, next_path) = (dir.join(KEY_FILE), dir.join(NEXT_KEY_FILE));
    if let Some(old) = read_key(&key, origin)? {
        let retired = dir.join(format!("{KEY_FILE}.retired-{:08x}", old.key_id()));
        std::fs::rename(&key, &retired).map_err(io(&retired))?;
    }
    std::fs::rename(&next_path, &key).map_err(io(&key))?;
    sync_dir(&key)?;
    write_vkey(dir, next_vkey)
}

/// Publishes the verifier key beside the state for auditors.
pub fn write_vkey(dir: &Path, vkey: &str) -> Result<(), KeyFileError> {
    Ok(write_atomically(
        &dir.join(VKEY_FILE),
        format!("{vkey}\n").as_bytes(),
    )?)
}
