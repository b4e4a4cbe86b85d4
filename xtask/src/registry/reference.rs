//! Image references parsed by hand. oci-client's parser matches one large regular expression
//! whose compilation (Unicode `\w` classes) cost 30 ms of CPU, half of a whole up-to-date
//! `thirdparty` run; this follows the same grammar (Docker's `reference` package) with plain
//! code, and builds the same `Reference`: `docker.io` for a name without a registry,
//! `library/` for an official image, `latest` when no tag or digest is given.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*
//! domain     := label ( "." label )* [ ":" port ]      label: [a-zA-Z0-9] ( [a-zA-Z0-9-]* [a-zA-Z0-9] )?
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}
//! ```

use oci_client::Reference;

const NAME_MAX: usize = 255;

/// `host/path/name:tag` without its tag.
pub fn repository_of(reference: &str) -> &str {
    reference.rsplit_once(':').map_or(reference, |(repository, _)| repository)
}

/// The image's path without its registry host: `docker.io/alpine` → `alpine`,
/// `gcr.io/google.com/cloudsdktool/google-cloud-cli` → `google.com/cloudsdktool/google-cloud-cli`.
/// Docker Hub's implicit `library/` is not added: it is a source-side detail.
pub fn path_without_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
        _ => image,
    }
}

/// Parse `text` as an image reference; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<Reference, String> {
    if text.is_empty() {
        return Err("repository name must have at least one component".into());
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    // A colon after the last slash starts the tag; one before it belongs to a registry's port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(colon) => (&rest[..last_slash + colon], Some(&rest[last_slash + colon + 1..])),
        None => (rest, None),
    };
    if !is_name(name) || !tag.is_none_or(is_tag) || !digest.is_none_or(is_digest) {
        return Err("invalid reference format".into());
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_MAX {
        return Err(format!("repository name must not be more than {NAME_MAX} characters"));
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

/// A name is a path of components, optionally after a registry domain.
fn is_name(name: &str) -> bool {
    let path_only = name.split('/').all(is_component);
    let with_domain = name
        .split_once('/')
        .is_some_and(|(domain, path)| is_domain(domain) && path.split('/').all(is_component));
    path_only || with_domain
}

fn is_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    // Between runs of [a-z0-9]: one `.`, one or two `_`, or any number of `-`.
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

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|b| word(*b) || *b == b'.' || *b == b'-')
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

fn check_digest_length(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest.split_once(':').unwrap_or((digest, ""));
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm".into()),
    };
    if hex.len() == expected { Ok(()) } else { Err("invalid checksum digest length".into()) }
}

/// Docker's rule: the first component is a registry when it has a `.` or a `:` or is
/// `localhost`; otherwise the name is on Docker Hub, official images under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    (domain, remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

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
}
