//! Running the `isoflop` binary from the integration tests. One file shared by several test binaries
//! (each includes it with `#[path]`), so every binary reads the binary's output the same way.

use std::process::Command;

/// The `isoflop` binary Cargo built for these tests, with no arguments yet.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_isoflop"))
}

/// Runs `cmd` to the end: (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` to the end: (success, stdout followed by stderr).
pub fn run_joined(cmd: &mut Command) -> (bool, String) {
    let (ok, stdout, stderr) = run(cmd);
    (ok, stdout + &stderr)
}

/// `isoflop ARGS`, which must succeed: stdout followed by stderr.
pub fn isoflop(args: &[&str]) -> String {
    let (ok, text) = run_joined(bin().args(args));
    assert!(ok, "isoflop {args:?} failed:\n{text}");
    text
}
