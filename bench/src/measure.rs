//! Numbers: percentiles of samples, medians of rounds, and peak memory from /proc.

/// The `p`-th percentile (0..=100) by nearest rank; `None` for no samples.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Median, min and max of per-round values.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return None;
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
            rounds: n,
        })
    }
}

/// Peak resident set size (VmHWM) of `pid` and every descendant, in bytes; 0 where
/// /proc is not there.
pub fn peak_rss_tree(pid: u32) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        total += status_kib(p, "VmHWM:") * 1024;
        todo.extend(children(p));
    }
    total
}

/// CPU time used so far by `pid`'s live threads and its children's, in nanoseconds
/// (from each thread's schedstat); 0 where /proc is not there.
pub fn cpu_ns_tree(pid: u32) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                total += std::fs::read_to_string(t.path().join("schedstat"))
                    .ok()
                    .and_then(|s| {
                        s.split_whitespace()
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                    })
                    .unwrap_or(0);
            }
        }
        todo.extend(children(p));
    }
    total
}

/// CPU time used so far by process `pid`, exited threads included (its /proc stat
/// utime + stime), in nanoseconds; 10 ms resolution (USER_HZ is 100 on Linux). For a
/// process whose threads come and go, which [`cpu_ns_tree`] would miss.
pub fn cpu_ns_process(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name is in parentheses and may hold spaces: count after it.
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 of stat; `rest` starts at field 3.
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10_000_000)
        })
        .unwrap_or(0)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The processes `pid` started that are still there (from each of its threads).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn spread_of_rounds() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.rounds), (2.5, 1.0, 5.0, 4));
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn own_peak_memory_and_cpu_are_read() {
        assert!(peak_rss_tree(std::process::id()) > 0);
        let spin = (0..1_000_000u64).fold(0u64, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0 && cpu_ns_tree(std::process::id()) > 0);
    }

    #[test]
    fn process_cpu_counts_a_thread_that_ended() {
        let me = std::process::id();
        let before = cpu_ns_process(me);
        // Work on a thread that then exits, until the process's count moves (one tick
        // is 10 ms of CPU); a thread's own schedstat would be gone with it. At least
        // one round: the other tests of this process may move the count first.
        let worked = std::thread::spawn(move || {
            let mut x = 0u64;
            let started = std::time::Instant::now();
            loop {
                x = (0..100_000u64).fold(x, |a, b| a.wrapping_add(b * b));
                if cpu_ns_process(me) != before || started.elapsed().as_secs() >= 20 {
                    break x;
                }
            }
        })
        .join()
        .expect("the worker");
        assert!(worked > 0);
        assert!(cpu_ns_process(me) > before);
        assert_eq!(cpu_ns_process(u32::MAX), 0, "no such process");
    }
}
