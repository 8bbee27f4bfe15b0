//! Command-line flags of the xtask: one definition, parsed by hand so the
//! xtask builds with nothing but std and anyhow.

/// Usage text printed by `cargo xtask help` and on bad flags.
pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--no-python] [--quick]   fmt, clippy, every test, interop checks, chaos --quick
  bench [--quick] [--case NAME] [--peers all]
                                 side-by-side benchmark -> target/bench/results.{json,md}, sweep.svg
  chaos [--quick]                fault injection: kills, full shm, hostile input, hung tasks
  ndarray-interop                only the `test` step of that name: ShmArray keys <-> numpy
  arrow-interop                  only the `test` step of that name: IPC files in shm <-> pyarrow
  roundtrip IN OUT               read each IN/*.npy, decode, write OUT/NAME; `ok NAME` / `refused NAME: reason`
                                 (IN/*.arrow, IN/*.feather, also LZ4/ZSTD-compressed: read,
                                 sent through a pool worker, written back uncompressed)
  help                           this text";

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// `cargo xtask help`
    Help,
    /// `cargo xtask test`
    Test(Test),
    /// `cargo xtask bench`
    Bench(Bench),
    /// `cargo xtask roundtrip IN OUT`
    Roundtrip(Roundtrip),
    /// `cargo xtask ndarray-interop`: one step of `test` on its own.
    NdarrayInterop,
    /// `cargo xtask arrow-interop`: one step of `test` on its own.
    ArrowInterop,
    /// `cargo xtask chaos`
    Chaos(Chaos),
    /// Internal: a child program of `cargo xtask chaos` (`chaos-child ROLE`).
    ChaosChild(Vec<String>),
    /// Internal: one benchmark case, run inside the release build of the xtask.
    BenchCase(BenchCase),
}

/// Options of `cargo xtask bench`.
#[derive(Debug, Default)]
pub struct Bench {
    /// Each case once at reduced size (CI smoke run).
    pub quick: bool,
    /// Only this case.
    pub case: Option<String>,
    /// Also the heavy peers (Ray).
    pub peers_all: bool,
}

/// Options of `cargo xtask chaos`.
#[derive(Debug, Default)]
pub struct Chaos {
    /// Reduced counts (under 3 minutes).
    pub quick: bool,
}

/// Options of the internal `bench-case` command.
#[derive(Debug)]
pub struct BenchCase {
    /// The case name (as in BENCHMARKS.md).
    pub name: String,
    /// Reduced size, one run.
    pub quick: bool,
}

/// Options of `cargo xtask test`.
#[derive(Debug, Default)]
pub struct Test {
    /// Skip the numpy/pyarrow interop checks even if python3 is present.
    pub no_python: bool,
    /// Skip the slow steps (release-mode fuzzing, chaos); for local iteration.
    pub quick: bool,
}

impl Command {
    /// Parses the arguments after `cargo xtask`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
        let Some(cmd) = args.next() else {
            return Ok(Command::Help);
        };
        let rest: Vec<String> = args.collect();
        match cmd.as_str() {
            "help" | "--help" | "-h" => Ok(Command::Help),
            "test" => {
                let mut t = Test::default();
                for a in rest {
                    match a.as_str() {
                        "--no-python" => t.no_python = true,
                        "--quick" => t.quick = true,
                        other => return Err(format!("test: unknown option {other:?}")),
                    }
                }
                Ok(Command::Test(t))
            }
            "bench" => {
                let mut b = Bench::default();
                let mut it = rest.into_iter();
                while let Some(a) = it.next() {
                    match a.as_str() {
                        "--quick" => b.quick = true,
                        "--case" => {
                            b.case = Some(it.next().ok_or("bench: --case needs a NAME")?);
                        }
                        "--peers" => match it.next().as_deref() {
                            Some("all") => b.peers_all = true,
                            _ => return Err("bench: --peers takes `all`".into()),
                        },
                        other => return Err(format!("bench: unknown option {other:?}")),
                    }
                }
                Ok(Command::Bench(b))
            }
            "chaos" => {
                let mut c = Chaos::default();
                for a in rest {
                    match a.as_str() {
                        "--quick" => c.quick = true,
                        other => return Err(format!("chaos: unknown option {other:?}")),
                    }
                }
                Ok(Command::Chaos(c))
            }
            "chaos-child" => Ok(Command::ChaosChild(rest)),
            "bench-case" => {
                let mut name = None;
                let mut quick = false;
                for a in rest {
                    match a.as_str() {
                        "--quick" => quick = true,
                        n if name.is_none() && !n.starts_with('-') => name = Some(n.to_string()),
                        other => return Err(format!("bench-case: unexpected {other:?}")),
                    }
                }
                let name = name.ok_or("bench-case: needs a case NAME")?;
                Ok(Command::BenchCase(BenchCase { name, quick }))
            }
            "ndarray-interop" if rest.is_empty() => Ok(Command::NdarrayInterop),
            "arrow-interop" if rest.is_empty() => Ok(Command::ArrowInterop),
            "roundtrip" => match <[String; 2]>::try_from(rest) {
                Ok([input, output]) => Ok(Command::Roundtrip(Roundtrip {
                    input: input.into(),
                    output: output.into(),
                })),
                Err(_) => Err("roundtrip: needs IN and OUT directories".into()),
            },
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

/// Arguments of `cargo xtask roundtrip`.
#[derive(Debug)]
pub struct Roundtrip {
    /// Directory of input files.
    pub input: std::path::PathBuf,
    /// Directory the rewritten files go to.
    pub output: std::path::PathBuf,
}
