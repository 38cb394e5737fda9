//! One trainer per run directory: an exclusive `flock` on `RUN/run.lock`, held for the whole process.
//!
//! The kernel drops an flock when its process dies, however it dies, so a SIGKILLed run never leaves a
//! stale lock; the file (with the last holder's PID, for the message) stays behind and is harmless.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// File name of the lock inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

/// Why a run directory's lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another trainer holds it.
    #[error(
        "{} is in use: {holder} is training it (lock {}); one trainer per run directory — \
         wait for it to end or stop it first",
        dir.display(),
        lock.display()
    )]
    Held {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it (`process PID`).
        holder: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file cannot be opened or written.
    #[error("{}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// flock failed for another reason than a holder.
    #[error("{}: cannot lock", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl RunLock {
    /// Take the lock of run directory `dir` (which must exist), or say which process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Lock { path, source: err });
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process (starting; PID not written yet)".to_string(),
            };
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder,
                lock: path,
            });
        }
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|_| file.flush());
        written.map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in the same process conflicts.
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        assert!(e.contains("in use"), "{e}");
        drop(held);
        RunLock::acquire(dir.path()).unwrap();
    }
}
