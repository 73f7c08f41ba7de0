//! The crate's modules import one way: each uses only modules listed before it in the
//! module table of `ARCHITECTURE.md` (lowest layer first). Doc comments may link anywhere.

use std::collections::HashMap;
use std::path::Path;

/// The module order of ARCHITECTURE.md's "toka-actors, module by module" table.
fn layer_order() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md at the repository root");
    let table = doc
        .split("## toka-actors, module by module")
        .nth(1)
        .expect("the module table")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut order = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            // `record` (+ `record::v1`) names one module.
            if !name.contains("::") {
                order.push(name.to_owned());
            }
        }
    }
    order
}

/// The `crate::<module>` paths a source file uses outside comments and tests.
fn uses(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn modules_import_only_lower_layers() {
    let order = layer_order();
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = 0;
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let (module, file) = if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, path.join("mod.rs"))
        } else {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, path.clone())
        };
        if module == "lib" {
            continue;
        }
        let Some(&mine) = rank.get(module.as_str()) else {
            wrong.push(format!("{module} is not in ARCHITECTURE.md's module table"));
            continue;
        };
        seen += 1;
        for used in uses(&std::fs::read_to_string(&file).unwrap()) {
            if rank.get(used.as_str()).is_some_and(|&theirs| theirs > mine) {
                wrong.push(format!("{module} uses {used}, a higher layer"));
            }
        }
    }
    assert!(seen >= 20, "found {seen} modules; is the table parsed?");
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_checker_sees_an_upward_import() {
    let source =
        "//! [`x`](crate::runtime)\nuse crate::runtime::Runtime;\n#[cfg(test)]\nuse crate::kernel;";
    assert_eq!(uses(source), ["runtime"]);
}
