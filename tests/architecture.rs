//! The module graph: dependencies between rampart's top-level modules point one
//! way, down the layers below, and no two modules (nor two files) depend on each
//! other, directly or through others.
//!
//! It reads the `crate::` and `super::` paths of every file in src/ (tests,
//! comments and string literals left out), so it needs no tool beyond the test
//! runner. A new top-level module must be given a layer here; a new cycle or an
//! upward dependency fails with the paths that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A module may use its own layer and the ones below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves: pure codecs, matchers and clocks, no state",
        &[
            "boxed",
            "bytehash",
            "clock",
            "forwarded",
            "h1",
            "heap",
            "http2",
            "proxy_protocol",
            "relaybuf",
            "router",
            "rules",
            "sdnotify",
            "tls",
        ],
    ),
    ("config: what the user asked for, validated", &["config"]),
    (
        "runtime state: what the data plane reads and counts into",
        &[
            "accesslog",
            "limits",
            "metrics",
            "plane",
            "pool",
            "ratelimit",
            "rates",
            "snapshot",
        ],
    ),
    ("data plane", &["listener", "proxy", "upstream"]),
    (
        "control plane: the tasks that change the runtime state",
        &[
            "control",
            "discovery",
            "ha",
            "health",
            "reload",
            "statefile",
            "upgrade",
        ],
    ),
    ("views and tools", &["admin", "import"]),
    ("process", &["demo", "supervisor"]),
];

/// One file: its module path (`proxy::http`) and its source without tests,
/// comments and literals.
struct File {
    module: Vec<String>,
    code: String,
}

fn files() -> Vec<File> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read src/") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&root).expect("under src/");
            let mut module: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            // the binary is a client of the library, not one of its modules
            if module == ["main"] {
                continue;
            }
            if module == ["lib"] {
                module.clear();
            }
            let src = std::fs::read_to_string(&p).expect("read a source file");
            out.push(File {
                module,
                code: without_tests(&strip(&src)),
            });
        }
    }
    out
}

/// Source without comments, string and char literals (each becomes `""`).
fn strip(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &s[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if let Some(body) = rest.strip_prefix("/*") {
            i += body.find("*/").map_or(rest.len(), |e| e + 4);
            out.push(' ');
        } else if let Some(n) = raw_string_len(rest, i == 0 || !is_ident(b[i - 1])) {
            i += n;
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if let Some(n) = char_literal_len(rest) {
            i += n;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `r"..."`, `r#"..."#`, `br"..."`: its length.
fn raw_string_len(s: &str, at_token_start: bool) -> Option<usize> {
    if !at_token_start {
        return None;
    }
    let t = s.strip_prefix('b').unwrap_or(s);
    let t = t.strip_prefix('r')?;
    let hashes = t.len() - t.trim_start_matches('#').len();
    let body = t[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(s.len() - body.len() + end + close.len())
}

/// `'x'`, `'\n'`, `'\u{1F600}'` (not a lifetime): its length.
fn char_literal_len(s: &str) -> Option<usize> {
    let t = s.strip_prefix('\'')?;
    if let Some(esc) = t.strip_prefix('\\') {
        let end = esc.find('\'')?;
        return Some(2 + end + 1);
    }
    let c = t.chars().next()?;
    t[c.len_utf8()..]
        .starts_with('\'')
        .then_some(1 + c.len_utf8() + 1)
}

/// Drops every item marked `#[cfg(test)]` (a `mod tests { .. }`, a helper).
fn without_tests(s: &str) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(at) = s[pos..].find("#[cfg(test)]") {
        let start = pos + at;
        out.push_str(&s[pos..start]);
        let after = start + "#[cfg(test)]".len();
        let semi = s[after..].find(';').map(|x| after + x);
        let brace = s[after..].find('{').map(|x| after + x);
        pos = match (semi, brace) {
            (Some(sc), Some(br)) if sc < br => sc + 1,
            (_, Some(br)) => {
                let mut depth = 0;
                let mut end = s.len();
                for (k, c) in s[br..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = br + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(sc), None) => sc + 1,
            (None, None) => s.len(),
        };
    }
    out.push_str(&s[pos..]);
    out
}

/// The paths of a use tree starting at `s` (after `crate::`): `a::{b, c::d}` gives
/// `a::b` and `a::c::d`.
fn use_paths(s: &str) -> Vec<Vec<String>> {
    fn ident(s: &str) -> (&str, &str) {
        let s = s.trim_start();
        let n = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*'))
            .unwrap_or(s.len());
        (&s[..n], &s[n..])
    }
    fn tree<'a>(s: &'a str, prefix: &[String], out: &mut Vec<Vec<String>>) -> &'a str {
        let t = s.trim_start();
        if let Some(mut rest) = t.strip_prefix('{') {
            loop {
                let r = rest.trim_start();
                if let Some(r) = r.strip_prefix('}') {
                    return r;
                }
                if r.is_empty() {
                    return r;
                }
                rest = tree(r, prefix, out);
                rest = rest.trim_start();
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let (name, rest) = ident(t);
        if name.is_empty() {
            return t.get(1..).unwrap_or("");
        }
        let mut path = prefix.to_vec();
        path.push(name.to_string());
        match rest.trim_start().strip_prefix("::") {
            Some(r) => tree(r, &path, out),
            None => {
                out.push(path);
                rest
            }
        }
    }
    let mut out = Vec::new();
    tree(s, &[], &mut out);
    out
}

/// Each file's dependencies on other files: module -> (module -> paths used).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn file_graph(files: &[File]) -> Graph {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|k| path[..k].to_vec())
            .find(|m| modules.contains(m))
    };
    let mut g = Graph::new();
    for f in files {
        let me = f.module.join("::");
        g.entry(me.clone()).or_default();
        let code = &f.code;
        for (kind, base) in [
            ("crate::", vec![]),
            ("super::", parent(&f.module)),
            ("self::", f.module.clone()),
        ] {
            let mut from = 0;
            while let Some(at) = code[from..].find(kind) {
                let start = from + at;
                from = start + kind.len();
                if start > 0 && is_ident(code.as_bytes()[start - 1]) {
                    continue;
                }
                for p in use_paths(&code[from..]) {
                    let mut full = base.clone();
                    full.extend(p);
                    // an item of the crate root (`crate::run`) belongs to lib.rs
                    let target = resolve(&full).unwrap_or_default();
                    let t = target.join("::");
                    if t != me {
                        g.entry(me.clone())
                            .or_default()
                            .entry(t)
                            .or_default()
                            .insert(full.join("::"));
                    }
                }
            }
        }
    }
    // A child module named by its bare name (`body::ReqBody`, `pub use
    // idle::Sender`, `http2::send(..)`) in its parent's file.
    for f in files {
        let me = f.module.join("::");
        for child in modules
            .iter()
            .filter(|m| m.len() == f.module.len() + 1 && m[..f.module.len()] == f.module[..])
        {
            let name = format!("{}::", child[child.len() - 1]);
            let bytes = f.code.as_bytes();
            let named = f
                .code
                .match_indices(&name)
                .any(|(i, _)| i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':'));
            if named {
                g.entry(me.clone())
                    .or_default()
                    .entry(child.join("::"))
                    .or_default()
                    .insert(name);
            }
        }
    }
    g
}

/// The module `super::` names in a file: its parent (for `a/b.rs`, `a`; for
/// `a/mod.rs`, the crate root).
fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

fn top(m: &str) -> String {
    if m.is_empty() {
        "(crate root)".to_string()
    } else {
        m.split("::").next().unwrap_or(m).to_string()
    }
}

/// The strongly connected components with more than one node (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(next) = t.g.get(v) {
            for w in next {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn describe(g: &Graph, comp: &[String], level: impl Fn(&str) -> String) -> String {
    let mut s = String::new();
    for (a, deps) in g {
        for (b, paths) in deps {
            let (la, lb) = (level(a), level(b));
            if la != lb && comp.contains(&la) && comp.contains(&lb) {
                let shown: Vec<&String> = paths.iter().take(4).collect();
                s.push_str(&format!("\n    {a} -> {b}: {shown:?}"));
            }
        }
    }
    s
}

#[test]
fn no_import_cycles_between_files() {
    let g = file_graph(&files());
    let simple: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .map(|(a, d)| (a.clone(), d.keys().cloned().collect()))
        .collect();
    let found = cycles(&simple);
    let mut report = String::new();
    for c in &found {
        report.push_str(&format!("\n  {c:?}{}", describe(&g, c, |m| m.to_string())));
    }
    assert!(found.is_empty(), "files that depend on each other:{report}");
}

#[test]
fn top_level_modules_form_layers() {
    let g = file_graph(&files());
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (*m, i)))
        .collect();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, deps) in &g {
        tops.entry(top(a)).or_default();
        for b in deps.keys() {
            if top(a) != top(b) {
                tops.entry(top(a)).or_default().insert(top(b));
            }
        }
    }
    let mut problems = Vec::new();
    for m in tops.keys() {
        if m != "(crate root)" && !layer_of.contains_key(m.as_str()) {
            problems.push(format!(
                "module {m} has no layer: add it to LAYERS in tests/architecture.rs"
            ));
        }
    }
    for c in cycles(&tops) {
        problems.push(format!("cycle {c:?}:{}", describe(&g, &c, top)));
    }
    for (a, deps) in &tops {
        for b in deps {
            // the crate root (lib.rs) declares every module; nothing uses it
            if a == "(crate root)" {
                continue;
            }
            match (layer_of.get(a.as_str()), layer_of.get(b.as_str())) {
                (Some(la), Some(lb)) if lb > la => problems.push(format!(
                    "{a} ({}) depends on {b} ({}), a layer above it:{}",
                    LAYERS[*la].0,
                    LAYERS[*lb].0,
                    describe(&g, &[a.clone(), b.clone()], top)
                )),
                (_, None) if b == "(crate root)" => problems.push(format!(
                    "{a} uses an item of the crate root; name it by its module:{}",
                    describe(&g, &[a.clone(), b.clone()], top)
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Modules whose tasks live as long as their command (the demo's backends, the
/// importer's verification run), not a long-running proxy's.
const TOOLS: &[&str] = &["demo", "import"];

/// Why a spawn at `at` (the offset of `spawn(` in `code`) is accounted for, if
/// it is: on a TaskTracker (counted, waited for at shutdown), scoped to its
/// caller (aborted on drop, or awaited), or a named background task (a tracing
/// span, a thread name).
fn spawn_accounted(code: &str, at: usize) -> Result<&'static str, String> {
    let before = &code[code[..at].rfind(';').map_or(0, |i| i + 1)..at];
    // the call's argument: up to its matching parenthesis
    let open = at + "spawn".len();
    let mut depth = 0;
    let mut end = code.len();
    for (i, c) in code[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    end = open + i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    let arg = &code[open..end];
    let after = code[end..].trim_start();
    let spawner = before.trim_end().trim_end_matches('.').trim_end();
    if ["tracker", "tasks()", "_tasks", "conns"]
        .iter()
        .any(|t| spawner.ends_with(t))
    {
        Ok("tracked")
    } else if before.contains("AbortOnDropHandle::new(") || after.starts_with(".await") {
        Ok("scoped to its caller")
    } else if arg.contains("instrument(") || arg.contains("in_scope(") {
        Ok("named by a span")
    } else if before.contains(".name(") {
        Ok("a named thread")
    } else {
        Err(format!(
            "spawn{}",
            arg.split_whitespace().collect::<Vec<_>>().join(" ")
        ))
    }
}

/// Every task the proxy spawns is tracked, scoped or named (issue 18: a task
/// without a span cannot be told apart in a log; one nobody tracks cannot be
/// counted at shutdown).
#[test]
fn every_task_is_tracked_scoped_or_named() {
    let mut problems = Vec::new();
    let mut seen = 0;
    for f in files() {
        if f.module
            .first()
            .is_some_and(|m| TOOLS.contains(&m.as_str()))
        {
            continue;
        }
        let code = &f.code;
        let mut from = 0;
        while let Some(i) = code[from..].find("spawn") {
            let at = from + i;
            from = at + 5;
            let rest = &code[at + 5..];
            let prev = code[..at].chars().next_back().unwrap_or(' ');
            // `spawn(` or `spawn_blocking(`, called; not `.spawn()` of a process
            let call = if rest.starts_with('(') {
                at
            } else if let Some(r) = rest.strip_prefix("_blocking") {
                if !r.starts_with('(') {
                    continue;
                }
                at + "_blocking".len()
            } else {
                continue;
            };
            if is_ident(prev as u8) || code[call + 5..].starts_with("()") {
                continue;
            }
            seen += 1;
            if let Err(what) = spawn_accounted(code, call) {
                let short: String = what.chars().take(160).collect();
                problems.push(format!("{}: {short}", f.module.join("::")));
            }
        }
    }
    assert!(seen > 10, "the scan found only {seen} spawns");
    assert!(
        problems.is_empty(),
        "spawned without a tracker, a scope or a span:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: a cycle and an upward edge in a made-up crate are found.
#[test]
fn the_checker_finds_what_it_must() {
    let files = vec![
        File {
            module: vec!["a".into()],
            code: without_tests(&strip(
                "use crate::b::{X, c::Y};\n// crate::z::Nope\nconst S: &str = \"crate::z\";",
            )),
        },
        File {
            module: vec!["b".into()],
            code: strip("fn f() { super::a::g(); }"),
        },
        File {
            module: vec!["b".into(), "c".into()],
            code: without_tests(&strip(
                "#[cfg(test)]\nmod tests { use crate::a; }\nfn h() {}",
            )),
        },
        File {
            module: vec!["z".into()],
            code: String::new(),
        },
    ];
    let g = file_graph(&files);
    let a: Vec<&String> = g["a"].keys().collect();
    assert_eq!(a, ["b", "b::c"], "{g:?}");
    assert_eq!(g["b"].keys().collect::<Vec<_>>(), ["a"]);
    assert!(g["b::c"].is_empty(), "a #[cfg(test)] module is left out");
    let simple: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .map(|(a, d)| (a.clone(), d.keys().cloned().collect()))
        .collect();
    assert_eq!(
        cycles(&simple),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    assert_eq!(
        strip("let c = '\"'; let l: &'a str = r#\"x\"#;"),
        "let c = ' '; let l: &'a str = \"\";"
    );
    // and a bare spawn is told from the accounted ones
    let bare = "fn f() { tokio::spawn(async move { work().await; }); }";
    assert!(spawn_accounted(bare, bare.find("spawn").unwrap()).is_err());
    for ok in [
        "fn f() { tracker.spawn(async {}); }",
        "fn f() { tokio::spawn(async {}.instrument(span)); }",
        "fn f() { let t = AbortOnDropHandle::new(tokio::spawn(c)); }",
        "fn f() { let r = tokio::task::spawn_blocking(w).await; }",
    ] {
        let at = ok.find("spawn").unwrap();
        let at = if ok[at..].starts_with("spawn_blocking") {
            at + "_blocking".len()
        } else {
            at
        };
        assert!(spawn_accounted(ok, at).is_ok(), "{ok}");
    }
}
