//! userctl: the command-line client for user-service.

fn main() -> std::process::ExitCode {
    user_service::cli::main()
}
