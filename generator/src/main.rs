//! The `ggen` binary: all work happens in the library; see [`ggen::cli`].

fn main() -> std::process::ExitCode {
    ggen::cli::main()
}
