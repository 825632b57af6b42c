//! The checked-in Prometheus rules and Alertmanager example pass the tools' own checks:
//! `promtool check rules`, `promtool test rules` (the rules' unit tests) and
//! `amtool check-config`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use posmon_e2e_tests::trials::{self, Need};
use posmon_e2e_tests::{program, trial};

fn main() -> ExitCode {
    trials::run(vec![
        trial!(
            prometheus_rules_pass_promtool_check_and_their_unit_tests,
            Need::Program("promtool")
        ),
        trial!(
            the_alertmanager_example_passes_amtool,
            Need::Program("amtool")
        ),
    ])
}

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn run(program: &Path, args: &[&str], dir: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = program("promtool");
    let dir = dashboards().join("prometheus");
    run(&promtool, &["check", "rules", "posmon-rules.yml"], &dir);
    run(&promtool, &["test", "rules", "posmon-rules_test.yml"], &dir);
}

fn the_alertmanager_example_passes_amtool() {
    let amtool = program("amtool");
    let dir = dashboards().join("alertmanager");
    run(&amtool, &["check-config", "alertmanager.yml"], &dir);
}
