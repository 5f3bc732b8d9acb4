//! `fwharden metrics`: the kernel's counters and the state records in
//! Prometheus text format, on stdout, into a file for node_exporter's
//! textfile collector, or over HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::exit;
use crate::observe::{self, http, metrics};
use crate::state::Dirs;

pub fn run(dirs: &Dirs, output: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<i32> {
    let text = || -> anyhow::Result<String> { Ok(metrics::render(&observe::snapshot(dirs)?)) };
    if let Some(addr) = listen {
        http::serve(
            addr,
            |at| eprintln!("fwharden: serving metrics on http://{at}/metrics"),
            || text().map_err(|e| format!("fwharden: {e:#}")),
        )?;
        return Ok(exit::OK);
    }
    let text = text()?;
    match output {
        None => print!("{text}"),
        Some(path) => write_atomically(path, &text)
            .with_context(|| format!("writing the metrics to {}", path.display()))?,
    }
    Ok(exit::OK)
}

/// Writes `text` to `path` by a temporary file in the same directory and
/// a rename, as node_exporter's textfile collector asks: it may read the
/// file at any moment and must never see half of it. The file is readable
/// by all (the collector runs as its own user); it holds counters only.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(
        || "metrics".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // The collector reads only `*.prom`: the temporary name must not end so.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
