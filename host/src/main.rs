//! The `stagecraft` binary: parse arguments, run one command, exit with its documented code.

fn main() {
    stagecraft::plugin::harden_process();
    std::process::exit(stagecraft::cli::main());
}
