use clap::Parser;

#[global_allocator]
static ALLOC: fwharden::bigpages::BigPages = fwharden::bigpages::BigPages;

fn main() {
    // A closed stdout ends fwharden quietly, as any filter (see sigpipe).
    fwharden::sigpipe::restore_default();
    let cli = fwharden::cli::Cli::parse();
    if matches!(cli.command, fwharden::cli::Command::Watch { .. }) {
        fwharden::sigpipe::ignore();
    }
    let code = match fwharden::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // The whole chain, once: what failed, then why.
            // Errors quote paths and profile text: escaped for the terminal.
            let text = format!("{err:#}");
            eprintln!("fwharden: error: {}", fwharden::term::safe_lines(&text));
            fwharden::cli::codes::of(&err)
        }
    };
    std::process::exit(code);
}
