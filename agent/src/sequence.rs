//! The report sequence number, persisted so that it keeps growing across agent restarts: the
//! collector acknowledges by sequence and ignores a number it already holds.
//!
//! The file holds the last number issued. It is replaced atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory) before the report with that number
//! leaves the agent, so a crash or power cut at any instant leaves either the old or the new
//! number, never a torn one, and a number is never issued twice.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read sequence file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sequence file {path} is corrupt ({content:?}); move it away to start again at 1")]
    Corrupt { path: PathBuf, content: String },
    #[error("cannot write sequence file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Sequence {
    path: PathBuf,
    last: u64,
}

impl Sequence {
    /// Opens the counter in `state_dir`, creating the directory when absent.
    pub fn open(state_dir: &Path) -> Result<Self, SequenceError> {
        std::fs::create_dir_all(state_dir).map_err(|source| SequenceError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join("sequence");
        let last = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| SequenceError::Corrupt {
                    path: path.clone(),
                    content: text.chars().take(40).collect(),
                })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(SequenceError::Read { path, source }),
        };
        Ok(Sequence { path, last })
    }

    /// Issues the next number, durably recorded before it is returned.
    pub fn issue(&mut self) -> Result<u64, SequenceError> {
        let next = self.last + 1;
        self.store(next).map_err(|source| SequenceError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.last = next;
        Ok(next)
    }

    fn store(&self, value: u64) -> std::io::Result<()> {
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(format!("{value}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(directory) = self.path.parent() {
            std::fs::File::open(directory)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_growing_across_reopens() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let mut sequence = Sequence::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(sequence.issue().ok(), Some(1));
        assert_eq!(sequence.issue().ok(), Some(2));
        let mut again = Sequence::open(dir.path()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(again.issue().ok(), Some(3));
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(dir.path().join("sequence"), "12x")
            .unwrap_or_else(|error| panic!("{error}"));
        let error = Sequence::open(dir.path())
            .err()
            .map(|error| error.to_string());
        assert!(error.is_some_and(|text| text.contains("is corrupt (\"12x\")")));
    }
}
