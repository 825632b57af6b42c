//! Runs a configured check command: no shell, no input, bounded in time (killed past its
//! timeout) and in the output kept.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// The most bytes of a command's standard output kept.
const OUTPUT_MAX_BYTES: u64 = 64 * 1024;

/// How a command ended and what it printed (at most 64 KiB of it).
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
}

/// Runs `command` (program and arguments) within `timeout`; the error is a lowercase fragment
/// naming the program.
pub async fn run(command: &[String], timeout: Duration) -> Result<Finished, String> {
    let Some((program, arguments)) = command.split_first() else {
        return Err("empty command".to_string());
    };
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let stdout = child.stdout.take();
    let finish = async {
        let mut output = Vec::new();
        if let Some(stdout) = stdout {
            // Whatever is past the limit is left unread; the process may then block and be
            // killed by the timeout, which is the right end for a runaway check.
            stdout
                .take(OUTPUT_MAX_BYTES)
                .read_to_end(&mut output)
                .await
                .map_err(|error| format!("{program}: {error}"))?;
        }
        let status = child
            .wait()
            .await
            .map_err(|error| format!("{program}: {error}"))?;
        Ok(Finished {
            status,
            stdout: String::from_utf8_lossy(&output).into_owned(),
        })
    };
    tokio::time::timeout(timeout, finish)
        .await
        .map_err(|_| format!("{program} did not finish within {timeout:?}"))?
}
