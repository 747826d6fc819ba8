//! Reads a server process's memory and CPU use from Linux's `/proc`, so the
//! bench can report what each connection and each delivery costs the gateway.
//!
//! Only plain file reads: no libc, no `unsafe`. The clock-tick rate that
//! `/proc/PID/stat` counts CPU time in is read from the kernel's auxiliary
//! vector (`/proc/self/auxv`, entry `AT_CLKTCK`), falling back to 100, the
//! value of `getconf CLK_TCK` on every mainstream Linux build.

use std::io;
use std::path::PathBuf;

/// `AT_CLKTCK` in the auxiliary vector: the frequency `times()` and `/proc/PID/stat` count in.
const AT_CLKTCK: u64 = 17;
/// The clock-tick rate assumed when the auxiliary vector cannot be read.
pub(crate) const DEFAULT_CLK_TCK: u64 = 100;

/// One look at a process: resident memory and CPU time consumed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcSample {
    /// Resident set size (`VmRSS`), in KiB.
    pub(crate) rss_kib: u64,
    /// User plus system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
}

/// Reads the resident memory and CPU time of process `pid`.
pub(crate) fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(proc_path(pid, "status"))?;
    let stat = std::fs::read_to_string(proc_path(pid, "stat"))?;
    Ok(ProcSample {
        rss_kib: parse_vm_rss_kib(&status).ok_or_else(|| invalid("no VmRSS line in status"))?,
        cpu_ticks: parse_cpu_ticks(&stat).ok_or_else(|| invalid("malformed stat line"))?,
    })
}

/// The clock ticks per second that `/proc/PID/stat` counts in.
pub(crate) fn clock_ticks_per_sec() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| parse_auxv_clk_tck(&auxv))
        .filter(|&hz| hz > 0)
        .unwrap_or(DEFAULT_CLK_TCK)
}

/// `/proc/PID/FILE`.
fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// An `InvalidData` error.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The `VmRSS:   1234 kB` value of a `/proc/PID/status` text, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks.
///
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted from after its last `)`: there, field 3 is the first.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `AT_CLKTCK` value of an auxiliary vector of native-endian 64-bit (key, value) pairs.
fn parse_auxv_clk_tck(auxv: &[u8]) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (key == AT_CLKTCK).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tkthread\n"), None);
    }

    #[test]
    fn parses_cpu_ticks_even_with_a_tricky_command_name() {
        let stat =
            "42 (we ird) na)me) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn reads_its_own_process() {
        let me = sample(std::process::id()).expect("own /proc entry");
        assert!(me.rss_kib > 0);
        assert!(sample(u32::MAX).is_err());
    }

    #[test]
    fn finds_clk_tck_in_auxv() {
        let mut auxv = Vec::new();
        for (k, v) in [(6u64, 4096u64), (AT_CLKTCK, 250), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(parse_auxv_clk_tck(&auxv), Some(250));
        assert_eq!(parse_auxv_clk_tck(&auxv[..16]), None);
        assert!(clock_ticks_per_sec() > 0);
    }
}
