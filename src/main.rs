fn main() {
    // Before any thread or key: pipe's memory and environment stay closed to model code.
    pipe::sandbox::local::protect_process();
    // Output piped into `head` ends quietly, as other command-line tools do.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(pipe::cli::main());
}
