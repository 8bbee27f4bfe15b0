//! Project rules that a reviewer would otherwise check by eye, as an ordinary
//! test (the pattern of rust-analyzer's `xtask/src/tidy.rs`): every Rust file
//! opens with a `//!` line, every `unsafe` block or impl carries a `// SAFETY:`
//! comment, every `unsafe fn` a `# Safety` section, and no placeholder or
//! disabled test (`todo!`, `unimplemented!`, `#[ignore]`, `#[should_panic]`)
//! is left in the tree.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name == "target" || name.starts_with("target-") || name.starts_with('.') {
                continue;
            }
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// The comment and attribute lines directly above line `i`.
fn preamble(lines: &[&str], i: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut j = i;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim();
        if t.starts_with("//") || t.starts_with("#[") || t.starts_with("#![") {
            out.push(t.to_string());
        } else {
            break;
        }
    }
    out
}

/// True when `line` opens an unsafe block or impl (not an `unsafe fn`, not
/// an `unsafe trait` declaration, not a mention in a comment or string).
fn opens_unsafe_block(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    if code.contains('"') {
        return false;
    }
    code.contains("unsafe {") || code.trim_end().ends_with("unsafe") || code.contains("unsafe impl")
}

#[test]
fn files_open_with_module_doc() {
    let bad: Vec<String> = all_files()
        .into_iter()
        .filter(|(_, t)| {
            let first = t.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.trim_start().starts_with("//!")
        })
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(bad.is_empty(), "files without a leading //! line: {bad:#?}");
}

#[test]
fn unsafe_blocks_have_safety_comments() {
    let mut bad = Vec::new();
    for (path, text) in all_files() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !opens_unsafe_block(line) {
                continue;
            }
            // The comment may sit above the statement that contains the block
            // (`let x = unsafe { .. }`), above an attribute, or on the line
            // before for a block that opens a multi-line expression.
            let above = preamble(&lines, i);
            let inline = line.contains("SAFETY:");
            let found = inline || above.iter().any(|l| l.contains("SAFETY:"));
            if !found {
                bad.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe without a // SAFETY: comment above:\n{}",
        bad.join("\n")
    );
}

#[test]
fn unsafe_fns_have_safety_sections() {
    let mut bad = Vec::new();
    for (path, text) in all_files() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("").trim_start();
            let is_pub_unsafe_fn = (code.starts_with("pub unsafe fn")
                || code.starts_with("pub(crate) unsafe fn")
                || code.starts_with("unsafe fn")
                || code.starts_with("pub unsafe trait")
                || code.starts_with("unsafe trait"))
                && !code.contains('"');
            if !is_pub_unsafe_fn {
                continue;
            }
            let above = preamble(&lines, i);
            if !above
                .iter()
                .any(|l| l.contains("# Safety") || l.contains("SAFETY"))
            {
                bad.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe fn/trait without a # Safety section:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_placeholders_or_disabled_tests() {
    // Built from pieces so this file does not trip its own check.
    let forbidden = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("#[", "ignore"),
        concat!("#[", "should_panic"),
    ];
    let mut bad = Vec::new();
    for (path, text) in all_files() {
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in forbidden {
                if line.contains(f) {
                    bad.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "placeholders or disabled tests:\n{}",
        bad.join("\n")
    );
}
