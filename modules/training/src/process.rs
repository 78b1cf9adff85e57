//! The local executor's processes: each attempt runs as the leader of its
//! own process group, so a timeout, a cancel or a restart kills the whole
//! tree the step started (children and grandchildren that stay in the group).
//! Linux only: the group's members are read from `/proc`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// argv.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Where stdout goes (appended).
    pub stdout: PathBuf,
    /// Where stderr goes (appended).
    pub stderr: PathBuf,
}

/// A started attempt.
#[derive(Debug)]
pub struct Started {
    /// The child (the group's leader).
    pub child: tokio::process::Child,
    /// Its process group id (= its pid).
    pub pgid: i32,
    /// Its start time in clock ticks since boot, against pid reuse.
    pub start: Option<i64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (from outside the executor).
    Signal(i32),
}

/// Starts `launch` as the leader of a new process group, its output
/// appended to the log files.
pub fn spawn(launch: &Launch) -> std::io::Result<Started> {
    let append = |path: &PathBuf| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(&launch.env)
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(append(&launch.stdout)?))
        .stderr(Stdio::from(append(&launch.stderr)?))
        .process_group(0)
        .kill_on_drop(false);
    let child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the child exited before its pid was read"))?
        as i32;
    Ok(Started {
        child,
        pgid: pid,
        start: start_time(pid),
    })
}

/// Waits for the leader to exit.
pub async fn wait(child: &mut tokio::process::Child) -> std::io::Result<Exit> {
    use std::os::unix::process::ExitStatusExt;
    let status = child.wait().await?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    })
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`), if it runs.
pub fn start_time(pid: i32) -> Option<i64> {
    stat_fields(pid).and_then(|f| f.get(19).and_then(|s| s.parse().ok()))
}

/// The fields of `/proc/<pid>/stat` after the command name: state first.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The live (not zombie) processes of group `pgid`.
pub fn members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            stat_fields(*pid).is_some_and(|f| {
                f.first().is_some_and(|state| state != "Z")
                    && f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            })
        })
        .collect()
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of this process.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Ends every process of group `pgid`: SIGTERM, then SIGKILL after `grace`,
/// then waits (bounded) until none is left; true when none is.
pub async fn kill_group(pgid: i32, grace: Duration) -> bool {
    signal_group(pgid, libc::SIGTERM);
    if gone_within(pgid, grace).await {
        return true;
    }
    signal_group(pgid, libc::SIGKILL);
    gone_within(pgid, Duration::from_secs(10)).await
}

async fn gone_within(pgid: i32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if members(pgid).is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// After a restart: kills what is left of an attempt's group, unless its
/// leader's pid now belongs to another process (a different start time).
/// True when nothing of the attempt runs any more.
pub async fn reap_orphans(pgid: i32, start: Option<i64>) -> bool {
    if let (Some(now), Some(then)) = (start_time(pgid), start) {
        if now != then {
            return true;
        }
    }
    if members(pgid).is_empty() {
        return true;
    }
    signal_group(pgid, libc::SIGKILL);
    gone_within(pgid, Duration::from_secs(10)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &std::path::Path, script: &str) -> Launch {
        Launch {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::new(),
            cwd: dir.to_path_buf(),
            stdout: dir.join("stdout.log"),
            stderr: dir.join("stderr.log"),
        }
    }

    #[tokio::test]
    async fn output_goes_to_the_logs_and_the_code_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut started = spawn(&launch(dir.path(), "echo out; echo err >&2; exit 3")).unwrap();
        assert_eq!(wait(&mut started.child).await.unwrap(), Exit::Code(3));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdout.log")).unwrap(),
            "out\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap(),
            "err\n"
        );
    }

    #[tokio::test]
    async fn killing_the_group_ends_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        // A grandchild that ignores SIGTERM, in the background.
        let started = spawn(&launch(
            dir.path(),
            "sh -c 'trap \"\" TERM; sleep 600' & echo $! > child.pid; wait",
        ))
        .unwrap();
        let pid_file = dir.path().join("child.pid");
        for _ in 0..400 {
            if std::fs::read_to_string(&pid_file).is_ok_and(|t| !t.trim().is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(members(started.pgid).len() >= 2);
        assert!(kill_group(started.pgid, Duration::from_millis(200)).await);
        assert!(members(started.pgid).is_empty());
    }
}
