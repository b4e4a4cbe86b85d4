//! Credentials never show: a credential helper and a fake `gcloud` hand out a sentinel secret
//! that a real registry (htpasswd) accepts; with the most verbose output, in real runs and dry
//! runs, succeeding or failing, the sentinel appears on neither stdout nor stderr.

mod common;

use common::{FakeTools, stderr, stdout};
use xtask_testbed::{Fixture, FixtureSpec, TestRegistry};

const SENTINEL: &str = "S3NT1NEL-9f2c7e-do-not-print";
const WRONG: &str = "WR0NG-5ecret-do-not-print";

struct Setup {
    fake: FakeTools,
    source: TestRegistry,
    destination: TestRegistry,
    list: String,
}

fn setup() -> Setup {
    let fake = FakeTools::new();
    let source = TestRegistry::start().unwrap();
    let destination = TestRegistry::start_with_auth("oauth2accesstoken", SENTINEL).unwrap();
    Fixture::generate(&FixtureSpec::small(900)).unwrap().push(&source.host(), "s/image", "1").unwrap();
    let list = fake.dir.path().join("list.txt");
    std::fs::write(&list, format!("{}/s/image: 1\n", source.host())).unwrap();
    let list = list.display().to_string();
    Setup { fake, source, destination, list }
}

impl Setup {
    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut args = vec!["thirdparty", "--verbose", "--file", &self.list];
        args.extend_from_slice(extra);
        let repo = format!("{}/m", self.destination.host());
        let config = self.fake.dir.path().join("docker").display().to_string();
        let mut all = vec![("DOCKER_REPO", repo.as_str()), ("DOCKER_CONFIG", config.as_str())];
        all.extend_from_slice(env);
        self.fake.xtask(&args, &all)
    }

    fn helper_says(&self, secret: &str) {
        let helper = self.fake.bin().join("docker-credential-sentinel");
        std::fs::write(
            &helper,
            format!("#!/bin/sh\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"oauth2accesstoken\",\"Secret\":\"{secret}\"}}' \"$server\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let config = self.fake.dir.path().join("docker");
        std::fs::create_dir_all(&config).unwrap();
        let json = format!(r#"{{"credHelpers": {{"{}": "sentinel"}}}}"#, self.destination.host());
        std::fs::write(config.join("config.json"), json).unwrap();
    }
}

fn assert_hidden(output: &std::process::Output, what: &str) {
    for (stream, text) in [("stdout", stdout(output)), ("stderr", stderr(output))] {
        for secret in [SENTINEL, WRONG] {
            assert!(!text.contains(secret), "{what}: a secret is on {stream}:\n{text}");
        }
    }
}

#[test]
fn helper_credentials_never_show() {
    let setup = setup();
    setup.helper_says(SENTINEL);
    let dry = setup.run(&["--dry-run"], &[]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stderr(&dry).contains("credentials from docker-credential-sentinel"), "{}", stderr(&dry));
    assert_hidden(&dry, "helper, dry run");
    let real = setup.run(&[], &[]);
    assert!(real.status.success(), "{}\n{}", stdout(&real), stderr(&real));
    assert!(stdout(&real).contains("copied "), "the sentinel really opened the registry");
    assert_hidden(&real, "helper, real run");

    // Refused credentials: the error says so, and still shows no secret.
    setup.helper_says(WRONG);
    Fixture::generate(&FixtureSpec::small(901)).unwrap().push(&setup.source.host(), "s/image", "1").unwrap();
    let refused = setup.run(&["--tries", "1"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("check the credentials"), "{}", stdout(&refused));
    assert_hidden(&refused, "helper, refused");
}

#[test]
fn gcloud_tokens_never_show() {
    let setup = setup();
    let gcloud_host = setup.destination.host();
    let env = [("GCLOUD_AUTH_REGISTRIES", gcloud_host.as_str())];
    setup.fake.answer("gcloud auth print-access-token", 0, SENTINEL);
    let dry = setup.run(&["--dry-run"], &env);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stderr(&dry).contains("+ gcloud auth print-access-token"),
        "the command is shown, its output is not"
    );
    assert!(stderr(&dry).contains("credentials from gcloud access token"), "{}", stderr(&dry));
    assert_hidden(&dry, "gcloud, dry run");

    setup.fake.answer("gcloud auth print-access-token", 0, SENTINEL);
    let real = setup.run(&[], &env);
    assert!(real.status.success(), "{}\n{}", stdout(&real), stderr(&real));
    assert_hidden(&real, "gcloud, real run");

    // gcloud failing: the error names gcloud and what to do, and shows no secret.
    setup.fake.answer("gcloud auth print-access-token", 1, SENTINEL);
    let failed = setup.run(&[], &env);
    assert_eq!(failed.status.code(), Some(1));
    assert!(stderr(&failed).contains("gcloud auth login"), "{}", stderr(&failed));
    assert_hidden(&failed, "gcloud failing");
}
