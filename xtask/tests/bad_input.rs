//! Broken image lists and bad settings: each gives one clear error naming the line or the
//! setting, a non-zero exit, and no network call (a real registry's log stays as it was).

mod common;

use common::{stderr, xtask};
use xtask_testbed::TestRegistry;

/// (what is wrong, the file, the line named, words the message must have)
fn corpus(host: &str) -> Vec<(&'static str, Vec<u8>, usize, &'static str)> {
    let ok = format!("{host}/fine/image: 1.0\n");
    let with = |bad: String| format!("{ok}{bad}\n").into_bytes();
    vec![
        ("missing colon", with(format!("{host}/x/y 1.0")), 2, "expected `<image>: <tag>"),
        ("empty tag list", with(format!("{host}/x/y:")), 2, "no tags"),
        ("empty tag list with spaces", with(format!("{host}/x/y:   # none")), 2, "no tags"),
        ("bad characters", with(format!("{host}/x/y$z: 1")), 2, "not a valid image name"),
        ("uppercase repository", with(format!("{host}/X/Y: 1")), 2, "not a valid image name"),
        (
            "a digest where a tag belongs",
            with(format!("{host}/x/y: sha256:0123abcd")),
            2,
            "pin it: `<tag>@sha256:",
        ),
        (
            "a digest without its tag",
            with(format!("{host}/x/y: @sha256:{}", "0".repeat(64))),
            2,
            "pin it: `<tag>@",
        ),
        (
            "a bad pin",
            with(format!("{host}/x/y: 1@sha256:0123abcd")),
            2,
            "the pin `sha256:0123abcd` of tag `1`",
        ),
        ("a digest in the name", with(format!("{host}/x/y@sha256:0123: 1")), 2, "has a digest"),
        ("a tag in the name", with(format!("{host}/x/y:1.0: 2.0")), 2, "has a tag in its name"),
        ("a bad tag", with(format!("{host}/x/y: -bad")), 2, "not a valid tag"),
        ("a long tag", with(format!("{host}/x/y: {}", "t".repeat(200))), 2, "not a valid tag"),
        ("a very long line", with(format!("{host}/x/y: {}", "1 ".repeat(2000))), 2, "longer than 1024"),
        ("non-UTF-8 bytes", [ok.as_bytes(), b"\xff\xfe/x: 1\n"].concat(), 2, "not valid UTF-8"),
        ("a duplicate image", with(format!("{host}/fine/image: 2.0")), 2, "already listed on line 1"),
        ("a duplicate tag", with(format!("{host}/x/y: 1 2 1")), 2, "listed twice"),
        ("no image", with(": 1".to_string()), 2, "no image before the colon"),
        ("Docker's image:tag form", with(format!("{host}/x/y:1.0")), 2, "write `"),
    ]
}

#[test]
fn every_broken_list_is_refused_by_line_without_a_request() {
    let registry = TestRegistry::start().unwrap();
    let before = registry.requests().len();
    let dir = tempfile::tempdir().unwrap();
    for (what, text, line, words) in corpus(&registry.host()) {
        let list = dir.path().join("list.txt");
        std::fs::write(&list, &text).unwrap();
        let path = list.display().to_string();
        let output =
            xtask(&["thirdparty", "--file", &path], &[("DOCKER_REPO", &format!("{}/m", registry.host()))]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(&format!("list.txt:line {line}: ")) && err.contains(words), "{what}: {err}");
        assert_eq!(err.matches("list.txt:line ").count(), 1, "{what}: one error for one bad line: {err}");
        assert!(err.contains("nothing was copied"), "{what}: {err}");
    }
    assert_eq!(registry.requests().len(), before, "a broken list must not reach the network");
}

/// (what is wrong, the environment, words the error must have)
type BadSetting = (&'static str, &'static [(&'static str, &'static str)], &'static str);

#[test]
fn bad_settings_are_named() {
    let cases: [BadSetting; 8] = [
        ("an unknown platform", &[("PLATFORMS", "linux/sparc")], "PLATFORMS: `linux/sparc`"),
        ("a platform without arch", &[("PLATFORMS", "linux/amd64,linux")], "PLATFORMS: `linux`"),
        ("an empty ENV", &[("ENV", "")], "ENV is set but empty"),
        (
            "a DOCKER_REPO with a scheme",
            &[("DOCKER_REPO", "https://registry.example/x")],
            "DOCKER_REPO `https://registry.example/x` has a scheme",
        ),
        (
            "an uppercase DOCKER_REPO",
            &[("DOCKER_REPO", "localhost:5000/MyTeam")],
            "DOCKER_REPO `localhost:5000/MyTeam`: `MyTeam` is not a valid path component: image paths take \
             lowercase letters",
        ),
        ("an uppercase ENV", &[("ENV", "Local")], "ENV `Local` names a repository and goes into image paths"),
        (
            "a TAG_MODIFIER with its own dash",
            &[("TAG_MODIFIER", "-seed")],
            "TAG_MODIFIER `-seed` is appended to tags as `-<modifier>`",
        ),
        (
            "a version that cannot be a tag",
            &[("ALPINE_VERSION", "3.15 beta")],
            "ALPINE_VERSION `3.15 beta` goes into tags",
        ),
    ];
    let registry = TestRegistry::start().unwrap();
    let before = registry.requests().len();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, format!("{}/x/y: 1\n", registry.host())).unwrap();
    let path = list.display().to_string();
    for (what, env, words) in cases {
        for task in [vec!["buildx-publish-runtime", "--dry-run"], vec!["thirdparty", "--file", &path]] {
            let output = xtask(&task, env);
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(1), "{what}, {task:?}: {err}");
            assert!(err.contains(words), "{what}, {task:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{what}: one clear error: {err}");
            assert!(common::stdout(&output).is_empty(), "{what}: nothing planned or run");
        }
    }
    assert_eq!(registry.requests().len(), before);
}

/// `info`, the task a confused user runs, shows every setting even when some are invalid, marks
/// those with the rule they break, and fails.
#[test]
fn info_marks_invalid_settings_and_still_shows_the_others() {
    let output =
        xtask(&["info"], &[("ENV", "Local"), ("TAG_MODIFIER", "-seed"), ("PLATFORMS", "linux/arm64")]);
    assert_eq!(output.status.code(), Some(1));
    let out = common::stdout(&output);
    let line =
        |start: &str| out.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {out}"));
    assert!(line("Environment is Local").contains("<- invalid: ENV `Local`"), "{out}");
    assert!(line("TAG_MODIFIER:").contains("<- invalid: TAG_MODIFIER `-seed`"), "{out}");
    assert!(!line("PLATFORMS:").contains("invalid"), "{out}");
    assert!(line("ALPINE_VERSION:").ends_with("3.15"), "{out}");
    assert!(stderr(&output).contains("2 setting(s) break a rule, marked above"), "{}", stderr(&output));
}

/// Spaces after the commas of PLATFORMS are dropped, not passed on.
#[test]
fn platforms_are_normalized() {
    let plan = common::plan(&["buildx-publish-runtime"], &[("PLATFORMS", " linux/amd64 ,  linux/arm64")]);
    let platforms: Vec<&str> = plan
        .iter()
        .filter(|l| l.get(3).map(String::as_str) == Some("build"))
        .map(|l| l[l.iter().position(|w| w == "--platform").unwrap() + 1].as_str())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(plan[1][0].starts_with("# linux/amd64,linux/arm64 on this engine"), "{:?}", plan[1]);
}

/// An ENV that names none of the documented repositories is said, with where it leads, and the
/// task still runs; the documented ones and `<name>-test` say nothing.
#[test]
fn an_unusual_env_is_a_warning() {
    let output = common::plan(&["clean"], &[("ENV", "prod")]);
    assert!(!output.is_empty(), "the task still ran");
    let fake = common::FakeTools::new();
    let err = stderr(&fake.xtask(&["clean", "--dry-run"], &[("ENV", "prod")]));
    assert!(
        err.contains(
            "warning: ENV=prod is none of docker-dev, docker-prod, local, or <name>-test: it makes \
                      DOCKER_REPO us-docker.pkg.dev/multi-arch-docker/prod. Did you mean ENV=docker-prod?"
        ),
        "{err}"
    );
    for env in ["docker-dev", "docker-prod", "local", "alice-test"] {
        let err = stderr(&fake.xtask(&["clean", "--dry-run"], &[("ENV", env)]));
        assert!(!err.contains("warning: ENV"), "{env}: {err}");
    }
    // A DOCKER_REPO given as is: ENV names no repository then.
    let err =
        stderr(&fake.xtask(&["clean", "--dry-run"], &[("ENV", "e2e"), ("DOCKER_REPO", "localhost:5000/x")]));
    assert!(!err.contains("warning: ENV"), "{err}");
}

/// An image's tasks answer to the image's name as well as to the task's.
#[test]
fn image_tasks_answer_to_the_image_name() {
    for action in ["build", "buildx-publish", "pull"] {
        let by_task = common::plan(&[&format!("{action}-build")], &[]);
        let by_name = common::plan(&[&format!("{action}-golang-build")], &[]);
        assert_eq!(by_name, by_task, "{action}");
    }
}

/// `--env` is the deployment only: a step's variable given as `--env NAME=VALUE` (the word
/// cloud-build --local once took for `--step-env`) is refused, naming `--step-env`, before
/// anything is planned; with two of them, too, where clap alone would only say `--env` is
/// given twice.
#[test]
fn env_with_a_variable_is_refused_naming_step_env() {
    for args in [
        &["cloud-build", "--local", "--dry-run", "--env", "MARK=1"][..],
        &["cloud-build", "--local", "--dry-run", "--env=MARK=1", "--env", "B=2"],
        &["--env", "MARK=1", "clean", "--dry-run"],
    ] {
        let output = xtask(args, &[]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("a variable for the steps of cloud-build --local is `--step-env MARK=1`"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: one clear error: {err}");
        assert!(common::stdout(&output).is_empty(), "{args:?}: nothing planned or run");
    }
}
