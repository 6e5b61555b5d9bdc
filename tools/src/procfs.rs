//! What the tools read from Linux's `/proc`: a process's CPU time, the time its
//! threads waited for a CPU while runnable, its memory and open files, and what the
//! machine is. Every reading of `/proc` in the tools is here.
//!
//! Each function returns the error of the file it could not read or parse, so a
//! tool that needs the figure stops with a message naming the file, and one that
//! can do without it calls `.ok()`.
//!
//! ```
//! use chitchat_tools::procfs;
//!
//! # if cfg!(target_os = "linux") {
//! let me = std::process::id();
//! assert!(procfs::status_kib(me, "VmRSS")? > 0);
//! assert!(procfs::open_fds(me)? >= 3); // stdin, stdout, stderr
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::time::Duration;

fn read(path: &str) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot read {path}: {err}")))
}

fn malformed(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected contents in {path}"),
    )
}

/// User + system CPU time of process `pid` so far, from `/proc/PID/stat` (clock-tick
/// resolution, 10 ms on usual kernels).
///
/// # Errors
/// When the file cannot be read or parsed (the process is gone, no `/proc`).
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = read(&path)?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').ok_or_else(|| malformed(&path))?.1;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let mut ticks = || -> io::Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| malformed(&path))
    };
    let ticks = ticks()? + ticks()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| io::Error::other("sysconf(_SC_CLK_TCK) failed"))?;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// User + system CPU time of this process, from `getrusage` (microsecond
/// resolution, finer than [`cpu_time`]); zero if the call fails.
pub fn own_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer, kept by no one.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Time the live threads of process `pid` spent runnable but waiting for a CPU
/// (second field of `/proc/PID/task/TID/schedstat`): other work holding the cores.
///
/// # Errors
/// When a file cannot be read or parsed (no schedstats in this kernel).
pub fn runqueue_wait(pid: u32) -> io::Result<Duration> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for task in std::fs::read_dir(&dir)? {
        let path = format!("{}/schedstat", task?.path().display());
        let stat = read(&path)?;
        total += stat
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| malformed(&path))?;
    }
    Ok(Duration::from_nanos(total))
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`: resident memory now, `VmHWM`: its
/// peak), in KiB.
///
/// # Errors
/// When the file cannot be read or has no such line.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let path = format!("/proc/{pid}/status");
    read(&path)?
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| malformed(&path))
}

/// File descriptors open in process `pid`. For this process, the one used to list
/// the directory is not counted.
///
/// # Errors
/// When `/proc/PID/fd` cannot be listed.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    let count = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(if pid == std::process::id() {
        count.saturating_sub(1)
    } else {
        count
    })
}

/// The CPU's model name (first `model name` line of `/proc/cpuinfo`).
///
/// # Errors
/// When the file cannot be read or has no such line.
pub fn cpu_model() -> io::Result<String> {
    let path = "/proc/cpuinfo";
    read(path)?
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .ok_or_else(|| malformed(path))
}

/// The kernel's release (`/proc/sys/kernel/osrelease`).
///
/// # Errors
/// When the file cannot be read.
pub fn kernel_release() -> io::Result<String> {
    Ok(read("/proc/sys/kernel/osrelease")?.trim().to_owned())
}

/// The load average line (`/proc/loadavg`: 1, 5 and 15 minutes, runnable/total
/// tasks, last pid).
///
/// # Errors
/// When the file cannot be read.
pub fn load_average() -> io::Result<String> {
    Ok(read("/proc/loadavg")?.trim().to_owned())
}
