//! What a Dockerfile names from outside itself, read as BuildKit reads it: the images of its
//! `FROM`, `COPY --from` and `RUN --mount=…,from=` (build stages, stage numbers and `scratch`
//! are not images), and the frontend of its `# syntax=` directive. The grammar (continuations,
//! comments inside them, heredocs, JSON forms, `# escape=`) is `parse-dockerfile`'s; the
//! arguments are expanded here (`words`), by BuildKit's rules: the global `ARG`s before the first
//! `FROM`, each default expanded with those before it, a given build argument winning over a
//! default and taken as written, and the platform arguments of the platform built.
//!
//! The plan substitutes each image by digest under the very name written here, so this must
//! come out as BuildKit's own reading; what BuildKit would refuse is refused here, with its line.

pub mod words;

use std::collections::BTreeMap;

use parse_dockerfile::{Flag, Instruction};

use crate::platform::Platform;
use words::Vars;

/// Where in the Dockerfile an image is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    From,
    CopyFrom,
    MountFrom,
    Syntax,
}

impl Place {
    /// The part of the instruction that names `image`, as written: `COPY --from=x`.
    pub fn naming(self, image: &str) -> String {
        match self {
            Place::From => format!("FROM {image}"),
            Place::CopyFrom => format!("COPY --from={image}"),
            Place::MountFrom => format!("RUN --mount=…,from={image}"),
            Place::Syntax => format!("# syntax={image}"),
        }
    }
}

/// One image a Dockerfile names, after expansion, at its first mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// As BuildKit will ask for it: `quay.io/acme/base-notebook`, `ubuntu:24.04@sha256:…`.
    pub written: String,
    /// 1-based.
    pub line: usize,
    pub place: Place,
}

/// What one Dockerfile names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The `# syntax=` frontend image: BuildKit fetches it before reading the rest.
    pub frontend: Option<Mention>,
    /// Every image of its `FROM`, `COPY --from` and `RUN --mount from=`, in order, each once.
    pub images: Vec<Mention>,
    /// Its build stages' names (lower case, as BuildKit compares them), in order.
    pub stages: Vec<String>,
    /// The names of its `ARG`s, in order, each once.
    pub args: Vec<String>,
}

/// Why a Dockerfile cannot be read: at which line, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// The names of `text` when built for each of `platforms` with the build arguments `given`
/// (an image named through `$TARGETARCH` names one image a platform; all are listed).
pub fn read(text: &str, given: &BTreeMap<String, String>, platforms: &[Platform]) -> Result<Names, Problem> {
    let parsed =
        parse_dockerfile::parse(text).map_err(|err| Problem { line: 0, message: err.to_string() })?;
    let line_of = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
    let escape = parsed.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
    let mut names = Names::default();
    if let Some(syntax) = &parsed.parser_directives.syntax {
        names.frontend = Some(Mention {
            written: syntax.value.value.trim().to_string(),
            line: line_of(syntax.value.span.start),
            place: Place::Syntax,
        });
    }
    let default_platform = [Platform::new("linux", "amd64")];
    let platforms = if platforms.is_empty() { &default_platform[..] } else { platforms };
    for platform in platforms {
        let reading = Reading { escape, given, line_of: &line_of };
        reading.read(&parsed.instructions, platform, &mut names)?;
    }
    Ok(names)
}

struct Reading<'a> {
    escape: char,
    given: &'a BTreeMap<String, String>,
    line_of: &'a dyn Fn(usize) -> usize,
}

impl Reading<'_> {
    fn read(
        &self,
        instructions: &[Instruction<'_>],
        platform: &Platform,
        names: &mut Names,
    ) -> Result<(), Problem> {
        let mut globals = platform_args(platform);
        // Stage names in order; a stage's number is its index.
        let mut stages: Vec<Option<String>> = Vec::new();
        for instruction in instructions {
            match instruction {
                Instruction::Arg(arg) => {
                    let line = (self.line_of)(arg.arguments.span.start);
                    for word in words::split(&arg.arguments.value, self.escape) {
                        let (name, default) = match word.split_once('=') {
                            Some((name, default)) => (name.to_string(), Some(default.to_string())),
                            None => (word.clone(), None),
                        };
                        if !names.args.contains(&name) {
                            names.args.push(name.clone());
                        }
                        // Only the global arguments (before the first FROM) reach a FROM line.
                        if !stages.is_empty() {
                            continue;
                        }
                        let value = match (self.given.get(&name), default) {
                            (Some(given), _) => Some(given.clone()),
                            (None, Some(default)) => Some(self.expand(&default, &globals, line)?),
                            (None, None) => None,
                        };
                        if let Some(value) = value {
                            globals.insert(name, value);
                        }
                    }
                }
                Instruction::From(from) => {
                    let line = (self.line_of)(from.image.span.start);
                    for flag in &from.options {
                        if let Some(value) = &flag.value {
                            self.expand(&value.value, &globals, line)?;
                        }
                    }
                    let image = self.expand(&from.image.value, &globals, line)?;
                    let stage = from.as_.as_ref().map(|(_, name)| name.value.to_ascii_lowercase());
                    let is_stage = stages.iter().flatten().any(|s| s.eq_ignore_ascii_case(&image));
                    if !is_stage && !image.eq_ignore_ascii_case("scratch") {
                        mention(names, image, line, Place::From);
                    }
                    if let Some(stage) = &stage
                        && !names.stages.contains(stage)
                    {
                        names.stages.push(stage.clone());
                    }
                    stages.push(stage);
                }
                Instruction::Copy(copy) => {
                    let line = (self.line_of)(copy.copy.span.start);
                    if let Some(from) = flag(&copy.options, "from") {
                        self.source(from, &stages, line, Place::CopyFrom, names)?;
                    }
                }
                Instruction::Run(run) => {
                    let line = (self.line_of)(run.run.span.start);
                    for mount in run.options.iter().filter(|f| f.name.value == "mount") {
                        let value = mount.value.as_ref().map_or("", |v| &v.value);
                        let from = value.split(',').find_map(|field| field.trim().strip_prefix("from="));
                        if let Some(from) = from {
                            self.source(from, &stages, line, Place::MountFrom, names)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `COPY --from=` or `RUN --mount=…,from=`: an earlier stage by name or number, else an image.
    /// BuildKit expands no variable there, and refuses a word that would change if it did.
    fn source(
        &self,
        from: &str,
        stages: &[Option<String>],
        line: usize,
        place: Place,
        names: &mut Names,
    ) -> Result<(), Problem> {
        let problem = |message: String| Problem { line, message };
        if self.expand(from, &Vars::new(), line)? != from {
            return Err(problem(format!(
                "`{}`: BuildKit expands no variable in --from; define a stage `FROM {from} AS <name>` \
                 (global ARGs are expanded there) and copy from that stage",
                place.naming(from)
            )));
        }
        // The stage being read is the last one: only those before it can be copied from.
        let before = &stages[..stages.len().saturating_sub(1)];
        if let Ok(index) = from.parse::<usize>() {
            if index >= before.len() {
                return Err(problem(format!(
                    "`{}`: there is no stage {from} before this one (stages are numbered from 0)",
                    place.naming(from)
                )));
            }
            return Ok(());
        }
        let lower = from.to_ascii_lowercase();
        if before.iter().flatten().any(|stage| *stage == lower) {
            return Ok(());
        }
        if stages.last().and_then(Option::as_ref) == Some(&lower) {
            return Err(problem(format!(
                "`{}`: a stage cannot copy from itself; name a stage defined before it",
                place.naming(from)
            )));
        }
        mention(names, from.to_string(), line, place);
        Ok(())
    }

    fn expand(&self, word: &str, vars: &Vars, line: usize) -> Result<String, Problem> {
        words::expand(word, self.escape, vars)
            .map_err(|message| Problem { line, message: format!("`{word}`: {message}") })
    }
}

fn mention(names: &mut Names, written: String, line: usize, place: Place) {
    if !names.images.iter().any(|m| m.written == written) {
        names.images.push(Mention { written, line, place });
    }
}

fn flag<'a>(options: &'a [Flag<'_>], name: &str) -> Option<&'a str> {
    options.iter().find(|f| f.name.value == name).and_then(|f| f.value.as_ref()).map(|v| v.value.as_ref())
}

/// The arguments BuildKit defines for the platform built, in the global scope too. The node
/// builds its own platform, so the build platform is the target's.
fn platform_args(platform: &Platform) -> Vars {
    let (os, arch, variant) = (platform.os(), platform.arch(), platform.variant().unwrap_or_default());
    let mut vars = Vars::new();
    for side in ["BUILD", "TARGET"] {
        vars.insert(format!("{side}PLATFORM"), platform.to_string());
        vars.insert(format!("{side}OS"), os.to_string());
        vars.insert(format!("{side}ARCH"), arch.to_string());
        vars.insert(format!("{side}VARIANT"), variant.to_string());
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn images(text: &str, given: &[(&str, &str)]) -> Vec<String> {
        let names = read(text, &args(given), &[Platform::new("linux", "arm64")]).unwrap();
        names.images.into_iter().map(|m| m.written).collect()
    }

    #[test]
    fn parents_named_through_global_arguments() {
        let text = "ARG REGISTRY=quay.io\nARG OWNER=acme\nARG BASE_CONTAINER=$REGISTRY/$OWNER/base-notebook\n\
                    FROM $BASE_CONTAINER\nARG OWNER\nRUN true\n";
        assert_eq!(images(text, &[]), ["quay.io/acme/base-notebook"]);
        assert_eq!(images(text, &[("OWNER", "other")]), ["quay.io/other/base-notebook"]);
        // A given argument is taken as written, not expanded again.
        assert_eq!(images(text, &[("BASE_CONTAINER", "r.test/x")]), ["r.test/x"]);
    }

    #[test]
    fn a_root_stage_chosen_by_an_argument_and_pinned_bases() {
        let text = "ARG ROOT_IMAGE=default_root_image\n\
                    FROM ubuntu:24.04@sha256:5616aa AS default_root_image\n\
                    FROM $ROOT_IMAGE AS foundation\nRUN true\nFROM foundation\n";
        let names = read(text, &args(&[]), &[]).unwrap();
        assert_eq!(names.images.len(), 1);
        assert_eq!(
            names.images[0],
            Mention { written: "ubuntu:24.04@sha256:5616aa".into(), line: 2, place: Place::From }
        );
        assert_eq!(names.stages, ["default_root_image", "foundation"]);
        assert_eq!(
            images(text, &[("ROOT_IMAGE", "r.test/cuda:12")]),
            ["ubuntu:24.04@sha256:5616aa", "r.test/cuda:12"]
        );
    }

    #[test]
    fn copy_and_mount_sources_are_stages_numbers_or_images() {
        let text = "FROM --platform=$BUILDPLATFORM alpine:3 AS Build\nRUN true\nFROM scratch\n\
                    COPY --from=build /a /a\nCOPY --from=0 /b /b\nCOPY --from=busybox:1 [\"/c\", \"/c\"]\n\
                    RUN --mount=type=cache,target=/x,from=build --mount=type=bind,from=tool:2,target=/t true\n";
        assert_eq!(images(text, &[]), ["alpine:3", "busybox:1", "tool:2"]);
        let names = read(text, &args(&[]), &[]).unwrap();
        assert_eq!(names.images[1].place, Place::CopyFrom);
        assert_eq!(names.images[2], Mention { written: "tool:2".into(), line: 7, place: Place::MountFrom });
    }

    #[test]
    fn continuations_comments_heredocs_and_the_escape_directive() {
        let text = "# escape=`\nARG V=\"1.2\"\nFROM `\n  # a comment inside the continuation\n  alpine:${V:-0} `\n  AS a\n\
                    RUN <<EOT\nFROM not-an-image\nEOT\nCOPY <<EOF /etc/x\nFROM neither\nEOF\n";
        let names = read(text, &args(&[]), &[]).unwrap();
        assert_eq!(names.images, [Mention { written: "alpine:1.2".into(), line: 5, place: Place::From }]);
    }

    #[test]
    fn the_platform_built_names_its_image() {
        let text = "ARG TARGETARCH\nFROM r.test/base-$TARGETARCH\nFROM r.test/tool:${TARGETOS}\n";
        let both = [Platform::new("linux", "amd64"), Platform::new("linux", "arm64")];
        let names = read(text, &args(&[]), &both).unwrap();
        let written: Vec<&str> = names.images.iter().map(|m| m.written.as_str()).collect();
        assert_eq!(written, ["r.test/base-amd64", "r.test/tool:linux", "r.test/base-arm64"]);
    }

    #[test]
    fn the_syntax_directive_is_the_frontend() {
        let names = read("# syntax=docker/dockerfile:1.7\nFROM a\n", &args(&[]), &[]).unwrap();
        assert_eq!(
            names.frontend,
            Some(Mention { written: "docker/dockerfile:1.7".into(), line: 1, place: Place::Syntax })
        );
        assert_eq!(read("FROM a\n# syntax=b\n", &args(&[]), &[]).unwrap().frontend, None);
    }

    #[test]
    fn what_buildkit_refuses_is_refused_with_its_line() {
        let err = read("ARG A\nFROM a AS one\nCOPY --from=$A /x /x\n", &args(&[]), &[]).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.message.contains("expands no variable in --from"), "{}", err.message);
        let err = read("FROM a\nCOPY --from=1 /x /x\n", &args(&[]), &[]).unwrap_err();
        assert!(err.message.contains("no stage 1 before this one"), "{}", err.message);
        let err = read("FROM a AS one\nCOPY --from=one /x /x\n", &args(&[]), &[]).unwrap_err();
        assert!(err.message.contains("cannot copy from itself"), "{}", err.message);
        let err = read("ARG A\nFROM ${A:?required}\n", &args(&[]), &[]).unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (2, "`${A:?required}`: A: required"));
    }
}
