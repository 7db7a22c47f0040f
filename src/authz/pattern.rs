//! Value patterns of ACL match fields: globs, `/regex/`, and `${...}`
//! placeholders.
//!
//! Patterns are parsed and, where they contain no placeholder, fully compiled
//! once when the ACL is compiled. Placeholders depend on the request, so they
//! are expanded per decision. Expanded values are always *literal*: a glob
//! matcher treats them as plain characters (never as `*` or `?`), and regex
//! templates insert them through [`regex::escape`]. Without this an account
//! named `a*` would turn `${account}/*` into a rule over every `a…` namespace.

use regex::{Regex, RegexBuilder};

use crate::authn::Labels;

/// Most label-placeholder expansions tried for one pattern. A pattern with
/// two `${labels:...}` keys of 40 values each already gives 1600; beyond this
/// cap the pattern fails closed (no match) instead of burning CPU per request.
const MAX_EXPANSIONS: usize = 1024;

/// Compiled-size cap of regexes built at decision time from templates, so a
/// large label set cannot make one request compile a huge automaton.
const TEMPLATE_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The request values placeholders expand to, for one grant decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vars<'a> {
    pub account: &'a str,
    pub name: &'a str,
    pub resource_type: &'a str,
    pub service: &'a str,
    pub labels: &'a Labels,
}

/// What a placeholder stands for. Labels refer, by index, to the pattern's
/// own list of distinct label keys, so that every occurrence of one key takes
/// the same value within one expansion (as docker_auth does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Account,
    Name,
    Type,
    Service,
    Label(usize),
}

/// One glob element. Literal characters are kept as characters so that an
/// expanded placeholder value can never introduce a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters except `/`, including the empty run.
    Star,
    /// `?`: exactly one character except `/`.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobPiece {
    Tok(Tok),
    Var(Slot),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RegexPiece {
    /// Regex source, used verbatim.
    Src(String),
    /// Replaced by the escaped value.
    Var(Slot),
}

/// A compiled match value.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Glob(Vec<Tok>),
    GlobTemplate {
        pieces: Vec<GlobPiece>,
        label_keys: Vec<String>,
    },
    Regex(Regex),
    RegexTemplate {
        pieces: Vec<RegexPiece>,
        label_keys: Vec<String>,
    },
}

/// Source text between `${` and `}` mapped to its slot; label keys are
/// appended to `label_keys` on first sight.
fn slot_for(name: &str, label_keys: &mut Vec<String>) -> Result<Slot, String> {
    Ok(match name {
        "account" => Slot::Account,
        "name" => Slot::Name,
        "type" => Slot::Type,
        "service" => Slot::Service,
        _ => match name.strip_prefix("labels:") {
            Some(key) if !key.is_empty() => {
                let idx = match label_keys.iter().position(|k| k == key) {
                    Some(i) => i,
                    None => {
                        label_keys.push(key.to_owned());
                        label_keys.len() - 1
                    }
                };
                Slot::Label(idx)
            }
            _ => {
                return Err(format!(
                    "unknown placeholder \"${{{name}}}\" (known: ${{account}}, ${{name}}, \
                     ${{type}}, ${{service}}, ${{labels:KEY}})"
                ));
            }
        },
    })
}

/// Text or placeholder, in source order.
enum Part<'s> {
    Text(&'s str),
    Var(Slot),
}

/// Splits `src` at `${...}` placeholders. In regex mode a `$` preceded by an
/// odd number of backslashes is an escaped dollar, not a placeholder: otherwise
/// `\${account}` would splice the value after a backslash and `d` would become
/// the class `\d`.
fn split<'s>(
    src: &'s str,
    regex_mode: bool,
    label_keys: &mut Vec<String>,
) -> Result<Vec<Part<'s>>, String> {
    let mut parts = Vec::new();
    let mut text_start = 0;
    let mut search = 0;
    while let Some(off) = src[search..].find("${") {
        let at = search + off;
        let backslashes = src[text_start..at]
            .bytes()
            .rev()
            .take_while(|&b| b == b'\\')
            .count();
        if regex_mode && backslashes % 2 == 1 {
            search = at + 2;
            continue;
        }
        let close = src[at..]
            .find('}')
            .ok_or_else(|| format!("unterminated placeholder at byte {at}"))?;
        let name = &src[at + 2..at + close];
        if at > text_start {
            parts.push(Part::Text(&src[text_start..at]));
        }
        parts.push(Part::Var(slot_for(name, label_keys)?));
        text_start = at + close + 1;
        search = text_start;
    }
    if text_start < src.len() {
        parts.push(Part::Text(&src[text_start..]));
    }
    Ok(parts)
}

fn glob_tokens(text: &str) -> impl Iterator<Item = Tok> + '_ {
    text.chars().map(|c| match c {
        '*' => Tok::Star,
        '?' => Tok::Any,
        c => Tok::Lit(c),
    })
}

/// `/.../` with something between the slashes is a regex. Like docker_auth,
/// `//` and `/` stay globs (matching themselves).
fn regex_body(src: &str) -> Option<&str> {
    (src.len() > 2 && src.starts_with('/') && src.ends_with('/')).then(|| &src[1..src.len() - 1])
}

/// Anchors a set of alternatives to the whole string. Each alternative is
/// grouped so that `a|b` means "exactly a or exactly b", not "starts with a
/// or ends with b".
fn anchored<'a>(alternatives: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from(r"\A(?:");
    for (i, alt) in alternatives.into_iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        out.push_str("(?:");
        out.push_str(alt);
        out.push(')');
    }
    out.push_str(r")\z");
    out
}

impl Pattern {
    /// Parses and, when placeholder-free, fully compiles one pattern. The
    /// error is a message without the key path; the caller adds it.
    pub(crate) fn compile(src: &str) -> Result<Pattern, String> {
        let mut label_keys = Vec::new();
        let kind = match regex_body(src) {
            Some(body) => {
                let pieces: Vec<RegexPiece> = split(body, true, &mut label_keys)?
                    .into_iter()
                    .map(|p| match p {
                        Part::Text(t) => RegexPiece::Src(t.to_owned()),
                        Part::Var(s) => RegexPiece::Var(s),
                    })
                    .collect();
                // Values are escaped literals, so a stand-in value shows
                // whether every expansion will compile. Checking the body
                // alone first matters: inside our anchoring group an
                // unbalanced `a)(b` would become valid.
                let sample = render_regex(&pieces, |_| "x");
                let invalid = |e: regex::Error| format!("invalid regex {src}: {e}");
                Regex::new(&sample).map_err(invalid)?;
                let re = Regex::new(&anchored([sample.as_str()])).map_err(invalid)?;
                if pieces.iter().all(|p| matches!(p, RegexPiece::Src(_))) {
                    Kind::Regex(re)
                } else {
                    Kind::RegexTemplate { pieces, label_keys }
                }
            }
            None => {
                let parts = split(src, false, &mut label_keys)?;
                let mut pieces = Vec::new();
                for p in parts {
                    match p {
                        Part::Text(t) => pieces.extend(glob_tokens(t).map(GlobPiece::Tok)),
                        Part::Var(s) => pieces.push(GlobPiece::Var(s)),
                    }
                }
                if pieces.iter().all(|p| matches!(p, GlobPiece::Tok(_))) {
                    Kind::Glob(
                        pieces
                            .into_iter()
                            .filter_map(|p| match p {
                                GlobPiece::Tok(t) => Some(t),
                                GlobPiece::Var(_) => None,
                            })
                            .collect(),
                    )
                } else {
                    Kind::GlobTemplate { pieces, label_keys }
                }
            }
        };
        Ok(Pattern { kind })
    }

    /// True if `value` matches, with placeholders expanded from `vars`. With
    /// `${labels:KEY}` the pattern matches if any expansion does; a missing
    /// or empty label has no expansion, so the pattern does not match.
    pub(crate) fn matches(&self, value: &str, vars: &Vars<'_>) -> bool {
        match &self.kind {
            Kind::Glob(toks) => glob_match(toks, value),
            Kind::Regex(re) => re.is_match(value),
            Kind::GlobTemplate { pieces, label_keys } => {
                let mut hit = false;
                for_each_expansion(label_keys, vars, |chosen| {
                    let mut toks = Vec::with_capacity(pieces.len());
                    for p in pieces {
                        match p {
                            GlobPiece::Tok(t) => toks.push(*t),
                            GlobPiece::Var(s) => {
                                toks.extend(slot_value(*s, vars, chosen).chars().map(Tok::Lit))
                            }
                        }
                    }
                    hit = glob_match(&toks, value);
                    hit
                });
                hit
            }
            Kind::RegexTemplate { pieces, label_keys } => {
                // One regex per decision: all expansions as alternatives.
                let mut alternatives = Vec::new();
                let complete = for_each_expansion(label_keys, vars, |chosen| {
                    alternatives.push(render_regex(pieces, |s| slot_value(s, vars, chosen)));
                    false
                });
                if !complete || alternatives.is_empty() {
                    return false;
                }
                let source = anchored(alternatives.iter().map(String::as_str));
                match RegexBuilder::new(&source)
                    .size_limit(TEMPLATE_REGEX_SIZE_LIMIT)
                    .build()
                {
                    Ok(re) => re.is_match(value),
                    Err(e) => {
                        // Fail closed: an expansion we cannot compile grants nothing.
                        tracing::warn!(error = %e, "ACL regex expansion failed; treated as no match");
                        false
                    }
                }
            }
        }
    }
}

fn slot_value<'v>(slot: Slot, vars: &Vars<'v>, chosen: &[&'v str]) -> &'v str {
    match slot {
        Slot::Account => vars.account,
        Slot::Name => vars.name,
        Slot::Type => vars.resource_type,
        Slot::Service => vars.service,
        Slot::Label(i) => chosen[i],
    }
}

fn render_regex<'v>(pieces: &[RegexPiece], mut value: impl FnMut(Slot) -> &'v str) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            RegexPiece::Src(s) => out.push_str(s),
            RegexPiece::Var(s) => out.push_str(&regex::escape(value(*s))),
        }
    }
    out
}

/// Calls `f` with one value per label key for every combination, until `f`
/// returns true. Returns false, without calling `f`, when there are too many
/// combinations (fail closed); a missing label key has no combination.
fn for_each_expansion<'v>(
    label_keys: &[String],
    vars: &Vars<'v>,
    mut f: impl FnMut(&[&'v str]) -> bool,
) -> bool {
    let mut sets: Vec<&'v [String]> = Vec::with_capacity(label_keys.len());
    for key in label_keys {
        match vars.labels.get(key) {
            Some(values) if !values.is_empty() => sets.push(values),
            _ => return true, // no expansion: nothing can match
        }
    }
    let total = sets
        .iter()
        .try_fold(1usize, |acc, s| acc.checked_mul(s.len()));
    if total.is_none_or(|t| t > MAX_EXPANSIONS) {
        tracing::warn!(
            max = MAX_EXPANSIONS,
            "ACL pattern has too many label expansions; treated as no match"
        );
        return false;
    }
    let mut idx = vec![0usize; sets.len()];
    let mut chosen: Vec<&'v str> = sets.iter().map(|s| s[0].as_str()).collect();
    loop {
        if f(&chosen) {
            return true;
        }
        // Odometer step over the label value sets.
        let mut k = 0;
        loop {
            if k == sets.len() {
                return true;
            }
            idx[k] += 1;
            if idx[k] < sets[k].len() {
                chosen[k] = &sets[k][idx[k]];
                break;
            }
            idx[k] = 0;
            chosen[k] = &sets[k][0];
            k += 1;
        }
    }
}

/// Glob match over characters by dynamic programming: `reach[j]` says the
/// pattern so far matches the first `j` characters. Cost is pattern ×
/// value length (both short here) and free of backtracking blow-ups.
fn glob_match(toks: &[Tok], value: &str) -> bool {
    let text: Vec<char> = value.chars().collect();
    let n = text.len();
    let mut reach = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    reach[0] = true;
    for tok in toks {
        match *tok {
            Tok::Star => {
                next[0] = reach[0];
                for j in 1..=n {
                    next[j] = reach[j] || (next[j - 1] && text[j - 1] != '/');
                }
            }
            Tok::Any => {
                next[0] = false;
                for j in 1..=n {
                    next[j] = reach[j - 1] && text[j - 1] != '/';
                }
            }
            Tok::Lit(c) => {
                next[0] = false;
                for j in 1..=n {
                    next[j] = reach[j - 1] && text[j - 1] == c;
                }
            }
        }
        std::mem::swap(&mut reach, &mut next);
        if !reach.contains(&true) {
            return false;
        }
    }
    reach[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(account: &'a str, labels: &'a Labels) -> Vars<'a> {
        Vars {
            account,
            name: "lib/app",
            resource_type: "repository",
            service: "registry",
            labels,
        }
    }

    #[test]
    fn matches_patterns() {
        let mut labels = Labels::new();
        labels.insert("team".into(), vec!["red".into(), "blue".into()]);
        labels.insert("org".into(), vec!["acme".into()]);
        labels.insert("none".into(), vec![]);
        let cases: &[(&str, &str, &str, bool)] = &[
            // (pattern, account, value, matches)
            ("abc", "u", "abc", true),
            ("abc", "u", "abcd", false),
            ("", "u", "", true),
            ("", "u", "x", false),
            ("*", "u", "", true),
            ("*", "u", "a/b", false),
            ("a/*", "u", "a/", true),
            ("a/*", "u", "a/b", true),
            ("a/*", "u", "a/b/c", false),
            ("a/*/*", "u", "a/b/c", true),
            ("*/*c", "u", "xx/abc", true),
            ("a?c", "u", "abc", true),
            ("a?c", "u", "ac", false),
            ("a?c", "u", "a/c", false),
            ("a?c", "u", "aéc", true),
            ("a.c", "u", "abc", false),
            ("[ab]", "u", "a", false),
            ("[ab]", "u", "[ab]", true),
            ("/", "u", "/", true),
            ("//", "u", "//", true),
            ("/ab/", "u", "ab", true),
            ("/ab/", "u", "xaby", false),
            ("/a|b/", "u", "ab", false),
            ("/a|b/", "u", "b", true),
            ("/.+/", "u", "", false),
            ("/.*/", "u", "", true),
            ("/(foo|bar)/.+/", "u", "bar/x", true),
            ("/(foo|bar)/.+/", "u", "baz/x", false),
            ("/^x$/", "u", "x", true),
            ("${account}/*", "alice", "alice/x", true),
            ("${account}/*", "alice", "bob/x", false),
            ("${account}/*", "a*", "ab/x", false),
            ("${account}/*", "a*", "a*/x", true),
            ("${account}/*", "a?", "ab/x", false),
            ("${account}", "", "", true),
            ("/${account}/.*/", "a.b", "aXb/x", false),
            ("/${account}/.*/", "a.b", "a.b/x", true),
            ("/${account}/.*/", "a+", "aa/x", false),
            ("/${account}/.*/", "a+", "a+/x", true),
            // An even run of backslashes does not escape the placeholder.
            ("/\\\\${account}/", "d", "5", false),
            ("/\\\\${account}/", "d", "\\d", true),
            ("/(?i)${account}/", "Bob", "bob", true),
            ("${name}", "u", "lib/app", true),
            ("${type}:${service}", "u", "repository:registry", true),
            ("${labels:team}/*", "u", "red/x", true),
            ("${labels:team}/*", "u", "blue/x", true),
            ("${labels:team}/*", "u", "green/x", false),
            ("${labels:team}/${labels:team}", "u", "red/red", true),
            ("${labels:team}/${labels:team}", "u", "red/blue", false),
            ("${labels:org}/${labels:team}-*", "u", "acme/blue-1", true),
            ("${labels:org}/${labels:team}-*", "u", "acme/green-1", false),
            ("/${labels:team}-[0-9]+/", "u", "blue-42", true),
            ("/${labels:team}-[0-9]+/", "u", "green-42", false),
            ("${labels:missing}/*", "u", "/x", false),
            ("${labels:none}*", "u", "x", false),
            ("/${labels:missing}.*/", "u", "x", false),
        ];
        for &(pat, account, value, want) in cases {
            let p = Pattern::compile(pat).unwrap_or_else(|e| panic!("{pat}: {e}"));
            assert_eq!(
                p.matches(value, &vars(account, &labels)),
                want,
                "pattern {pat:?}, account {account:?}, value {value:?}"
            );
        }
    }

    #[test]
    fn label_values_are_literal() {
        let mut labels = Labels::new();
        labels.insert("team".into(), vec!["*".into(), ".+".into()]);
        let v = vars("u", &labels);
        let glob = Pattern::compile("${labels:team}/x").unwrap();
        assert!(glob.matches("*/x", &v));
        assert!(!glob.matches("red/x", &v));
        let re = Pattern::compile("/${labels:team}/x/").unwrap();
        assert!(re.matches(".+/x", &v));
        assert!(!re.matches("red/x", &v));
    }

    #[test]
    fn too_many_expansions_fail_closed() {
        let mut labels = Labels::new();
        let many: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        labels.insert("a".into(), many.clone());
        labels.insert("b".into(), many);
        let p = Pattern::compile("${labels:a}/${labels:b}").unwrap();
        assert!(!p.matches("v0/v0", &vars("u", &labels)));
        let p = Pattern::compile("${labels:a}/x").unwrap();
        assert!(p.matches("v39/x", &vars("u", &labels)));
    }

    #[test]
    fn rejects_bad_patterns() {
        let cases: &[(&str, &str)] = &[
            ("/(/", "invalid regex"),
            ("/a)(b/", "invalid regex"),
            ("/x{${account}}/", "invalid regex"),
            ("${acount}", "unknown placeholder \"${acount}\""),
            ("${labels:}", "unknown placeholder"),
            ("a${account", "unterminated placeholder"),
            ("/${nope}/", "unknown placeholder"),
            // `\$` is an escaped dollar, so `{account}` is left to the regex parser.
            ("/\\${account}/", "invalid regex"),
        ];
        for &(pat, want) in cases {
            let err = Pattern::compile(pat).expect_err(pat);
            assert!(err.contains(want), "{pat}: {err}");
        }
    }
}
