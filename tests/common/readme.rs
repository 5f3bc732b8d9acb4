//! The README's examples, for the tests that hold them to real output.

use super::root;

/// The fenced blocks of the README section under `heading` (`## ...`),
/// without their fences: the examples the tests hold to the real output.
pub fn readme_blocks(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"));
    let rest = &readme[start + heading.len() + 2..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.split_once('\n').map_or("", |(_, body)| body).to_string())
        .collect()
}
