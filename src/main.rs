use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    balance_exporter::metrics::tune_allocator();
    balance_exporter::cli::main().await
}
