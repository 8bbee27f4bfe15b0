//! Parent killed mid-transfer: a child program that keeps submitting large
//! arrays and putting named keys is `kill -9`ed at a random moment, again
//! and again. After each kill, no worker of it may survive past 1 s (this
//! process is made their subreaper, so an orphaned worker would show up as
//! our child), and after `clear_stale()` `/dev/shm` must hold nothing of it.
//! Named keys of live programs (this one's, and a holder child's) must
//! survive every `clear_stale()`.

use super::procs::{self, ProcExt, Reaper};
use super::{Scale, Verdict};
use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long orphaned workers may take to die.
const GRACE: Duration = Duration::from_secs(1);

/// Runs the scenario.
pub fn run(scale: &Scale) -> Result<Verdict> {
    // `/proc/self/exe`, not `current_exe()`: `cargo xtask test` rebuilds
    // target/debug/xtask while this one runs (the test steps build the same
    // bin), and the path of a replaced executable no longer opens.
    let exe = std::path::PathBuf::from("/proc/self/exe");
    // A live key of this process and one of a live holder child.
    let mine = npshmex_shm::NamedSegment::create_unique(4096).context("own named key")?;
    let mine_name = mine.name().to_owned();
    // Removed however this function returns (an early `?` leaked it).
    let _remove_mine = RemoveOnDrop(mine_name.clone());
    let mut holder = Command::new(&exe)
        .args(["chaos-child", "holder"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the holder")?;
    let holder_name = first_line(&mut holder)?;
    procs::set_reaper(Reaper::Subreaper)?;
    let out = kill_loop(&exe, scale);
    let _ = procs::set_reaper(Reaper::Plain);
    // The live keys are still there.
    let dev_shm = |n: &str| std::path::Path::new("/dev/shm").join(n).exists();
    let kept = dev_shm(&mine_name) && dev_shm(&holder_name);
    drop(holder.stdin.take()); // the holder removes its key and exits
    let _ = holder.wait();
    drop(mine);
    let (runs, max_ms) = out?;
    ensure!(kept, "clear_stale() removed a key of a live program");
    Ok(Verdict::Pass(format!(
        "{runs} children killed with -9: no worker survived (slowest to die: {max_ms} ms), \
         clear_stale() left nothing of them in /dev/shm, live keys kept"
    )))
}

/// Removes a named segment when dropped.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Already gone is fine; nothing else can be done about an error here.
        let _ = npshmex_shm::remove(&self.0);
    }
}

fn first_line(child: &mut Child) -> Result<String> {
    let out = child.stdout.take().context("piped stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    ensure!(!line.trim().is_empty(), "the child printed nothing");
    Ok(line.trim().to_string())
}

/// Returns the number of runs and the longest time a worker took to die, ms.
fn kill_loop(exe: &std::path::Path, scale: &Scale) -> Result<(usize, u128)> {
    let me = std::process::id();
    let mut rng = StdRng::seed_from_u64(scale.seed ^ 0x9e37);
    let mut slowest = 0u128;
    for run in 0..scale.parent_kills {
        let mut child = Command::new(exe)
            .args(["chaos-child", "submitter"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the submitter")?;
        let pid = child.id();
        let ready = first_line(&mut child);
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            bail!("run {run}: the submitter did not start: {e:#}");
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        procs::kill9(pid);
        let _ = child.wait();
        // Its workers are now ours (subreaper): they must die within GRACE.
        let t = Instant::now();
        loop {
            let live = procs::live_workers_of(me);
            if live.is_empty() {
                break;
            }
            if t.elapsed() > GRACE {
                for p in &live {
                    procs::kill9(p.pid);
                }
                bail!(
                    "run {run}: workers {:?} outlived their killed parent by 1 s",
                    live
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        slowest = slowest.max(t.elapsed().as_millis());
        for p in procs::all() {
            if p.ppid == me && p.is_zombie() && p.is_worker() {
                procs::reap(p.pid);
            }
        }
        npshmex_shm::clear_stale().context("clear_stale")?;
        let prefix = format!("npshmex-{pid}-");
        let left: Vec<String> = crate::util::shm_entries()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        ensure!(
            left.is_empty(),
            "run {run}: after clear_stale /dev/shm still holds {left:?}"
        );
        if run % 20 == 19 {
            eprint!(".");
            let _ = std::io::stderr().flush();
        }
    }
    Ok((scale.parent_kills, slowest))
}
