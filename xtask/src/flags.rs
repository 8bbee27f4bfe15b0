//! Command-line flags of the xtask: one definition, parsed by hand so the
//! xtask builds with nothing but std and anyhow.

/// Usage text printed by `cargo xtask help` and on bad flags.
pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--no-python] [--quick]   fmt, clippy, every test, interop checks, chaos --quick
  help                           this text";

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// `cargo xtask help`
    Help,
    /// `cargo xtask test`
    Test(Test),
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
            other => Err(format!("unknown command {other:?}")),
        }
    }
}
