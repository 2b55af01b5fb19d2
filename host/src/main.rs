//! The `stagecraft` binary: parse arguments, run one command, exit with its documented code.

fn main() {
    std::process::exit(stagecraft::cli::main());
}
