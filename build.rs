//! Records the git revision for `balance_exporter_build_info` and `--version`.

use std::process::Command;

fn main() {
    // A build without .git (the container image's) passes the revision in the environment.
    println!("cargo:rerun-if-env-changed=BALANCE_EXPORTER_REVISION");
    let from_env = std::env::var("BALANCE_EXPORTER_REVISION")
        .ok()
        .filter(|s| !s.is_empty() && s != "unknown");
    let revision = from_env.or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    });
    let revision = revision.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BALANCE_EXPORTER_REVISION={revision}");
    // Rebuild when a commit moves HEAD, not on every file change.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
