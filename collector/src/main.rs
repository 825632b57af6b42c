use std::process::ExitCode;

/// The collector allocates for every report it decodes; mimalloc's per-thread caches cut that
/// cost by a good share against the system allocator (BENCHMARKS.md, collector ingest).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match posmon_collector::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("posmon-collector: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
