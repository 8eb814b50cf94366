//! One owner per run folder.
//!
//! A run holds an exclusive lock on `<out>/.lock` for its whole life (the operating system's
//! advisory file lock, released when the process ends, also on a crash or `kill -9`), so two
//! runs can never write the same folder. The rules, checked when a run starts:
//!
//! * a fresh run (no `--resume`) needs an empty folder (or one holding only the lock file);
//!   `--force` starts over in a used folder, removing the files a previous run wrote there;
//! * `--resume FILE` continues in the folder that holds `FILE`; pointing `--out` at another
//!   non-empty folder is refused;
//! * stray temporary files of interrupted atomic writes (`.NAME.tmp-PID`) are removed.
//!
//! Evaluation (`-e`) writes nothing and takes no lock.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use edmips_core::error::{Error, Result};

/// The name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// The files (besides per-epoch checkpoints) an edmips run writes into its folder; `--force`
/// removes these and nothing else.
pub const RUN_FILES: [&str; 7] = [
    "config.resolved.toml",
    "metrics.jsonl",
    "arch.json",
    "curves.svg",
    "arch.svg",
    "checkpoint.safetensors",
    "best.safetensors",
];

/// A run folder owned by this process until dropped.
#[derive(Debug)]
pub struct RunFolder {
    path: PathBuf,
    _lock: File,
}

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

fn is_epoch_checkpoint(name: &str) -> bool {
    name.strip_prefix("checkpoint_ep")
        .and_then(|r| r.strip_suffix(".safetensors"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

impl RunFolder {
    /// Takes ownership of `out` for a run (see the [module docs](self)): creates it, locks it,
    /// checks it may be used, and removes stray temporary files.
    pub fn acquire(out: &Path, resume: Option<&Path>, force: bool) -> Result<Self> {
        std::fs::create_dir_all(out).map_err(|e| Error::io("creating run folder", out, e))?;
        let lock_path = out.join(LOCK_FILE);
        let mut lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening the run-folder lock", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                let holder = holder.trim();
                let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
                return Err(Error::msg(format!(
                    "run folder `{}` is in use by another edmips run{who}; wait for it to finish or choose another --out",
                    out.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking run folder", &lock_path, e)),
        }
        let _ = lock.set_len(0).and_then(|_| write!(lock, "{}", std::process::id()));

        let mut entries = Vec::new();
        for e in std::fs::read_dir(out).map_err(|e| Error::io("listing run folder", out, e))? {
            let name = e.map_err(|e| Error::io("listing run folder", out, e))?.file_name();
            let name = name.to_string_lossy().into_owned();
            if name == LOCK_FILE {
                continue;
            }
            if is_temporary(&name) {
                let _ = std::fs::remove_file(out.join(&name));
                continue;
            }
            entries.push(name);
        }
        entries.sort();
        let resumes_here = resume.is_some_and(|r| r.parent().is_some_and(|p| same_dir(p, out)));
        if !entries.is_empty() && !resumes_here {
            if force && resume.is_none() {
                for name in &entries {
                    if RUN_FILES.contains(&name.as_str()) || is_epoch_checkpoint(name) {
                        let p = out.join(name);
                        std::fs::remove_file(&p).map_err(|e| Error::io("removing (--force)", &p, e))?;
                    }
                }
            } else {
                let shown = if entries.len() > 5 {
                    format!("{}, ... ({} entries)", entries[..5].join(", "), entries.len())
                } else {
                    entries.join(", ")
                };
                let how = match resume {
                    Some(r) => format!(
                        "--resume `{}` belongs to another folder; leave out --out to continue in it",
                        r.display()
                    ),
                    None => format!(
                        "continue it with --resume {}, choose another --out, or pass --force to start over in it",
                        out.join("checkpoint.safetensors").display()
                    ),
                };
                return Err(Error::msg(format!(
                    "run folder `{}` is not empty (it holds {shown}): {how}",
                    out.display()
                )));
            }
        }
        Ok(RunFolder { path: out.to_path_buf(), _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edmips-runfolder-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn one_owner_and_no_fresh_run_over_old_outputs() {
        let d = tmp("owner");
        let a = RunFolder::acquire(&d, None, false).unwrap();
        let e = RunFolder::acquire(&d, None, false).unwrap_err().to_string();
        assert!(e.contains("in use by another edmips run"), "{e}");
        drop(a);
        std::fs::write(d.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(d.join(".arch.json.tmp-123"), "x").unwrap();
        let e = RunFolder::acquire(&d, None, false).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("--force") && e.contains("--resume"), "{e}");
        assert!(!d.join(".arch.json.tmp-123").exists(), "stray temporary files are removed");
        let ck = d.join("checkpoint.safetensors");
        std::fs::write(&ck, "x").unwrap();
        drop(RunFolder::acquire(&d, Some(&ck), false).unwrap());
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        drop(RunFolder::acquire(&d, None, true).unwrap());
        assert!(!d.join("metrics.jsonl").exists() && !ck.exists());
        assert!(d.join("notes.txt").exists(), "--force removes only run outputs");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
