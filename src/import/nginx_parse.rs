//! nginx.conf's syntax: directives ended by `;`, blocks in `{ }`, `#`
//! comments, "..." and '...' quoting with backslash escapes. The grammar is
//! this small on purpose (nginx's own `ngx_conf_parse`); what a directive means
//! is the importer's business, so any directive name is accepted here.

/// One directive: its line, name, arguments, and its block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The directive as its source wrote it (for the report), without the block.
    pub fn text(&self) -> String {
        // (a map's `""` line: a name that is empty)
        let mut t = if self.name.is_empty() {
            "\"\"".to_string()
        } else {
            self.name.clone()
        };
        for a in &self.args {
            t.push(' ');
            if a.is_empty() || a.contains(char::is_whitespace) {
                t.push_str(&format!("{a:?}"));
            } else {
                t.push_str(a);
            }
        }
        t
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String, usize),
    Semi(usize),
    Open(usize),
    Close(usize),
}

fn tokens(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            ';' => {
                out.push(Tok::Semi(line));
                chars.next();
            }
            '{' => {
                out.push(Tok::Open(line));
                chars.next();
            }
            '}' => {
                out.push(Tok::Close(line));
                chars.next();
            }
            '"' | '\'' => {
                let q = c;
                let start = line;
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("line {start}: a quote that is never closed")),
                        Some(x) if x == q => break,
                        Some('\\') => match chars.next() {
                            Some(n) => {
                                if n == '\n' {
                                    line += 1;
                                }
                                match n {
                                    'n' => w.push('\n'),
                                    't' => w.push('\t'),
                                    'r' => w.push('\r'),
                                    '"' | '\'' | '\\' => w.push(n),
                                    other => {
                                        w.push('\\');
                                        w.push(other);
                                    }
                                }
                            }
                            None => {
                                return Err(format!("line {start}: a quote that is never closed"))
                            }
                        },
                        Some(x) => {
                            if x == '\n' {
                                line += 1;
                            }
                            w.push(x)
                        }
                    }
                }
                out.push(Tok::Word(w, start));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() || x == ';' || x == '{' || x == '}' {
                        break;
                    }
                    // ${var} keeps its braces
                    if x == '$' {
                        w.push(x);
                        chars.next();
                        if chars.peek() == Some(&'{') {
                            for y in chars.by_ref() {
                                w.push(y);
                                if y == '}' {
                                    break;
                                }
                            }
                        }
                        continue;
                    }
                    if x == '\\' {
                        chars.next();
                        if let Some(n) = chars.next() {
                            w.push('\\');
                            w.push(n);
                        }
                        continue;
                    }
                    w.push(x);
                    chars.next();
                }
                out.push(Tok::Word(w, line));
            }
        }
    }
    Ok(out)
}

/// `if ($a = b)`: the parentheses are the condition's, not its words (as
/// nginx's rewrite module and crossplane read them).
fn if_parens(args: &mut Vec<String>) {
    if let Some(first) = args.first_mut() {
        if let Some(rest) = first.strip_prefix('(') {
            *first = rest.to_string();
        }
    }
    if let Some(last) = args.last_mut() {
        if let Some(rest) = last.strip_suffix(')') {
            *last = rest.to_string();
        }
    }
    args.retain(|a| !a.is_empty());
}

/// Parses a file into its directives. An error names the line.
pub fn parse(src: &str) -> Result<Vec<Directive>, String> {
    let toks = tokens(src)?;
    let mut pos = 0;
    let out = block(&toks, &mut pos, 0)?;
    Ok(out)
}

fn block(toks: &[Tok], pos: &mut usize, depth: usize) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    while *pos < toks.len() {
        match &toks[*pos] {
            Tok::Close(l) => {
                if depth == 0 {
                    return Err(format!("line {l}: a }} without its {{"));
                }
                *pos += 1;
                return Ok(out);
            }
            Tok::Semi(l) | Tok::Open(l) => {
                return Err(format!("line {l}: a directive without a name"));
            }
            Tok::Word(name, line) => {
                let (name, line) = (name.clone(), *line);
                *pos += 1;
                let mut args = Vec::new();
                loop {
                    match toks.get(*pos) {
                        Some(Tok::Word(w, _)) => {
                            args.push(w.clone());
                            *pos += 1;
                        }
                        Some(Tok::Semi(_)) => {
                            *pos += 1;
                            out.push(Directive {
                                line,
                                name,
                                args,
                                block: None,
                            });
                            break;
                        }
                        Some(Tok::Open(_)) => {
                            *pos += 1;
                            if name == "if" {
                                if_parens(&mut args);
                            }
                            if depth > 32 {
                                return Err(format!("line {line}: blocks nested too deep"));
                            }
                            let b = block(toks, pos, depth + 1)?;
                            out.push(Directive {
                                line,
                                name,
                                args,
                                block: Some(b),
                            });
                            break;
                        }
                        Some(Tok::Close(l)) => {
                            return Err(format!("line {l}: {name} is not ended by ';'"))
                        }
                        None => return Err(format!("line {line}: {name} is not ended by ';'")),
                    }
                }
            }
        }
    }
    if depth > 0 {
        return Err("the file ends inside a block (a { without its })".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_syntax() {
        let d = parse(
            "worker_processes auto; # comment\nhttp {\n  upstream api { server 10.0.0.1:80 weight=2; }\n  server {\n    listen 80;\n    location ~* \\.php$ { return 403; }\n    add_header X-A \"a b; c\";\n    if ($host = x) { return 301 https://$host$request_uri; }\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(d[0].name, "worker_processes");
        let http = d[1].block.as_ref().unwrap();
        assert_eq!(http[0].args, vec!["api"]);
        let server = http[1].block.as_ref().unwrap();
        assert_eq!(server[1].args, vec!["~*", "\\.php$"]);
        assert_eq!(server[1].line, 6);
        assert_eq!(server[2].args[1], "a b; c");
        assert_eq!(server[3].args, vec!["$host", "=", "x"]);
        assert!(parse("http {").is_err());
        assert!(parse("}").is_err());
        assert!(parse("listen 80").is_err());
        assert!(parse("a \"b").is_err());
    }
}
