//! A Slurm array job script for a sweep: one array task per run, each `isoflop sweep run … --only RUN`.

use super::plan::Plan;
use std::fmt::Write;
use std::path::PathBuf;

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
    /// Partition.
    pub partition: Option<String>,
    /// Account.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
