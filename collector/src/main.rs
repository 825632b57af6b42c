use std::process::ExitCode;

fn main() -> ExitCode {
    match posmon_collector::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("posmon-collector: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
