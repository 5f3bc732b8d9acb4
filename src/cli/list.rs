//! `fwharden list`: every profile there is, where it was found, what it is for.

use serde_json::json;

use crate::profile::diag::SourceFile;
use crate::profile::lookup::Location;
use crate::profile::{parse, SearchPath};
use crate::term::safe;

use super::exit;

pub fn run(search: &SearchPath, json: bool) -> anyhow::Result<i32> {
    let mut rows = Vec::new();
    for listed in search.list() {
        // Only the description is wanted: parse, do not resolve, so one
        // broken profile does not hide the others.
        let description = match search.find_name(&listed.name) {
            Ok(found) => {
                let src = SourceFile::new(found.location.path(), found.text);
                let mut diags = Vec::new();
                let raw = parse::parse(&src, &mut diags);
                if diags.is_empty() {
                    raw.description.map(|d| d.value).unwrap_or_default()
                } else {
                    format!("(invalid: run `fwharden check {}`)", listed.name)
                }
            }
            Err(d) => format!("(unreadable: {})", d.message),
        };
        rows.push((listed, description));
    }
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(l, d)| {
                json!({
                    "name": l.name,
                    "location": l.location.describe(),
                    "builtin": matches!(l.location, Location::Builtin(_)),
                    "description": d,
                    "shadows": l.shadows.iter().map(Location::describe).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        eprintln!(
            "no profiles found in {}",
            search
                .dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(exit::OK);
    }
    // Names, paths and descriptions come from the file system and the
    // profiles: escaped, then aligned.
    let rows: Vec<[String; 3]> = rows
        .iter()
        .map(|(l, d)| {
            [
                safe(&l.name).to_string(),
                safe(&l.location.describe()).to_string(),
                safe(d).to_string(),
            ]
        })
        .collect();
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let lwidth = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
    for [name, location, description] in &rows {
        println!("{name:width$}  {location:lwidth$}  {description}");
    }
    Ok(exit::OK)
}
