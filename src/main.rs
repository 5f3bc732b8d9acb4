use clap::Parser;

fn main() {
    let cli = fwharden::cli::Cli::parse();
    let code = match fwharden::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // The whole chain, once: what failed, then why.
            eprintln!("fwharden: error: {err:#}");
            fwharden::cli::exit::FAILURE
        }
    };
    std::process::exit(code);
}
