//! The harness (libtest-mimic) of the test files whose tests need something a developer's
//! machine may lack: a program, root, `/proc`, enough open files. Each test declares its
//! [`Need`]s; when one is missing the test does not run and the summary counts it as ignored,
//! with the reason on its line (`test … ignored (promtool is not installed)`), rather than
//! passing without having run. Under CI ([`REQUIRE_ALL_ENV`] set) it fails with the reason.
//!
//! A test file using it is a `harness = false` `[[test]]` in `tests/Cargo.toml` whose `main` is
//! `posmon_e2e_tests::trials::run(vec![trial!(a_test, Need::Program("promtool")), …])`; the
//! usual arguments (a name filter, `--exact`, `--list`, `--test-threads`, `--nocapture`) work.

use std::path::Path;
use std::process::{Command, ExitCode};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::{find_program, open_file_limits, REQUIRE_ALL_ENV};

/// Something a test needs from the machine it runs on.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A program on PATH (or at an absolute path); the test finds it with
    /// [`crate::program`].
    Program(&'static str),
    /// One program known under several names (distributions name Chromium differently).
    AnyProgram(&'static [&'static str]),
    /// Running as root (uid 0), e.g. to create network namespaces.
    Root,
    /// `/proc`, to read a process's memory.
    Proc,
    /// Soft and hard open-file limits of at least this many descriptors.
    OpenFiles(u64),
}

impl Need {
    /// Why this machine does not meet the need, or `None` when it does.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::Program(name) => find_program(name)
                .is_none()
                .then(|| format!("{name} is not installed")),
            Need::AnyProgram(names) => (!names.iter().any(|name| find_program(name).is_some()))
                .then(|| format!("none of {} is installed", names.join(", "))),
            Need::Root => match Command::new("id").arg("-u").output() {
                Ok(output) if String::from_utf8_lossy(&output.stdout).trim() == "0" => None,
                Ok(_) => Some("this test needs root".to_string()),
                Err(error) => Some(format!(
                    "this test needs root, and `id -u` cannot tell whether it runs as root: {error}"
                )),
            },
            Need::Proc => (!Path::new("/proc/self/status").exists())
                .then(|| "no /proc to read a process's memory from".to_string()),
            Need::OpenFiles(count) => match open_file_limits() {
                Some((soft, hard)) if soft >= count && hard >= count => None,
                Some((soft, hard)) => Some(format!(
                    "the open-file limits (soft {soft}, hard {hard}) are below the {count} this test needs"
                )),
                None => Some("`sh -c ulimit` cannot tell the open-file limits".to_string()),
            },
        }
    }
}

/// One test: its name (what filters match), what it needs, and its body (which panics to fail).
#[derive(Debug)]
pub struct Test {
    pub name: &'static str,
    pub needs: Vec<Need>,
    pub run: fn(),
}

/// `trial!(a_test_function, Need::Root, …)`: a [`Test`] named after its function.
#[macro_export]
macro_rules! trial {
    ($function:ident $(, $need:expr)* $(,)?) => {
        $crate::trials::Test {
            name: stringify!($function),
            needs: vec![$($need),*],
            run: $function,
        }
    };
}

/// Runs `tests` with the command line's arguments (as the built-in harness would) and returns
/// the exit code: failure if a test failed.
pub fn run(tests: Vec<Test>) -> ExitCode {
    let arguments = Arguments::from_args();
    let require_all = std::env::var_os(REQUIRE_ALL_ENV).is_some();
    let trials = tests
        .into_iter()
        .map(|test| trial(test, require_all))
        .collect();
    libtest_mimic::run(&arguments, trials).exit_code()
}

/// The trial of one test. Its needs are checked when it is about to run (not when the tests
/// are only listed): all of them, so that the reason names everything missing at once.
fn trial(test: Test, require_all: bool) -> Trial {
    Trial::ignorable_test(test.name, move || {
        let missing: Vec<String> = test
            .needs
            .iter()
            .filter_map(|need| need.missing())
            .collect();
        if missing.is_empty() {
            (test.run)();
            return Ok(Completion::Completed);
        }
        let reason = missing.join("; ");
        if require_all {
            Err(Failed::from(format!(
                "{reason} (and {REQUIRE_ALL_ENV} is set, so this test may not be ignored)"
            )))
        } else {
            Ok(Completion::ignored_with(reason))
        }
    })
}
