use std::process::ExitCode;

fn main() -> ExitCode {
    match posmon_agent::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("posmon-agent: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
