//! The driver side of the MPI tests: launching `mpiexec` with a deadline,
//! checking that nothing of a job is left behind, a libtest-like command
//! line, and the two-host test (two network namespaces joined by a veth
//! pair, OpenMPI's rsh agent entering them instead of ssh).

use std::collections::BTreeSet;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use npshmex_mpi::{Mpi, MpiPoolExecutor};
use npshmex_ndarray::ShmArray1;
use npshmex_testkit::mpi;
use serde::{Deserialize, Serialize};

/// The variable that makes this binary a rank of a case.
pub const CASE_ENV: &str = "NPSHMEX_MPI_CASE";
/// A per-launch marker in every rank's environment (the leak check finds
/// the job's processes by it).
const RUN_ENV: &str = "NPSHMEX_MPI_TEST_RUN";

/// OpenMPI's byte transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Whatever OpenMPI picks (shared memory between ranks of one host).
    Default,
    /// TCP only (`--mca btl tcp,self`), over loopback (the two-host case:
    /// over its veth pair).
    Tcp,
}

impl Transport {
    pub fn prefix(self) -> &'static str {
        match self {
            Transport::Default => "default",
            Transport::Tcp => "tcp",
        }
    }
}

/// A case that could not run here, and why.
#[derive(Debug)]
pub struct Skipped(pub String);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One `mpiexec` run of a case.
pub struct Launch {
    case: String,
    transport: Transport,
    np: u32,
    extra: Vec<String>,
    mpmd: Option<PathBuf>,
    program: Option<PathBuf>,
    run_id: String,
}

/// What a run printed and how the launcher ended.
pub struct Output {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mpiexec ended with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// The launcher exited 0 and rank 0 said the case passed.
    pub fn expect_ok(&self, case: &str) -> Result<()> {
        ensure!(
            self.status.is_some_and(|s| s.success())
                && self.stdout.contains(&format!("case {case} ok")),
            "case {case} did not pass:\n{self}"
        );
        Ok(())
    }
}

impl Launch {
    pub fn new(case: &str, transport: Transport) -> Launch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Launch {
            case: case.to_string(),
            transport,
            np: 3,
            extra: Vec::new(),
            mpmd: None,
            program: None,
            run_id: format!("{}-{n}", std::process::id()),
        }
    }

    pub fn extra(&mut self, args: &[&str]) {
        self.extra.extend(args.iter().map(|s| s.to_string()));
    }

    /// Rank 0 runs this binary, rank 1 `other`.
    pub fn mpmd(&mut self, other: &Path) {
        self.mpmd = Some(other.to_path_buf());
        self.np = 1;
    }

    /// Runs `program` (an example of this crate) instead of this binary.
    pub fn program(&mut self, program: PathBuf) {
        self.program = Some(program);
    }

    /// `mpiexec` and its arguments (without a program prefix).
    fn args(&self) -> Result<Vec<String>> {
        let exe = match &self.program {
            Some(p) => p.display().to_string(),
            None => std::env::current_exe()?.display().to_string(),
        };
        let mut a: Vec<String> = std::iter::once("mpiexec")
            .chain(mpi::LAUNCH_ARGS)
            .map(String::from)
            .collect();
        if self.transport == Transport::Tcp {
            a.extend(mpi::TCP_ONLY_ARGS.map(String::from));
            if self.extra.iter().all(|e| e != "--hostfile") {
                // One machine: TCP over loopback only.
                a.extend(mpi::LOOPBACK_ARGS.map(String::from));
            }
        }
        a.extend(self.extra.iter().cloned());
        for v in [CASE_ENV, RUN_ENV] {
            a.extend(["-x".to_string(), v.to_string()]);
        }
        a.extend(["-n".to_string(), self.np.to_string(), exe]);
        if let Some(other) = &self.mpmd {
            a.extend([
                ":".to_string(),
                "-n".to_string(),
                "1".to_string(),
                other.display().to_string(),
            ]);
        }
        Ok(a)
    }

    fn spawn(&self, prefix: &[String], args: Vec<String>) -> Result<Child> {
        let all: Vec<String> = prefix.iter().cloned().chain(args).collect();
        let mut cmd = Command::new(&all[0]);
        cmd.args(&all[1..])
            .env(CASE_ENV, &self.case)
            .env(RUN_ENV, &self.run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if is_root() {
            // OpenMPI refuses root otherwise; set for this launch only.
            cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        }
        eprintln!("$ {}", all.join(" "));
        cmd.spawn().with_context(|| format!("starting {}", all[0]))
    }

    /// Runs the case to its end (killed at `limit`), then checks for leaks.
    pub fn run(&self, limit: Duration) -> Result<Output> {
        self.run_with_prefix(&[], limit)
    }

    /// [`Launch::run`] with `mpiexec` started through `prefix` (a namespace).
    pub fn run_with_prefix(&self, prefix: &[String], limit: Duration) -> Result<Output> {
        let before = Snapshot::take();
        let child = self.spawn(prefix, self.args()?)?;
        let out = finish(child, limit, |_| false);
        let left = before.leftovers(&self.run_id, Duration::from_secs(30));
        let out = out?;
        if let Err(e) = left {
            bail!("{e}\n{out}");
        }
        Ok(out)
    }

    /// Starts the case, waits for rank 0's `ready PID` line, kills rank 0
    /// with SIGKILL, and waits for the whole job to end.
    pub fn run_killing_rank0(&self, limit: Duration) -> Result<Output> {
        let before = Snapshot::take();
        let child = self.spawn(&[], self.args()?)?;
        let mut killed = None;
        let out = finish(child, limit, |line| {
            if killed.is_none() {
                if let Some(pid) = line
                    .strip_prefix("ready ")
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    if let Some(p) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                        killed = Some(pid);
                    }
                }
            }
            false
        });
        let left = before.leftovers(&self.run_id, Duration::from_secs(30));
        let out = out?;
        ensure!(killed.is_some(), "rank 0 never said it was ready:\n{out}");
        if let Err(e) = left {
            bail!("{e}\n{out}");
        }
        Ok(out)
    }
}

/// Collects a child's output until it exits, or kills its process group
/// at `limit`. `on_line` sees every stdout line as it comes.
fn finish(
    mut child: Child,
    limit: Duration,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<Output> {
    let deadline = Instant::now() + limit;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    let status;
    let mut timed_out = false;
    loop {
        while let Ok(line) = rx.try_recv() {
            on_line(&line);
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(s) = child.try_wait()? {
            status = Some(s);
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(&child);
            status = child.wait().ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        out.push_str(&line);
        out.push('\n');
    }
    let err = err_reader.join().unwrap_or_default();
    let output = Output {
        status,
        stdout: out,
        stderr: err,
    };
    if timed_out {
        bail!("mpiexec did not end within {limit:?}; killed\n{output}");
    }
    Ok(output)
}

fn kill_group(child: &Child) {
    let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
    std::thread::sleep(Duration::from_secs(2));
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// Launcher daemons and MPI files in `/dev/shm` before a run.
struct Snapshot {
    daemons: BTreeSet<u32>,
    shm: BTreeSet<String>,
}

fn mpi_shm_name(n: &str) -> bool {
    n.starts_with("vader") || n.contains("ompi") || n.starts_with("sm_segment")
}

fn proc_text(pid: u32, what: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/{what}")).ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn shm_names() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Snapshot {
    fn take() -> Snapshot {
        Snapshot {
            daemons: mpi::launchers(),
            shm: shm_names(),
        }
    }

    /// Waits up to `limit` for every process of the run and every new
    /// launcher daemon to be gone, and checks `/dev/shm`.
    fn leftovers(&self, run_id: &str, limit: Duration) -> Result<()> {
        let marker = format!("{RUN_ENV}={run_id}");
        let deadline = Instant::now() + limit;
        loop {
            let ranks: Vec<u32> = all_pids()
                .into_iter()
                .filter(|&p| p != std::process::id())
                .filter(|&p| {
                    proc_text(p, "environ")
                        .is_some_and(|e| e.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
                })
                .collect();
            let new_daemons: Vec<u32> = mpi::launchers()
                .difference(&self.daemons)
                .copied()
                .collect();
            let new_shm: Vec<String> = shm_names()
                .difference(&self.shm)
                .filter(|n| mpi_shm_name(n))
                .cloned()
                .collect();
            if ranks.is_empty() && new_daemons.is_empty() && new_shm.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                for p in ranks.iter().chain(&new_daemons) {
                    if let Some(pid) = rustix::process::Pid::from_raw(*p as i32) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                bail!(
                    "left behind after {limit:?}: ranks {ranks:?}, launcher daemons {new_daemons:?}, /dev/shm {new_shm:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An example of this crate, built by `cargo test` beside this binary
/// (`target/<profile>/examples/NAME`, this binary being in `deps/`).
pub fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples").join(name))
        .context("no target directory above this binary")?;
    ensure!(
        path.exists(),
        "{} is not built (cargo test builds the examples)",
        path.display()
    );
    Ok(path)
}

/// A copy of this test binary whose build id differs (one byte of the
/// `.note.gnu.build-id`, or, without one, one byte appended), in a
/// temporary file the caller removes.
pub fn copy_with_another_build() -> Result<PathBuf> {
    use npshmex_pool::backend::{BuildId, BuildIdKind};
    let exe = std::env::current_exe()?;
    let mut bytes = std::fs::read(&exe)?;
    let id = BuildId::current()?;
    match id.kind() {
        BuildIdKind::GnuNote => {
            let needle = id.as_bytes();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .context("the build id is not in the file")?;
            bytes[at] ^= 0xff;
        }
        _ => bytes.push(0),
    }
    let path = std::env::temp_dir().join(format!("npshmex-mpi-other-build-{}", std::process::id()));
    std::fs::write(&path, &bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    let mut f = std::fs::File::open(&path)?;
    let other = BuildId::of_file(&mut f)?;
    ensure!(other != id, "the copy still has build {other}");
    Ok(path)
}

/// The driver side of one case.
pub type Driver = Box<dyn Fn() -> Result<()>>;

/// Runs the cases named on the command line (libtest's interface, as far
/// as cargo test and nextest use it); returns the exit code.
pub fn harness(cases: Vec<(String, Driver)>) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut exact = false;
    let mut list = false;
    let mut ignored = false;
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--ignored" => ignored = true,
            "--format" | "--color" | "--test-threads" | "--logfile" | "--skip" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    if list {
        if !ignored {
            for (name, _) in &cases {
                println!("{name}: test");
            }
        }
        return 0;
    }
    if ignored {
        println!("\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        return 0;
    }
    let selected: Vec<_> = cases
        .iter()
        .filter(|(n, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        n == f
                    } else {
                        n.contains(f.as_str())
                    }
                })
        })
        .collect();
    let filtered = cases.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    let started = Instant::now();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for (name, f) in selected {
        let t = Instant::now();
        match f() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
            }
            Err(e) if e.downcast_ref::<Skipped>().is_some() => {
                skipped += 1;
                println!("test {name} ... SKIPPED: {e}");
                eprintln!("!!! SKIPPED {name}: {e}");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED");
                failures.push(format!("---- {name} ----\n{e:#}"));
            }
        }
    }
    for f in &failures {
        println!("\n{f}");
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; {skipped} ignored; 0 measured; {filtered} filtered out; finished in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        0
    } else {
        101
    }
}

// --- two hosts: network namespaces ---

/// Where a task ran.
#[derive(Debug, Serialize, Deserialize)]
struct Place {
    host: String,
    netns: String,
}

fn place_here() -> Place {
    Place {
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        netns: std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

fn add_one(x: ShmArray1<f64>) -> Result<(Place, ShmArray1<f64>), String> {
    let y = x.map(|v| v + 1.0).map_err(|e| e.to_string())?;
    Ok((place_here(), y))
}

/// Rank 0 of the two-host case (on `hosta`): the seed workload on the
/// worker on the other host, every element checked.
pub fn two_hosts_rank0(mpi: &Mpi) -> Result<()> {
    let pool = MpiPoolExecutor::new(mpi)?;
    let workers = pool.workers();
    ensure!(workers.len() == 1, "workers: {workers:?}");
    let me = place_here();
    ensure!(
        workers[0].host != me.host,
        "the worker runs on this host too: {workers:?}"
    );
    let len = 20_000_000;
    let x = ShmArray1::from_elem(len, 1.5)?.into_read_only()?;
    let (place, y) = pool
        .submit(add_one, x)?
        .result()?
        .map_err(|e| anyhow!("worker: {e}"))?;
    ensure!(
        place.netns != me.netns,
        "x + 1 ran in rank 0's network namespace"
    );
    ensure!(
        place.host == workers[0].host,
        "ran on {place:?}, not on {:?}",
        workers[0]
    );
    let v = y.view();
    ensure!(v.len() == len);
    if let Some(bad) = v.iter().position(|&e| e != 2.5) {
        bail!("result[{bad}] = {}", v[bad]);
    }
    println!(
        "x + 1 over 160 MB ran on {} ({}), rank 0 on {} ({}): checked",
        place.host, place.netns, me.host, me.netns
    );
    Ok(())
}

/// Two namespaces, a veth pair between them, hosts files, and the rsh
/// agent; removed on drop, also when the test fails.
struct TwoHosts {
    ns: [String; 2],
    dir: PathBuf,
}

const HOSTS: [&str; 2] = ["hosta", "hostb"];
const NET: &str = "10.213.77";

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl TwoHosts {
    fn make() -> Result<TwoHosts> {
        if !is_root() {
            bail!(Skipped("two hosts: network namespaces need root".into()));
        }
        for tool in ["ip", "unshare"] {
            if Command::new(tool).arg("--version").output().is_err() {
                bail!(Skipped(format!("two hosts: `{tool}` is not installed")));
            }
        }
        let id = std::process::id();
        let hosts = TwoHosts {
            ns: [format!("npshmex-a-{id}"), format!("npshmex-b-{id}")],
            dir: std::env::temp_dir().join(format!("npshmex-two-hosts-{id}")),
        };
        if let Err(e) = ip(&["netns", "add", &hosts.ns[0]]) {
            bail!(Skipped(format!(
                "two hosts: cannot make a network namespace here: {e}"
            )));
        }
        if let Err(e) = hosts.set_up() {
            if format!("{e}").contains("Operation not permitted") {
                bail!(Skipped(format!("two hosts: {e}")));
            }
            return Err(e);
        }
        Ok(hosts)
    }

    fn set_up(&self) -> Result<()> {
        let [a, b] = &self.ns;
        ip(&["netns", "add", b])?;
        let id = std::process::id() % 100_000;
        let (va, vb) = (format!("npxa{id}"), format!("npxb{id}"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", a])?;
        ip(&["link", "set", &vb, "netns", b])?;
        for (i, (ns, dev)) in [(a, &va), (b, &vb)].into_iter().enumerate() {
            let addr = format!("{NET}.{}/24", i + 1);
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts.
            let etc = PathBuf::from("/etc/netns").join(ns);
            std::fs::create_dir_all(&etc)?;
            std::fs::write(
                etc.join("hosts"),
                format!(
                    "127.0.0.1 localhost\n{NET}.1 {}\n{NET}.2 {}\n",
                    HOSTS[0], HOSTS[1]
                ),
            )?;
        }
        std::fs::create_dir_all(&self.dir)?;
        // OpenMPI's rsh agent: `agent HOST COMMAND...` runs the daemon's
        // command line "on HOST": here, in its namespace, with its own
        // hostname (a UTS namespace), as ssh would run it with a shell.
        let agent = format!(
            "#!/bin/sh\nhost=\"$1\"; shift\ncase \"$host\" in\n  {}) ns={a} ;;\n  {}) ns={b} ;;\n  *) echo \"unknown host $host\" >&2; exit 1 ;;\nesac\nexec ip netns exec \"$ns\" unshare --uts /bin/sh -c \"hostname $host; $*\"\n",
            HOSTS[0], HOSTS[1]
        );
        let agent_path = self.dir.join("agent.sh");
        std::fs::write(&agent_path, agent)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent_path, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(
            self.dir.join("hostfile"),
            format!("{} slots=1\n{} slots=1\n", HOSTS[0], HOSTS[1]),
        )?;
        Ok(())
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in &self.ns {
            // Anything still running in a namespace goes with it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Some(pid) = p.parse().ok().and_then(rustix::process::Pid::from_raw) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            // Deleting a namespace deletes its end of the veth pair, and
            // with it the other end.
            let _ = ip(&["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The two-host test: rank 0 on `hosta`, its worker on `hostb`, TCP only
/// and only over the veth pair.
pub fn two_hosts() -> Result<()> {
    let hosts = TwoHosts::make()?;
    let net = format!("{NET}.0/24");
    let mut launch = Launch::new("two_hosts", Transport::Tcp);
    launch.np = 2;
    let hostfile = hosts.dir.join("hostfile").display().to_string();
    let agent = hosts.dir.join("agent.sh").display().to_string();
    launch.extra(&[
        "--hostfile",
        &hostfile,
        "--mca",
        "plm_rsh_agent",
        &agent,
        "--mca",
        "plm_rsh_no_tree_spawn",
        "1",
        "--mca",
        "btl_tcp_if_include",
        &net,
        "--mca",
        "oob_tcp_if_include",
        &net,
        "--map-by",
        "node",
    ]);
    // mpiexec itself runs on hosta: in its namespace, with its hostname.
    let inner = launch
        .args()?
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let prefix: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &hosts.ns[0],
        "unshare",
        "--uts",
        "/bin/sh",
        "-c",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("hostname {}; exec {inner}", HOSTS[0])])
    .collect();
    let out = launch.run_with_prefix(&prefix, Duration::from_secs(300));
    drop(hosts);
    let out = out?;
    out.expect_ok("two_hosts")?;
    for line in out.stdout.lines().filter(|l| l.contains("ran on")) {
        println!("    {line}");
    }
    Ok(())
}
