//! Durable file writes, for every crate that keeps state on disk (agent state, the VCEK
//! cache, the ledger's key and checkpoint files).

use std::io::Write;
use std::path::Path;

/// Which step of a durable write failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {path}: {source}")]
#[non_exhaustive]
pub struct WriteError {
    /// `create`, `write`, `sync`, `rename` or `sync directory of`.
    pub step: &'static str,
    /// The file written (or whose directory was synced).
    pub path: std::path::PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// Writes via a synced temporary file and a rename, then syncs the directory, so a crash
/// leaves the old or the new file, never a torn one, and a returned write is durable.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let failed = |step| {
        move |source| WriteError {
            step,
            path: path.to_path_buf(),
            source,
        }
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(failed("create"))?;
    file.write_all(bytes).map_err(failed("write"))?;
    file.sync_all().map_err(failed("sync"))?;
    std::fs::rename(&tmp, path).map_err(failed("rename"))?;
    sync_dir(path)
}

/// fsyncs the directory holding `path`, making a rename or removal in it durable.
pub fn sync_dir(path: &Path) -> Result<(), WriteError> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| WriteError {
                step: "sync directory of",
                path: path.to_path_buf(),
                source,
            }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_names_the_failed_step() {
        let dir = tempfile_dir();
        let path = dir.join("state.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
        let missing = dir.join("no/such/dir/file");
        let e = write_atomically(&missing, b"x").unwrap_err();
        assert_eq!(e.step, "create");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "attestor-fs-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
