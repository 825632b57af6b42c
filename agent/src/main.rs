use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(posmon_agent::cli::run())
}
