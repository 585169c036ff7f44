use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    balance_exporter::cli::main().await
}
