//! Image references parsed by hand, the one grammar of the xtask: every reference it reads (a
//! setting, the vendoring list, a Dockerfile's `FROM`, a published image) is split and checked
//! here, and the settings and the vendoring list check their parts (a path component, a tag, a
//! digest) with the same rules, so that nothing is accepted early and refused late.
//!
//! By hand because oci-client's parser matches one large regular expression whose compilation
//! (Unicode `\w` classes) cost 30 ms of CPU, half of a whole up-to-date `thirdparty` run; this
//! follows the same grammar (Docker's `reference` package) with plain code, and builds the same
//! `Reference`: `docker.io` for a name without a registry, `library/` for an official image,
//! `latest` when no tag or digest is given. A unit test holds the two to the same verdicts.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*
//! domain     := label ( "." label )* [ ":" port ]      label: [a-zA-Z0-9] ( [a-zA-Z0-9-]* [a-zA-Z0-9] )?
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}                 sha256: 64 hex, sha384: 96, sha512: 128
//! ```
//!
//! The first component of a name is its registry (`domain`) when it has a `.` or a `:` or is
//! `localhost`; else the name is on Docker Hub.

use oci_client::Reference;

use crate::invalid::Invalid;

const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// The rule of a path component, in words, for the messages of those who check one.
pub const PATH_COMPONENT_RULE: &str =
    "image paths take lowercase letters and digits, joined by one `.`, one or two `_`, or `-`s";

/// The rule of a tag, in words, for the messages of those who check one.
pub const TAG_RULE: &str = "up to 128 letters, digits and _ . -, not starting with . or -";

/// A reference as written, split where the grammar splits it: nothing checked, nothing filled
/// in. `parse` checks the parts and builds the `Reference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written<'a> {
    /// `[domain "/"] path`: everything before the tag and the digest.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> Written<'a> {
    /// `text` at its `@` (the digest) and at a `:` after its last `/` (the tag): a colon before
    /// the last slash belongs to a registry's port.
    pub fn split(text: &'a str) -> Written<'a> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(colon) => (&rest[..last_slash + colon], Some(&rest[last_slash + colon + 1..])),
            None => (rest, None),
        };
        Written { name, tag, digest }
    }
}

/// `host/path/name:tag` or `…@digest` without its tag and digest: `localhost:5000/x:1` →
/// `localhost:5000/x`.
pub fn repository_of(reference: &str) -> &str {
    Written::split(reference).name
}

/// A name's registry as written, if it names one, and its path: `localhost:5000/a/b` →
/// `(Some("localhost:5000"), "a/b")`, `alpine` → `(None, "alpine")`.
pub fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), rest),
        _ => (None, name),
    }
}

/// The image's path without its registry host: `docker.io/alpine` → `alpine`,
/// `gcr.io/google.com/cloudsdktool/google-cloud-cli` → `google.com/cloudsdktool/google-cloud-cli`.
/// Docker Hub's implicit `library/` is not added: it is a source-side detail.
pub fn path_without_host(image: &str) -> &str {
    split_host(image).1
}

/// The registry a name or reference is on: its host as written, else Docker Hub's.
pub fn registry_of(reference: &str) -> &str {
    split_host(reference).0.unwrap_or("docker.io")
}

/// Parse `text` as an image reference; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<Reference, Invalid> {
    if text.is_empty() {
        return Err(Invalid::new("repository name must have at least one component"));
    }
    let Written { name, tag, digest } = Written::split(text);
    if !is_name(name) || !tag.is_none_or(is_tag) || !digest.is_none_or(is_digest) {
        return Err(Invalid::new("invalid reference format"));
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_MAX {
        return Err(Invalid::new(format!("repository name must not be more than {NAME_MAX} characters")));
    }
    if let Some(digest) = digest {
        check_digest_length(digest)?;
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

/// The name BuildKit looks a named build context up by, for `--build-context <name>=…` to
/// reach the image a Dockerfile writes as `text`: Docker's familiar form (Docker Hub's
/// `docker.io/` and `library/` left out), without a trailing `:latest`, as dockerui's
/// `NamedContext` makes it: `docker.io/library/busybox:1.35` → `busybox:1.35`,
/// `quay.io/acme/base:latest` → `quay.io/acme/base`. Err: `text` is no reference.
pub fn context_name(text: &str) -> Result<String, Invalid> {
    let parsed = parse(text)?;
    let Written { tag, digest, .. } = Written::split(text);
    let repository = parsed.repository();
    let mut name = match parsed.registry() {
        "docker.io" => {
            repository.strip_prefix("library/").filter(|r| !r.contains('/')).unwrap_or(repository).to_string()
        }
        registry => format!("{registry}/{repository}"),
    };
    if let Some(tag) = tag {
        name = format!("{name}:{tag}");
    }
    if let Some(digest) = digest {
        name = format!("{name}@{digest}");
    }
    Ok(name.strip_suffix(":latest").map(str::to_string).unwrap_or(name))
}

/// A name is a path of components, optionally after a registry domain.
fn is_name(name: &str) -> bool {
    let path_only = name.split('/').all(is_path_component);
    let with_domain = name
        .split_once('/')
        .is_some_and(|(domain, path)| is_domain(domain) && path.split('/').all(is_path_component));
    path_only || with_domain
}

/// A component of a repository path (`docker-dev`, `multi-arch-docker`): runs of lowercase
/// letters and digits, joined by one `.`, one or two `_`, or any number of `-`.
pub fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(separator == "." || separator == "_" || separator == "__" || dashes) {
            return false;
        }
    }
    true
}

fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A character a tag may have anywhere but first (`.` and `-` may not start one).
pub fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A tag: letters, digits and `_ . -`, not starting with `.` or `-`, 128 at most.
pub fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(is_tag_char)
        && tag.len() <= TAG_MAX
}

/// Whether `digest` is one the registries take (`sha256:` and 64 hex digits, or sha384 or
/// sha512 with theirs); the error says what is wrong.
pub fn check_digest(digest: &str) -> Result<(), Invalid> {
    if !is_digest(digest) {
        return Err(Invalid::new(format!(
            "`{digest}` is not a digest: `<algorithm>:<hex>`, such as `sha256:` and 64 hex digits"
        )));
    }
    check_digest_length(digest)
}

fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_digest_length(digest: &str) -> Result<(), Invalid> {
    let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Invalid::new("unsupported digest algorithm")),
    };
    if hex.len() == expected { Ok(()) } else { Err(Invalid::new("invalid checksum digest length")) }
}

/// The registry and repository of a name as `Reference` has them: Docker Hub's for a name
/// without a registry, official images under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (domain, remainder) = split_host(name);
    let domain = match domain {
        None | Some("index.docker.io") => "docker.io",
        Some(domain) => domain,
    };
    let remainder = if domain == "docker.io" && !remainder.contains('/') {
        format!("library/{remainder}")
    } else {
        remainder.to_string()
    };
    (domain.to_string(), remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn context_names_are_buildkits_familiar_names() {
        for (written, name) in [
            ("busybox:1.35", "busybox:1.35"),
            ("docker.io/library/busybox:1.35", "busybox:1.35"),
            ("index.docker.io/library/busybox", "busybox"),
            ("docker.io/acme/tool:latest", "acme/tool"),
            ("quay.io/acme/base-notebook:latest", "quay.io/acme/base-notebook"),
            ("quay.io/acme/base-notebook:2026-12", "quay.io/acme/base-notebook:2026-12"),
            ("localhost:5000/local/base:1", "localhost:5000/local/base:1"),
        ] {
            assert_eq!(context_name(written).unwrap(), name, "{written}");
        }
        // A digest keeps the tag before it, `latest` too: the name ends with the digest.
        assert_eq!(
            context_name(&format!("docker.io/library/ubuntu:24.04@{DIGEST}")).unwrap(),
            format!("ubuntu:24.04@{DIGEST}")
        );
        assert_eq!(
            context_name(&format!("ubuntu:latest@{DIGEST}")).unwrap(),
            format!("ubuntu:latest@{DIGEST}")
        );
        assert!(context_name("Ubuntu").is_err());
    }

    /// Our parse and oci-client's regex agree: same verdict, same parts.
    #[test]
    fn agrees_with_oci_client() {
        let long = "a/".repeat(130) + "b";
        let cases: Vec<String> = [
            "alpine",
            "alpine:3.19",
            "library/alpine",
            "docker.io/alpine",
            "index.docker.io/library/alpine:3",
            "localhost/x",
            "localhost:5000/x/y:1.0",
            "127.0.0.1:5000/team/app:v1-rc.2",
            "us-docker.pkg.dev/proj/repo/img:tag_1",
            "gcr.io/distroless/static-debian12:nonroot",
            "my-registry.example.com:443/a__b/c--d/e.f:x",
            "Uppercase/name",
            "example.com/Upper",
            "a..b",
            "a-",
            "-a",
            "a___b",
            "a_-b",
            "a-_b",
            "a._b",
            "a.-b",
            "a__b--c---d.e_f",
            "localhost:5000/a/b:1",
            "Registry.Example:5000/a:1",
            "localhost:5000/MyTeam/x:1",
            "a/b/",
            "/a",
            "",
            "a:",
            ":tag",
            "a:-tag",
            "a:.tag",
            "host:port/x",
            "host:/x",
            "a@sha256:abc",
            "a@md5:0123456789abcdef0123456789abcdef",
            "-host.com/x",
            "host-.com/x",
            "a b",
            "a/b:c/d",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("alpine@{DIGEST}"),
            format!("alpine:3@{DIGEST}"),
            format!("localhost:5000/x@{DIGEST}"),
            format!("x@{}", &DIGEST[..DIGEST.len() - 1]),
            format!("x:{}", "t".repeat(128)),
            format!("x:{}", "t".repeat(129)),
            long,
        ])
        .collect();
        for case in cases {
            let ours = parse(&case);
            let theirs = case.parse::<Reference>();
            match (&ours, &theirs) {
                (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{case}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{case:?}: ours {ours:?}, oci-client {theirs:?}"),
            }
        }
    }

    #[test]
    fn fills_in_docker_hub_and_latest() {
        let alpine = parse("alpine").unwrap();
        assert_eq!(
            (alpine.registry(), alpine.repository(), alpine.tag()),
            ("docker.io", "library/alpine", Some("latest"))
        );
        assert_eq!(alpine.resolve_registry(), "index.docker.io");
        let local = parse("localhost:5000/x:1").unwrap();
        assert_eq!((local.registry(), local.repository(), local.tag()), ("localhost:5000", "x", Some("1")));
    }

    #[test]
    fn a_registry_with_a_port_is_not_a_tag() {
        let reference = parse("localhost:5000/a/b:1").unwrap();
        assert_eq!(
            (reference.registry(), reference.repository(), reference.tag(), reference.digest()),
            ("localhost:5000", "a/b", Some("1"), None)
        );
        let untagged = parse("localhost:5000/a/b").unwrap();
        assert_eq!((untagged.registry(), untagged.tag()), ("localhost:5000", Some("latest")));
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b", "the port is no tag");
        assert_eq!(repository_of("localhost:5000/a/b:1"), "localhost:5000/a/b");
        assert_eq!(split_host("localhost:5000/a/b"), (Some("localhost:5000"), "a/b"));
        assert_eq!(registry_of("localhost:5000/a/b:1"), "localhost:5000");
        assert_eq!(registry_of("alpine:3"), "docker.io");
        assert!(parse("localhost:port/a").is_err());
    }

    #[test]
    fn a_digest_alone_or_after_a_tag() {
        let alone = parse(&format!("ubuntu@{DIGEST}")).unwrap();
        assert_eq!(
            (alone.registry(), alone.repository(), alone.tag(), alone.digest()),
            ("docker.io", "library/ubuntu", None, Some(DIGEST))
        );
        let both = parse(&format!("ubuntu:24.04@{DIGEST}")).unwrap();
        assert_eq!((both.tag(), both.digest()), (Some("24.04"), Some(DIGEST)));
        assert_eq!(
            Written::split(&format!("localhost:5000/u:24.04@{DIGEST}")),
            Written { name: "localhost:5000/u", tag: Some("24.04"), digest: Some(DIGEST) }
        );
        assert_eq!(repository_of(&format!("ubuntu:24.04@{DIGEST}")), "ubuntu");
        assert_eq!(repository_of(&format!("r.example/u@{DIGEST}")), "r.example/u");
        assert_eq!(check_digest(DIGEST), Ok(()));
        assert_eq!(
            check_digest(&DIGEST[..DIGEST.len() - 1]),
            Err(Invalid::new("invalid checksum digest length"))
        );
        assert_eq!(
            check_digest("md5:0123456789abcdef0123456789abcdef"),
            Err(Invalid::new("unsupported digest algorithm"))
        );
        assert!(check_digest("sha256-0123").unwrap_err().to_string().contains("is not a digest"));
        assert!(parse(&format!("ubuntu@{}", DIGEST.to_uppercase())).is_err(), "the algorithm is lowercase");
    }

    #[test]
    fn paths_are_lowercase_and_joined_by_dot_underscores_or_dashes() {
        for good in
            ["a", "docker-dev", "a.b", "a_b", "a__b", "a-b", "a--b", "a---b", "multi-arch-docker", "0"]
        {
            assert!(is_path_component(good), "{good}");
        }
        // The settings' own rule took the mixed and tripled separators (`a_-b`, `a._b`, `a___b`):
        // every one of them is refused by the grammar, as by oci-client above.
        for bad in [
            "MyTeam", "A", "a..b", "a___b", "a_-b", "a-_b", "a._b", "a.-b", "a.__b", "-a", "a-", "_a", "a_",
            ".a", "", "a/b",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
        assert!(parse("localhost:5000/MyTeam:1").is_err());
        assert!(parse("Registry.Example:5000/a:1").is_ok(), "a registry's name may have capitals");
    }

    #[test]
    fn tags_are_up_to_128_and_start_with_a_word_character() {
        assert!(is_tag(&"t".repeat(128)));
        assert!(!is_tag(&"t".repeat(129)));
        assert!(parse(&format!("x:{}", "t".repeat(129))).is_err());
        for good in ["1", "3.19", "_x", "v1-rc.2", "A_B", "1.0--x", "sha256-0123.sig"] {
            assert!(is_tag(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a:b", "a b", "a/b", "a@b", "é"] {
            assert!(!is_tag(bad), "{bad}");
        }
        assert!(is_tag_char('.') && is_tag_char('-') && !is_tag_char(':') && !is_tag_char(' '));
    }
}
