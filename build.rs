//! Records the build context for `--version` and `balance_exporter_build_info`, in the fields a
//! Prometheus exporter prints: branch, revision, build user, build date, compiler, platform.
//!
//! Every value has an override in the environment (`BALANCE_EXPORTER_REVISION`, `_BRANCH`,
//! `_BUILD_USER`, `_BUILD_DATE`), for builds without `.git` (the container image's context, a
//! tarball); otherwise it comes from git, and without git it is `unknown`. `SOURCE_DATE_EPOCH`
//! fixes the build date, for reproducible builds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = Git::find(&manifest_dir);

    let revision = overridden("BALANCE_EXPORTER_REVISION")
        .or_else(|| git.as_ref().and_then(|g| g.run(&["rev-parse", "HEAD"])));
    // Detached HEAD (a CI checkout of a tag) reads `HEAD`, as Prometheus' builds print it.
    let branch = overridden("BALANCE_EXPORTER_BRANCH").or_else(|| {
        git.as_ref()
            .and_then(|g| g.run(&["rev-parse", "--abbrev-ref", "HEAD"]))
    });
    let user = overridden("BALANCE_EXPORTER_BUILD_USER").or_else(build_user);
    let date = overridden("BALANCE_EXPORTER_BUILD_DATE").or_else(build_date);
    let rustc = rustc_version();
    let platform = platform();

    for (name, value) in [
        ("BALANCE_EXPORTER_REVISION", revision),
        ("BALANCE_EXPORTER_BRANCH", branch),
        ("BALANCE_EXPORTER_BUILD_USER", user),
        ("BALANCE_EXPORTER_BUILD_DATE", date),
        ("BALANCE_EXPORTER_RUSTC_VERSION", rustc),
        ("BALANCE_EXPORTER_PLATFORM", platform),
    ] {
        let value = value
            .map(|v| v.replace(['\n', '\r'], " "))
            .unwrap_or_else(|| "unknown".to_owned());
        println!("cargo:rustc-env={name}={value}");
        if name != "BALANCE_EXPORTER_RUSTC_VERSION" && name != "BALANCE_EXPORTER_PLATFORM" {
            println!("cargo:rerun-if-env-changed={name}");
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Rerun when a commit or checkout moves HEAD, not on every file change: the date is that
    // of the last rerun, and a rerun rebuilds the crate.
    if let Some(git) = &git {
        for path in git.watched() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// A non-empty value of `name` in the environment, other than `unknown`.
fn overridden(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && v != "unknown")
}

/// The git work tree the package is the top of. Not one that merely contains it: a tarball
/// unpacked inside some other repository must not take that repository's revision.
struct Git {
    top: PathBuf,
    git_dir: PathBuf,
    common_dir: PathBuf,
}

impl Git {
    fn find(manifest_dir: &Path) -> Option<Git> {
        let probe = Git {
            top: manifest_dir.to_path_buf(),
            git_dir: PathBuf::new(),
            common_dir: PathBuf::new(),
        };
        let top = PathBuf::from(probe.run(&["rev-parse", "--show-toplevel"])?);
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same(&top, manifest_dir) {
            return None;
        }
        let absolute = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { top.join(p) }
        };
        let git_dir = absolute(probe.run(&["rev-parse", "--git-dir"])?);
        let common_dir = absolute(probe.run(&["rev-parse", "--git-common-dir"])?);
        Some(Git {
            top,
            git_dir,
            common_dir,
        })
    }

    fn run(&self, args: &[&str]) -> Option<String> {
        Command::new("git")
            .arg("-C")
            .arg(&self.top)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The files a commit or a checkout changes: HEAD (a worktree has its own), the current
    /// branch's ref (not every branch's: others' commits should not rebuild this one) and
    /// packed-refs.
    fn watched(&self) -> Vec<PathBuf> {
        let mut paths = vec![
            self.git_dir.join("HEAD"),
            self.common_dir.join("packed-refs"),
        ];
        if let Some(branch) = self
            .run(&["rev-parse", "--symbolic-full-name", "HEAD"])
            .filter(|r| r.starts_with("refs/"))
        {
            paths.push(self.common_dir.join(branch));
        }
        paths.into_iter().filter(|p| p.exists()).collect()
    }
}

/// `user@host`, as Prometheus' builds record it.
fn build_user() -> Option<String> {
    // A container build runs with no USER in the environment: ask the system.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })?;
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    Some(match host {
        Some(host) => format!("{user}@{host}"),
        None => user,
    })
}

/// `YYYYMMDD-HH:MM:SS` in UTC, Prometheus' layout; `SOURCE_DATE_EPOCH` when set.
fn build_date() -> Option<String> {
    let since_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(seconds) => Duration::from_secs(seconds.trim().parse().ok()?),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).ok()?,
    };
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    Some(format!(
        "{year:04}{month:02}{day:02}-{:02}:{:02}:{:02}",
        time / 3600,
        time / 60 % 60,
        time % 60
    ))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The compiler's own `--version` line without its name: `1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let line = String::from_utf8(output.stdout).ok()?;
    let line = line.trim();
    Some(line.strip_prefix("rustc ").unwrap_or(line).to_owned()).filter(|l| !l.is_empty())
}

/// `os/arch` of the target in Go's names (`linux/amd64`), which Prometheus' builds print and
/// which operators match release archives by.
fn platform() -> Option<String> {
    let os = std::env::var("CARGO_CFG_TARGET_OS").ok()?;
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let endian = std::env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_default();
    let arch = match (arch.as_str(), endian.as_str()) {
        ("x86_64", _) => "amd64",
        ("x86", _) => "386",
        ("aarch64", _) => "arm64",
        ("powerpc64", "little") => "ppc64le",
        ("powerpc64", _) => "ppc64",
        ("loongarch64", _) => "loong64",
        ("mips", "little") => "mipsle",
        ("mips64", "little") => "mips64le",
        (other, _) => other,
    };
    Some(format!("{os}/{arch}"))
}
