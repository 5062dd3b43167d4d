fn main() -> std::process::ExitCode {
    walrelay::cli::main()
}
