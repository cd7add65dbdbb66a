//! What the load harnesses measure about processes and the machine, from Linux's `/proc`: a
//! process's CPU time and peak resident memory, the whole machine's busy share over a window,
//! and latency percentiles.

use anyhow::Context;

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(ticks as f64 / CLOCK_TICKS_PER_SECOND)
}

/// The kernel's USER_HZ; 100 on every Linux architecture gridwatch runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/<pid>/status")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
    Ok(kib * 1024)
}

/// The machine's CPU time so far (all cores, in clock ticks): busy and in total.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// Reads the first (`cpu`, all cores) line of `/proc/stat`.
    pub fn now() -> anyhow::Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat.lines().find(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
        let ticks: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().context("malformed /proc/stat")?;
        // user nice system idle iowait irq softirq steal (guest time is counted in user already).
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Ok(MachineCpu { busy: total - idle, total })
    }

    /// The share of the machine's CPU time (0..1, all cores) that was busy since `earlier`.
    pub fn busy_share_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// p50 / p99 / max of latencies (ms); `None` for none.
pub fn latency(mut samples: Vec<f64>) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some(Latency { p50: at(0.5), p99: at(0.99), max: at(1.0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranked_samples() {
        let l = latency((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (51.0, 99.0, 100.0));
        assert!(latency(Vec::new()).is_none());
    }

    #[test]
    fn this_process_has_a_cpu_time_and_the_machine_a_busy_share() {
        let before = MachineCpu::now().unwrap();
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
        let share = MachineCpu::now().unwrap().busy_share_since(&before);
        assert!((0.0..=1.0).contains(&share));
    }
}
