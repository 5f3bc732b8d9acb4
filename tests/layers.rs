//! The floors of src/: the table in src/lib.rs's doc comment says which
//! floor each top-level module stands on, and every `crate::` and
//! `super::` path in src/ (unit tests excepted: a test may build its
//! fixtures from any module) must lead to a module on a lower floor. So
//! no two modules import each other, around a loop or straight back up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The floors of src/lib.rs's table: `//! | 3 | compile, containers |`.
fn floors(lib: &str) -> BTreeMap<String, u32> {
    let mut floors = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(floor) = cells[0].parse::<u32>() else {
            continue;
        };
        for m in cells[1].split(',').map(str::trim) {
            let before = floors.insert(m.to_string(), floor);
            assert!(before.is_none(), "{m} stands on two floors in src/lib.rs");
        }
    }
    floors
}

/// The code of a file without its comments and its `#[cfg(test)]` items
/// (rustfmt puts an item's closing brace at the attribute's indentation).
fn code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            let indent = &line[..line.len() - trimmed.len()];
            // A one-line item (`mod tests;`, a `use`), or one whose braces
            // close at the attribute's indentation.
            let close = format!("{indent}}}");
            if lines.next().is_some_and(|item| !item.ends_with(';')) {
                lines.by_ref().find(|item| *item == close);
            }
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// The top-level modules a piece of code names through `crate::a`,
/// `crate::{a, b::c}`, or `super::` paths climbing out of its own module
/// (`depth`: how far below its top-level module the file is).
fn named(code: &str, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with('$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.push(ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    for (i, _) in code.match_indices("super::") {
        if i >= "super::".len() && code[..i].ends_with("super::") {
            continue;
        }
        let mut rest = &code[i..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        if climbs > depth {
            out.push(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Each import across modules: (file, its module, the module it names).
fn imports() -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut out = Vec::new();
    for path in all {
        let rel = path.strip_prefix(src()).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        // src/m.rs and src/m/mod.rs are the module itself; src/m/x.rs is
        // one below it, src/m/a/mod.rs too, src/m/a/x.rs two.
        let file = parts.last().unwrap();
        let depth = parts.len() - 1 - usize::from(file == "mod.rs");
        // A file that is all unit tests (`#[cfg(test)] mod tests;`).
        if file == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = code(&text).join("\n");
        for m in named(&code, depth) {
            if m != top {
                out.push((rel.display().to_string(), top.clone(), m));
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_modules_on_lower_floors() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let floors = floors(&lib);
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let mut tabled: Vec<String> = floors.keys().cloned().collect();
    let mut sorted = declared.clone();
    sorted.sort();
    tabled.sort();
    assert_eq!(
        tabled, sorted,
        "the floors table in src/lib.rs and its modules"
    );
    let imports = imports();
    assert!(
        imports
            .iter()
            .any(|(_, from, to)| from == "cli" && to == "rollback"),
        "the scan found no import at all: {imports:?}"
    );
    let wrong: Vec<String> = imports
        .iter()
        .filter(|(_, from, to)| floors.get(to).is_none_or(|t| *t >= floors[from]))
        .map(|(file, from, to)| {
            let floor = |m: &str| floors.get(m).map_or("none".into(), |f| f.to_string());
            format!(
                "src/{file}: {from} (floor {}) imports {to} (floor {})",
                floor(from),
                floor(to)
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "imports that do not point down (see the table in src/lib.rs):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_reads_every_form_of_path() {
    let code = code(
        "use crate::nft::Socket;\n\
         use crate::{state, ruleset::{Family, Rule}};\n\
         // crate::cli in a comment\n\
         fn f() { super::super::probe::x(); super::local(); }\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::cli;\n}\n\
         #[cfg(test)]\n\
         mod more;\n\
         fn g() { crate::emit::x() }\n",
    )
    .join("\n");
    assert_eq!(
        named(&code, 1),
        ["nft", "state", "ruleset", "emit", "probe"],
        "{code}"
    );
    assert_eq!(named(&code, 2), ["nft", "state", "ruleset", "emit"]);
}
