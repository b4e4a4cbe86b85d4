//! `thirdparty.txt`: the base images to vendor. One image a line, `<image>: <tag> <tag> …`,
//! `#` comments and blank lines allowed. The whole file is checked before anything touches the
//! network, and every problem is reported with its line number.
//!
//! A tag may be pinned, `<tag>@sha256:<64 lowercase hex>`: it is then vendored as exactly that
//! digest, whatever the tag points at upstream, and the lock must agree with the pin. A pin
//! travels in the pair's source as `<image>:<tag>@<digest>` (see `pairs` and `pin`), so that the
//! copy and the lock code, which already read a source by its digest when it has one, never ask
//! the registry what the tag points at.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use anyhow::{Context, anyhow};
use oci_client::Reference;

use crate::invalid::Invalid;
use crate::registry::Pair;
use crate::registry::reference::{self, Written};

/// Lines longer than this are a mistake (a pasted blob, a missing newline), not an image list.
const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub line: usize,
    /// As written, e.g. `docker.io/alpine`.
    pub image: String,
    /// Every tag, as the list names it (a pinned one without its digest).
    pub tags: Vec<String>,
    /// The pinned tags among `tags`: tag → `sha256:…`.
    pub pins: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The list at `file` (`root` resolves a relative one), read and checked whole: every bad line
/// is named before anything is done.
pub fn read(root: &Path, file: &Path) -> anyhow::Result<Vec<ListEntry>> {
    let path = root.join(file);
    let bytes =
        std::fs::read(&path).with_context(|| format!("cannot read the vendoring list {}", path.display()))?;
    parse(&bytes).map_err(|errors| refused(&path, &errors))
}

/// The error of a list whose lines `errors` names, one a line as `<path>:line N: …`.
pub fn refused(path: &Path, errors: &[LineError]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {}:{e}", path.display())).collect();
    anyhow!("{} has {} problem(s), nothing was copied:\n{}", path.display(), errors.len(), lines.join("\n"))
}

/// Parse and check the whole file; all problems at once, or the entries.
pub fn parse(bytes: &[u8]) -> Result<Vec<ListEntry>, Vec<LineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = index + 1;
        let mut fail = |message: String| errors.push(LineError { line, message });
        let Ok(text) = std::str::from_utf8(raw) else {
            fail("not valid UTF-8".into());
            continue;
        };
        if text.len() > MAX_LINE {
            fail(format!("longer than {MAX_LINE} characters"));
            continue;
        }
        let content = text.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        match parse_line(content) {
            Ok(Line { image, tags, pins, source }) => {
                let key = (source.registry().to_string(), source.repository().to_string());
                if let Some(first) = seen.insert(key, line) {
                    fail(format!(
                        "`{image}` is already listed on line {first}: list each image once, with all its tags"
                    ));
                    continue;
                }
                entries.push(ListEntry { line, image, tags, pins });
            }
            Err(invalid) => fail(invalid.to_string()),
        }
    }
    if errors.is_empty() { Ok(entries) } else { Err(errors) }
}

const FORMAT: &str = "expected `<image>: <tag> [<tag> …]`, e.g. `docker.io/alpine: 3.15`";

/// How to pin a tag, for the messages about digests.
const PIN_FORM: &str = "`<tag>@sha256:<64 lowercase hex digits>`, e.g. `24.04@sha256:…`";

/// One line of the list, checked.
struct Line {
    image: String,
    tags: Vec<String>,
    pins: BTreeMap<String, String>,
    /// The image as a reference (any tag), to tell two spellings of one image apart.
    source: Reference,
}

fn parse_line(content: &str) -> Result<Line, Invalid> {
    // The separator is the first colon followed by white space or the end: a colon inside the
    // image name belongs to a registry port (`localhost:5000/x: 1.0`).
    let split = content
        .char_indices()
        .find(|&(i, c)| c == ':' && content[i + 1..].chars().next().is_none_or(char::is_whitespace))
        .map(|(i, _)| i);
    let Some(split) = split else {
        // `docker.io/alpine:3.15`, as Docker writes an image and its tag.
        let mut words = content.split_whitespace();
        let word = words.next().unwrap_or_default();
        if let Written { name: image, tag: Some(tag), digest: None } = Written::split(word) {
            let tags: Vec<&str> = std::iter::once(tag).chain(words).collect();
            return Err(Invalid::new(format!(
                "`{word}`: here the tags follow the image after a colon and a space: write `{image}: {}`",
                tags.join(" ")
            )));
        }
        return Err(Invalid::new(FORMAT));
    };
    let image = content[..split].trim();
    let words: Vec<&str> = content[split + 1..].split_whitespace().collect();
    if image.is_empty() {
        return Err(Invalid::new(format!("no image before the colon: {FORMAT}")));
    }
    let written = Written::split(image);
    if written.digest.is_some() {
        return Err(Invalid::new(format!(
            "`{image}` has a digest: list the image by name and give tags after the colon"
        )));
    }
    if written.tag.is_some() {
        return Err(Invalid::new(format!("`{image}` has a tag in its name: {FORMAT}")));
    }
    if words.is_empty() {
        return Err(Invalid::new(format!("no tags for `{image}`: {FORMAT}")));
    }
    let source = reference::parse(&format!("{image}:latest")).map_err(|e| {
        Invalid::new(format!(
            "`{image}` is not a valid image name ({e}): use lowercase letters, digits and . _ - /"
        ))
    })?;
    let mut tags = Vec::new();
    let mut pins = BTreeMap::new();
    let mut unique = BTreeSet::new();
    for word in words {
        let (tag, pin) = match word.split_once('@') {
            Some((tag, digest)) => (tag, Some(digest)),
            None => (word, None),
        };
        check_tag(image, word, tag)?;
        if !unique.insert(tag) {
            return Err(Invalid::new(format!("tag `{tag}` of `{image}` is listed twice")));
        }
        if let Some(digest) = pin {
            check_pin(image, tag, digest)?;
            pins.insert(tag.to_string(), digest.to_string());
        }
        tags.push(tag.to_string());
    }
    Ok(Line { image: image.to_string(), tags, pins, source })
}

/// `tag`: `word` without its pin, if it has one.
fn check_tag(image: &str, word: &str, tag: &str) -> Result<(), Invalid> {
    if tag.is_empty() || tag.contains(':') || tag.starts_with("sha256") {
        return Err(Invalid::new(format!(
            "`{word}` of `{image}` is a digest, not a tag: thirdparty vendors tags; to vendor a tag as \
             exactly one digest, pin it: {PIN_FORM}"
        )));
    }
    if !reference::is_tag(tag) {
        return Err(Invalid::new(format!(
            "`{tag}` of `{image}` is not a valid tag: {}",
            reference::TAG_RULE
        )));
    }
    Ok(())
}

/// A pin is a digest of the reference grammar, and one a registry names a manifest by: sha256,
/// in lowercase, so that it compares equal to what the registry and the lock say.
fn check_pin(image: &str, tag: &str, digest: &str) -> Result<(), Invalid> {
    reference::check_digest(digest).map_err(|e| {
        Invalid::new(format!(
            "the pin `{digest}` of tag `{tag}` of `{image}` is not valid ({e}): pin as {PIN_FORM}"
        ))
    })?;
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.is_empty() || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Invalid::new(format!(
            "the pin `{digest}` of tag `{tag}` of `{image}` is not a sha256 digest in lowercase, as registries \
             name a manifest: pin as {PIN_FORM}"
        )));
    }
    Ok(())
}

/// Source and destination of every tag: `<image>:<tag>` → `$DOCKER_REPO/thirdparty/<path>:<tag>`.
/// A pinned tag's source carries its pin, `<image>:<tag>@<digest>`: every request for it goes to
/// the digest (`pin` tells it from the others), and its destination stays the tag.
pub fn pairs(entries: &[ListEntry], docker_repo: &str) -> Result<Vec<Pair>, Vec<LineError>> {
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        for tag in &entry.tags {
            let source = match entry.pins.get(tag) {
                Some(digest) => format!("{}:{tag}@{digest}", entry.image),
                None => format!("{}:{tag}", entry.image),
            };
            let destination =
                format!("{docker_repo}/thirdparty/{}:{tag}", reference::path_without_host(&entry.image));
            match (reference::parse(&source), reference::parse(&destination)) {
                (Ok(source), Ok(destination)) => pairs.push(Pair { source, destination }),
                (Err(e), _) => {
                    errors.push(LineError { line: entry.line, message: format!("`{source}`: {e}") })
                }
                (_, Err(e)) => errors.push(LineError {
                    line: entry.line,
                    message: format!(
                        "destination `{destination}` is not a valid reference ({e}): check DOCKER_REPO"
                    ),
                }),
            }
        }
    }
    if errors.is_empty() { Ok(pairs) } else { Err(errors) }
}

/// The digest the list pins a pair's source to: a source with both a tag and a digest (as
/// `pairs` makes one for a pinned tag). A source with a digest only is the lock's (see
/// `locking::pinned_pairs`), and a tag only is not pinned.
pub fn pin(source: &Reference) -> Option<&str> {
    source.tag().and(source.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text.as_bytes()).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_the_format() {
        let text = "# base images\n\ndocker.io/alpine: 3.15 3.16  # two tags\nlocalhost:5000/x/y: 1.0\n";
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(
            entries,
            [
                ListEntry {
                    line: 3,
                    image: "docker.io/alpine".into(),
                    tags: vec!["3.15".into(), "3.16".into()],
                    pins: BTreeMap::new(),
                },
                ListEntry {
                    line: 4,
                    image: "localhost:5000/x/y".into(),
                    tags: vec!["1.0".into()],
                    pins: BTreeMap::new()
                },
            ]
        );
    }

    #[test]
    fn destinations_drop_the_host_only() {
        let entries = parse(
            b"docker.io/alpine: 3.15\ngcr.io/google.com/cloudsdktool/google-cloud-cli: 502.0.0-slim\ndocker.io/docker/buildx-bin: 0.19.3\n",
        )
        .unwrap();
        let pairs = pairs(&entries, "us-docker.pkg.dev/p/docker-dev").unwrap();
        let shown: Vec<(String, String)> =
            pairs.iter().map(|p| (p.source.to_string(), p.destination.to_string())).collect();
        assert_eq!(
            shown,
            [
                ("docker.io/library/alpine:3.15".into(), "us-docker.pkg.dev/p/docker-dev/thirdparty/alpine:3.15".into()),
                (
                    "gcr.io/google.com/cloudsdktool/google-cloud-cli:502.0.0-slim".into(),
                    "us-docker.pkg.dev/p/docker-dev/thirdparty/google.com/cloudsdktool/google-cloud-cli:502.0.0-slim".into()
                ),
                (
                    "docker.io/docker/buildx-bin:0.19.3".into(),
                    "us-docker.pkg.dev/p/docker-dev/thirdparty/docker/buildx-bin:0.19.3".into()
                ),
            ]
        );
    }

    #[test]
    fn an_image_written_the_docker_way_gets_its_list_form() {
        let errors = errors("docker.io/alpine:3.15\nlocalhost:5000/team/app:1.0 2.0\n");
        assert!(errors[0].ends_with("write `docker.io/alpine: 3.15`"), "{}", errors[0]);
        assert!(errors[1].ends_with("write `localhost:5000/team/app: 1.0 2.0`"), "{}", errors[1]);
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "docker.io/alpine 3.15\ndocker.io/golang:\nDocker.io/UPPER: 1\ndocker.io/debian: sha256:abcd\n\
                    docker.io/alpine: 3.15 3.15\ndocker.io/alpine@sha256:00: x\ndocker.io/ok: 1\ndocker.io/ok: 2\n";
        let errors = errors(text);
        let lines: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            lines,
            ["line 1", "line 2", "line 3", "line 4", "line 5", "line 6", "line 8"],
            "{errors:#?}"
        );
        assert!(errors[0].contains("expected `<image>: <tag>"), "{}", errors[0]);
        assert!(errors[1].contains("no tags"), "{}", errors[1]);
        assert!(errors[2].contains("not a valid image name"), "{}", errors[2]);
        assert!(errors[3].contains("is a digest") && errors[3].contains("`<tag>@sha256:"), "{}", errors[3]);
        assert!(errors[4].contains("listed twice"), "{}", errors[4]);
        assert!(errors[5].contains("has a digest"), "{}", errors[5]);
        assert!(errors[6].contains("already listed on line 7"), "{}", errors[6]);
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_tag_is_pinned_by_its_digest() {
        let text = format!("docker.io/library/ubuntu: 24.04@sha256:{HEX}  22.04\n");
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(
            entries,
            [ListEntry {
                line: 1,
                image: "docker.io/library/ubuntu".into(),
                tags: vec!["24.04".into(), "22.04".into()],
                pins: BTreeMap::from([("24.04".to_string(), format!("sha256:{HEX}"))]),
            }]
        );
        let pairs = pairs(&entries, "registry.test/p/env").unwrap();
        let shown: Vec<(String, String, Option<&str>)> =
            pairs.iter().map(|p| (p.source.to_string(), p.destination.to_string(), pin(&p.source))).collect();
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            shown,
            [
                (
                    format!("docker.io/library/ubuntu:24.04@{digest}"),
                    "registry.test/p/env/thirdparty/library/ubuntu:24.04".to_string(),
                    Some(digest.as_str())
                ),
                (
                    "docker.io/library/ubuntu:22.04".to_string(),
                    "registry.test/p/env/thirdparty/library/ubuntu:22.04".to_string(),
                    None
                ),
            ]
        );
        // A source by digest alone is the lock's, not the list's pin.
        let by_digest = reference::parse(&format!("docker.io/library/ubuntu@{digest}")).unwrap();
        assert_eq!(pin(&by_digest), None);
    }

    #[test]
    fn a_bad_pin_is_named_and_a_bare_digest_says_how_to_pin() {
        let upper = HEX.to_uppercase();
        let long = HEX.repeat(2);
        let bad = [
            "sha256:abcd".to_string(),
            format!("sha256:{upper}"),
            format!("sha512:{long}"),
            "md5:xyz".to_string(),
            String::new(),
        ];
        let text: String =
            bad.iter().map(|digest| format!("docker.io/u{}: 1@{digest}\n", digest.len())).collect();
        let pin_errors = errors(&text);
        assert_eq!(pin_errors.len(), bad.len(), "{pin_errors:#?}");
        for (error, digest) in pin_errors.iter().zip(&bad) {
            assert!(error.contains(&format!("the pin `{digest}` of tag `1` of `docker.io/u")), "{error}");
            assert!(error.contains("pin as `<tag>@sha256:"), "{error}");
        }

        let text = format!(
            "docker.io/a: sha256:{HEX}\ndocker.io/b: @sha256:{HEX}\ndocker.io/c: 1 1@sha256:{HEX}\n\
             docker.io/d: .1@sha256:{HEX}\n"
        );
        let errors = errors(&text);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        for (error, word) in errors[..2].iter().zip([format!("sha256:{HEX}"), format!("@sha256:{HEX}")]) {
            assert!(error.contains(&format!("`{word}` of `docker.io/")), "{error}");
            assert!(
                error.contains("is a digest, not a tag") && error.contains("pin it: `<tag>@sha256:"),
                "{error}"
            );
        }
        assert!(errors[2].contains("tag `1` of `docker.io/c` is listed twice"), "{}", errors[2]);
        assert!(errors[3].contains("is not a valid tag"), "{}", errors[3]);
    }

    #[test]
    fn rejects_bytes_that_are_not_text_and_overlong_lines() {
        let mut text = b"docker.io/a: 1\n\xff\xfe: 2\n".to_vec();
        text.extend(format!("docker.io/b: {}\n", "x".repeat(2000)).as_bytes());
        let errors: Vec<String> = parse(&text).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(errors, ["line 2: not valid UTF-8", "line 3: longer than 1024 characters"]);
    }
}
