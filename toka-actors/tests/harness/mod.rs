//! The libtest-like entry of `harness = false` tests (`toka-actors/tests/crash_tree.rs`,
//! `toka-tools/tests/tool_crash.rs`, which includes this file by path): enough of
//! libtest's command line for `cargo test` to list and filter them.

/// Runs `test` unless the command line lists tests (`--list`) or filters it out (a name
/// filter that does not match `name`, or `--exact` with another name).
pub(crate) fn run_as_test(name: &str, test: impl FnOnce()) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected = filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                *f == name
            } else {
                name.contains(f.as_str())
            }
        });
    if !selected {
        println!("{name}: filtered out");
        return;
    }
    test();
}
