//! A word of a Dockerfile as BuildKit reads it: `ARG` lines split into words with their quotes
//! kept, and a word's variables expanded and its quotes taken off, by the rules of BuildKit's
//! `shell/lex.go` (not a shell's: no command substitution, no field splitting). The plan must
//! name the very image BuildKit will ask for, so `${A:-b}`, `${A+b}`, quotes and the `# escape=`
//! character must come out the same as there.

use std::collections::BTreeMap;

/// Variables that are set, by name. An `ARG` without a value and without a given build argument
/// is not set: `${A-b}` gives `b`, `$A` gives nothing.
pub type Vars = BTreeMap<String, String>;

/// `ARG`'s arguments split at white space outside quotes, quotes and escapes kept (BuildKit's
/// `parseWords`): `A="x y" B=1` → `A="x y"`, `B=1`.
pub fn split(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        word.push(c);
        if c == escape && quote != Some('\'') {
            word.extend(chars.next());
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `word` with its variables filled from `vars` and its quotes removed. Err: why BuildKit would
/// refuse it too (an unclosed quote, `${A:?message}` with `A` unset, a bad substitution).
pub fn expand(word: &str, escape: char, vars: &Vars) -> Result<String, String> {
    let mut lexer = Lexer { chars: word.chars().collect(), at: 0, escape, vars };
    lexer.until(None, false)
}

struct Lexer<'a> {
    chars: Vec<char>,
    at: usize,
    escape: char,
    vars: &'a Vars,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += usize::from(c.is_some());
        c
    }

    /// Up to `stop` (consumed) or the end. `raw_escapes`: the escape character is kept, as in a
    /// `${A#pattern}` pattern.
    fn until(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok(out);
            }
            match c {
                '$' => out.push_str(&self.dollar()?),
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                _ => {
                    self.next();
                    if c == self.escape {
                        if raw_escapes {
                            out.push(c);
                        }
                        match self.next() {
                            Some(escaped) => out.push(escaped),
                            None => break,
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(format!("unexpected end of statement while looking for matching {stop}")),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err("unexpected end of statement while looking for matching single-quote".into());
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err("unexpected end of statement while looking for matching double-quote".into());
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(_) => {
                    let mut c = self.next().expect("peeked");
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                c = self.next().expect("peeked");
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && "@*#?-$!0".contains(c) {
                self.next();
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let value = self.vars.get(&name);
        let modifier = self.next();
        let (modifier, null_is_unset) = match modifier {
            Some('}') => return Ok(value.cloned().unwrap_or_default()),
            Some(':') => (self.next(), true),
            other => (other, false),
        };
        let Some(modifier) = modifier else { return Err("syntax error: missing '}'".into()) };
        if !"+-?#%".contains(modifier) || (null_is_unset && "#%".contains(modifier)) {
            let written = if null_is_unset { format!(":{modifier}") } else { modifier.to_string() };
            return Err(format!("unsupported modifier ({written}) in substitution"));
        }
        let word = self.until(Some('}'), "#%".contains(modifier))?;
        let unset = value.is_none_or(|v| null_is_unset && v.is_empty());
        match modifier {
            '-' => Ok(if unset { word } else { value.cloned().unwrap_or_default() }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => match value {
                Some(v) if !unset => Ok(v.clone()),
                _ => {
                    let kind = if value.is_none() { "unset" } else { "empty" };
                    let message = if word.is_empty() { format!("is not allowed to be {kind}") } else { word };
                    Err(format!("{name}: {message}"))
                }
            },
            _ => {
                let value = value.cloned().unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(modifier) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                Ok(trim(&value, &pattern, greedy, modifier == '#'))
            }
        }
    }
}

/// `${A#p}`/`${A##p}` (a prefix) and `${A%p}`/`${A%%p}` (a suffix): the shortest (or longest)
/// match of the glob `pattern` taken off `value`.
fn trim(value: &str, pattern: &str, greedy: bool, prefix: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let mut cuts: Vec<usize> = (0..=chars.len()).collect();
    if greedy {
        cuts.reverse();
    }
    for cut in cuts {
        let (matched, kept) = if prefix {
            (&chars[..cut], &chars[cut..])
        } else {
            (&chars[chars.len() - cut..], &chars[..chars.len() - cut])
        };
        if glob(&pattern, matched) {
            return kept.iter().collect();
        }
    }
    value.to_string()
}

/// `*` any run, `?` one character, `\x` the character x; the rest literal.
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some(('?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some(('\\', [literal, rest @ ..])) => text.first() == Some(literal) && glob(rest, &text[1..]),
        Some((literal, rest)) => text.first() == Some(literal) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ex(word: &str, pairs: &[(&str, &str)]) -> String {
        expand(word, '\\', &vars(pairs)).unwrap()
    }

    #[test]
    fn variables_in_both_forms_and_unset_ones_empty() {
        let v = [("REGISTRY", "quay.io"), ("OWNER", "acme")];
        assert_eq!(ex("$REGISTRY/$OWNER/base-notebook", &v), "quay.io/acme/base-notebook");
        assert_eq!(ex("${REGISTRY}/${OWNER}x", &v), "quay.io/acmex");
        assert_eq!(ex("$MISSING/a", &v), "/a");
        assert_eq!(ex("a$", &v), "a$");
        assert_eq!(ex("$1x", &v), "x");
    }

    #[test]
    fn defaults_and_alternatives_distinguish_unset_from_empty() {
        let v = [("EMPTY", ""), ("SET", "s")];
        assert_eq!(ex("${UNSET:-d}|${EMPTY:-d}|${SET:-d}", &v), "d|d|s");
        assert_eq!(ex("${UNSET-d}|${EMPTY-d}|${SET-d}", &v), "d||s");
        assert_eq!(ex("${UNSET:+a}|${EMPTY:+a}|${SET:+a}", &v), "||a");
        assert_eq!(ex("${UNSET+a}|${EMPTY+a}|${SET+a}", &v), "|a|a");
        assert_eq!(ex("${UNSET:-$SET/x}", &v), "s/x");
        let err = expand("${UNSET:?give it}", '\\', &vars(&v)).unwrap_err();
        assert_eq!(err, "UNSET: give it");
        assert_eq!(expand("${EMPTY:?}", '\\', &vars(&v)).unwrap_err(), "EMPTY: is not allowed to be empty");
        assert_eq!(ex("${EMPTY?}", &v), "");
    }

    #[test]
    fn prefixes_and_suffixes_trim_shortest_or_longest() {
        let v = [("IMAGE", "quay.io/acme/base:1.2.3")];
        assert_eq!(ex("${IMAGE#*/}", &v), "acme/base:1.2.3");
        assert_eq!(ex("${IMAGE##*/}", &v), "base:1.2.3");
        assert_eq!(ex("${IMAGE%.*}", &v), "quay.io/acme/base:1.2");
        assert_eq!(ex("${IMAGE%%.*}", &v), "quay");
        assert!(expand("${IMAGE:#x}", '\\', &vars(&v)).unwrap_err().contains("unsupported modifier (:#)"));
    }

    #[test]
    fn quotes_come_off_and_escapes_follow_the_directive() {
        let v = [("A", "x")];
        assert_eq!(ex("\"acme\"", &v), "acme");
        assert_eq!(ex("'$A'\"$A\"", &v), "$Ax");
        assert_eq!(ex("\\$A", &v), "$A");
        assert_eq!(ex("\"a\\\"b\\q\"", &v), "a\"b\\q");
        assert_eq!(expand("`$A", '`', &vars(&v)).unwrap(), "$A");
        assert_eq!(expand("\\$A", '`', &vars(&v)).unwrap(), "\\x");
        assert!(expand("\"open", '\\', &vars(&v)).unwrap_err().contains("double-quote"));
        assert_eq!(expand("${A", '\\', &vars(&v)).unwrap_err(), "syntax error: missing '}'");
        assert_eq!(expand("${}", '\\', &vars(&v)).unwrap_err(), "syntax error: bad substitution");
    }

    #[test]
    fn arg_words_split_outside_quotes() {
        assert_eq!(split("A=\"x y\" B=1  C", '\\'), ["A=\"x y\"", "B=1", "C"]);
        assert_eq!(split("A='a b' B=\"c\\\" d\"", '\\'), ["A='a b'", "B=\"c\\\" d\""]);
        assert_eq!(split("A=x\\ y", '\\'), ["A=x\\ y"]);
    }
}
