//! A Slurm array job script for a sweep: one array task per run, each `isoflop sweep run … --only RUN`;
//! and the scheduler's view of a submitted sweep (`squeue`), shown by `isoflop sweep status`.

use super::plan::Plan;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where each array task appends its array job id when it starts (relative to the sweep directory), so
/// `sweep status` finds jobs that `sbatch` was given some other way than `DIR/sweep.sbatch`.
pub const JOBS_FILE: &str = "slurm/jobs";

/// Settings of the generated script.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The isoflop binary the tasks call (absolute path on the cluster's shared filesystem).
    pub bin: PathBuf,
    /// The spec the tasks pass to `sweep run` (the copy saved in the sweep directory).
    pub spec: PathBuf,
    /// The sweep directory (shared filesystem).
    pub out: PathBuf,
    /// Wall-time limit of each task, Slurm syntax (`HH:MM:SS` or `D-HH:MM:SS`).
    pub time: String,
    /// GPUs per task (0 for CPU-only tasks).
    pub gpus: u32,
    /// CPUs per task.
    pub cpus_per_task: Option<u32>,
    /// Memory per task, Slurm syntax (`64G`).
    pub mem: Option<String>,
    /// Slurm partition (`--partition`); none: the cluster's default.
    pub partition: Option<String>,
    /// Slurm account charged (`--account`); none: the user's default.
    pub account: Option<String>,
    /// At most this many tasks at once (`--array=0-N%K`).
    pub max_parallel: Option<usize>,
    /// `--device` of each task's runs (`auto` picks the GPU Slurm assigned).
    pub device: String,
    /// `--checkpoint-every` of each run.
    pub checkpoint_every: u64,
}

/// Quote a string for bash (single quotes).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job script text.
pub fn script(plan: &Plan, o: &SlurmOptions) -> Result<String, String> {
    if plan.runs.is_empty() {
        return Err("the plan has no runs".into());
    }
    let out = o.out.display().to_string();
    if out.contains(char::is_whitespace) {
        return Err(format!(
            "--out {out:?}: Slurm's #SBATCH --output cannot hold whitespace; choose a path without it"
        ));
    }
    let time_ok = !o.time.is_empty()
        && o.time
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '-');
    if !time_ok {
        return Err(format!(
            "--time {:?} is not Slurm time syntax (e.g. 04:00:00 or 1-12:00:00)",
            o.time
        ));
    }
    let last = plan.runs.len() - 1;
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# isoflop sweep {:?}: {} runs, one Slurm array task per run (plan fingerprint {}).",
        plan.name,
        plan.runs.len(),
        &plan.fingerprint[..12.min(plan.fingerprint.len())]
    );
    let _ = writeln!(
        s,
        "# Submit:   sbatch {}",
        sh_quote(&format!("{out}/sweep.sbatch"))
    );
    let _ = writeln!(s, "# Progress: isoflop sweep status {}", sh_quote(&out));
    let _ = writeln!(
        s,
        "# Results:  isoflop sweep export {}   (writes runs.csv and steps.csv there)",
        sh_quote(&out)
    );
    let _ = writeln!(
        s,
        "# A task that is cancelled or times out resumes from its checkpoint when resubmitted:\n\
         #   sbatch --array=<task ids> {}",
        sh_quote(&format!("{out}/sweep.sbatch"))
    );
    let _ = writeln!(s, "#SBATCH --job-name=isoflop-{}", plan.name);
    let _ = writeln!(
        s,
        "#SBATCH --array=0-{last}{}",
        o.max_parallel.map_or(String::new(), |k| format!("%{k}"))
    );
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    if o.gpus > 0 {
        let _ = writeln!(s, "#SBATCH --gpus={}", o.gpus);
    }
    if let Some(c) = o.cpus_per_task {
        let _ = writeln!(s, "#SBATCH --cpus-per-task={c}");
    }
    if let Some(m) = &o.mem {
        let _ = writeln!(s, "#SBATCH --mem={m}");
    }
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(a) = &o.account {
        let _ = writeln!(s, "#SBATCH --account={a}");
    }
    let _ = writeln!(s, "#SBATCH --time={}", o.time);
    let _ = writeln!(s, "#SBATCH --output={out}/slurm/%x-%A_%a.out");
    let _ = writeln!(s, "#SBATCH --open-mode=append");
    let _ = writeln!(s, "#SBATCH --signal=B:TERM@120");
    let _ = writeln!(s);
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "RUNS=(");
    for (i, r) in plan.runs.iter().enumerate() {
        let _ = writeln!(s, "  {}  # task {i}", sh_quote(&r.name));
    }
    let _ = writeln!(s, ")");
    let _ = writeln!(
        s,
        "if [ -z \"${{SLURM_ARRAY_TASK_ID:-}}\" ]; then\n  \
         echo \"submit with sbatch (SLURM_ARRAY_TASK_ID is not set)\" >&2\n  exit 2\nfi"
    );
    let _ = writeln!(
        s,
        "if [ \"$SLURM_ARRAY_TASK_ID\" -ge {} ]; then\n  \
         echo \"task $SLURM_ARRAY_TASK_ID: the sweep has only {} runs\" >&2\n  exit 2\nfi",
        plan.runs.len(),
        plan.runs.len()
    );
    let _ = writeln!(s, "RUN=\"${{RUNS[$SLURM_ARRAY_TASK_ID]}}\"");
    let _ = writeln!(
        s,
        "echo \"task $SLURM_ARRAY_TASK_ID: run $RUN on $(hostname)\""
    );
    // Recorded for `isoflop sweep status`; never a reason for the task to fail.
    let jobs = sh_quote(&format!("{out}/{JOBS_FILE}"));
    let _ = writeln!(
        s,
        "if [ -n \"${{SLURM_ARRAY_JOB_ID:-}}\" ] && ! grep -qsx \"$SLURM_ARRAY_JOB_ID\" {jobs}; then\n  \
         echo \"$SLURM_ARRAY_JOB_ID\" >> {jobs} || true\nfi"
    );
    let _ = writeln!(
        s,
        "exec {} sweep run {} --out {} --only \"$RUN\" --device {} --checkpoint-every {}",
        sh_quote(&o.bin.display().to_string()),
        sh_quote(&o.spec.display().to_string()),
        sh_quote(&out),
        sh_quote(&o.device),
        o.checkpoint_every
    );
    Ok(s)
}

/// One array task of a sweep's job as the scheduler reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskState {
    /// The array job id (`%F`).
    pub job: u64,
    /// The array task id (`%K`): the index of the run in the plan.
    pub task: usize,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `TIMEOUT`, …
    pub state: String,
    /// Why it waits (`%r`; `None` when it does not).
    pub reason: String,
}

impl TaskState {
    /// `5_3 RUNNING`, or with the reason of a pending task: `5_3 PENDING (JobArrayTaskLimit)`.
    pub fn label(&self) -> String {
        let mut s = format!("{}_{} {}", self.job, self.task, self.state);
        if self.state == "PENDING" && !self.reason.is_empty() && self.reason != "None" {
            let _ = write!(s, " ({})", self.reason);
        }
        s
    }
}

/// The `squeue --format` whose lines [`parse_squeue`] reads.
pub const SQUEUE_FORMAT: &str = "%F|%K|%T|%r|%o";

/// Parse `squeue --array --noheader --format=SQUEUE_FORMAT` output, keeping the array tasks of the jobs
/// that run `script` or whose id is in `jobs`. Lines that are not array tasks are skipped.
pub fn parse_squeue(text: &str, script: &Path, jobs: &[u64]) -> Vec<TaskState> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().splitn(5, '|').collect();
            let [job, task, state, reason, command] = f[..] else {
                return None;
            };
            let job: u64 = job.trim().parse().ok()?;
            let task: usize = task.trim().parse().ok()?;
            let ours = jobs.contains(&job) || Path::new(command.trim()) == script;
            ours.then(|| TaskState {
                job,
                task,
                state: state.trim().to_string(),
                reason: reason.trim().to_string(),
            })
        })
        .collect()
}

/// The newest job's state of each array task (task id → state): a resubmitted task shows its new job.
pub fn latest_per_task(tasks: &[TaskState]) -> BTreeMap<usize, TaskState> {
    let mut m: BTreeMap<usize, TaskState> = BTreeMap::new();
    for t in tasks {
        if m.get(&t.task).is_none_or(|old| old.job < t.job) {
            m.insert(t.task, t.clone());
        }
    }
    m
}

/// Array job ids recorded in `DIR/slurm/jobs` by tasks that started (duplicates and junk dropped).
pub fn recorded_jobs(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join(JOBS_FILE)).unwrap_or_default();
    let mut ids: Vec<u64> = Vec::new();
    for id in text.lines().filter_map(|l| l.trim().parse().ok()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// How long `sweep status` waits for `squeue` (which retries for a long time when the controller is down).
const SQUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn squeue(args: &[String]) -> Option<String> {
    let child = Command::new("squeue")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(SQUEUE_TIMEOUT) else {
        // SAFETY: signalling the squeue we started; it has not been reaped (wait_with_output is pending).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        return None;
    };
    let out = out.ok()?;
    // An unknown job id (purged after MinJobAge) makes squeue fail: that job is simply not reported.
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The scheduler's state of the array tasks of the sweep in `dir`: the current user's jobs that run
/// `dir/sweep.sbatch`, and the jobs recorded in `dir/slurm/jobs` (asked one by one: `squeue` fails
/// on a job id it no longer knows). `None` when there is no `squeue` or the directory was never given
/// to Slurm or `squeue` does not answer within 10 s; finished tasks are reported only while the controller
/// keeps them (`MinJobAge`).
pub fn query(dir: &Path) -> Option<Vec<TaskState>> {
    let script = dir.join("sweep.sbatch");
    let jobs = recorded_jobs(dir);
    if !script.exists() && jobs.is_empty() {
        return None;
    }
    let script = std::fs::canonicalize(&script).unwrap_or(script);
    let base = |extra: &[&str]| -> Vec<String> {
        ["--array", "--noheader", "--states=all"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .chain([format!("--format={SQUEUE_FORMAT}")])
            .collect()
    };
    let mine = squeue(&base(&["--me"]))?;
    let mut tasks = parse_squeue(&mine, &script, &jobs);
    for id in jobs.iter().rev().take(8) {
        if !tasks.iter().any(|t| t.job == *id) {
            if let Some(text) = squeue(&base(&[&format!("--jobs={id}")])) {
                tasks.extend(parse_squeue(&text, &script, &[*id]));
            }
        }
    }
    Some(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_map_to_array_tasks() {
        let script = Path::new("/s/sweep/sweep.sbatch");
        let text = "7|0|COMPLETED|None|/s/sweep/sweep.sbatch\n\
                    7|1|RUNNING|None|/s/sweep/sweep.sbatch\n\
                    7|2|PENDING|JobArrayTaskLimit|/s/sweep/sweep.sbatch\n\
                    9|1|PENDING|Priority|/s/sweep/sweep.sbatch\n\
                    8|0|RUNNING|None|/other/sweep.sbatch\n\
                    12|N/A|RUNNING|None|/s/sweep/sweep.sbatch\n\
                    11|3|CANCELLED|None|/elsewhere/copy.sbatch\n\
                    garbage\n";
        let tasks = parse_squeue(text, script, &[11]);
        let ids: Vec<(u64, usize)> = tasks.iter().map(|t| (t.job, t.task)).collect();
        assert_eq!(ids, [(7, 0), (7, 1), (7, 2), (9, 1), (11, 3)]);
        let latest = latest_per_task(&tasks);
        assert_eq!(latest[&1].label(), "9_1 PENDING (Priority)");
        assert_eq!(latest[&2].label(), "7_2 PENDING (JobArrayTaskLimit)");
        assert_eq!(latest[&0].label(), "7_0 COMPLETED");
        assert_eq!(latest[&3].label(), "11_3 CANCELLED");
    }

    #[test]
    fn recorded_jobs_are_deduplicated() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("slurm")).unwrap();
        std::fs::write(tmp.path().join(JOBS_FILE), "5\n5\nx\n12\n5\n").unwrap();
        assert_eq!(recorded_jobs(tmp.path()), [5, 12]);
        assert!(recorded_jobs(&tmp.path().join("none")).is_empty());
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
