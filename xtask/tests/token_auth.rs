//! `thirdparty` against registries that want bearer tokens, as Docker Hub, gcr.io, Artifact
//! Registry and GHCR do: Debian's `docker-registry` with `auth: token`, trusting the test token
//! service (`common::token`), which signs JWTs with a test key. The source is public (anonymous
//! pull tokens); the destination wants credentials for push tokens.

mod common;

use std::time::Duration;

use base64::Engine;
use common::token::{PASSWORD, TokenService, USER, write_unrelated_ca};
use common::{stderr, stdout};
use xtask_testbed::fault_proxy::{Fault, FaultProxy, Rule, Schedule};
use xtask_testbed::{Fixture, FixtureSpec, TestRegistry, sha256_digest, skopeo_raw, skopeo_raw_as};

struct Setup {
    tokens: TokenService,
    source: TestRegistry,
    destination: TestRegistry,
    dir: tempfile::TempDir,
    /// (repository at the source, fixture)
    fixtures: Vec<(String, Fixture)>,
}

fn credentials() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Two public images at the source that share a base layer, and a destination that knows the
/// pusher (in the Docker config) and nobody else.
fn setup() -> Setup {
    setup_with(TokenService::start())
}

fn setup_with(tokens: TokenService) -> Setup {
    let source = TestRegistry::start_with_tokens(&tokens.auth_for("source")).unwrap();
    let destination = TestRegistry::start_with_tokens(&tokens.auth_for("destination")).unwrap();
    let mut fixtures = Vec::new();
    for (n, repository) in ["public/app", "public/tool"].into_iter().enumerate() {
        let spec = FixtureSpec { shared_base: Some((77, 64 << 10)), ..FixtureSpec::small(900 + n as u64) };
        let fixture = Fixture::generate(&spec).unwrap();
        fixture.push_as(&source.host(), repository, "1", Some(&credentials())).unwrap();
        fixtures.push((repository.to_string(), fixture));
    }
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(credentials());
    let config = format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, destination.host());
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    Setup { tokens, source, destination, dir, fixtures }
}

impl Setup {
    fn run(&self, source_host: &str, extra: &[&str]) -> std::process::Output {
        self.run_with(source_host, extra, &[])
    }

    /// `run`, with `env` added to the xtask's.
    fn run_with(&self, source_host: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let list = self.dir.path().join("list.txt");
        let lines: Vec<String> =
            self.fixtures.iter().map(|(repo, _)| format!("{source_host}/{repo}: 1")).collect();
        std::fs::write(&list, lines.join("\n")).unwrap();
        let list = list.display().to_string();
        let mut args = vec!["thirdparty", "--file", list.as_str()];
        args.extend_from_slice(extra);
        let repo = format!("{}/mirror", self.destination.host());
        let config = self.dir.path().display().to_string();
        let mut env = env.to_vec();
        env.extend([("DOCKER_REPO", repo.as_str()), ("DOCKER_CONFIG", config.as_str())]);
        common::xtask(&args, &env)
    }

    /// Every tag at the destination, read by skopeo as the pusher, is the source's.
    fn assert_all_copied(&self) {
        for (repository, fixture) in &self.fixtures {
            let reference = format!("{}/mirror/thirdparty/{repository}:1", self.destination.host());
            let raw = skopeo_raw_as(&reference, &credentials()).unwrap();
            assert_eq!(sha256_digest(&raw), fixture.digest, "{repository}");
        }
    }
}

#[test]
fn public_source_anonymously_destination_with_push_tokens_and_mounts_with_both_scopes() {
    let setup = setup();
    let before = setup.tokens.issued().len();
    let run = setup.run(&setup.source.host(), &[]);
    let (out, err) = (stdout(&run), stderr(&run));
    assert!(run.status.success(), "{out}\n{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    // The run's tokens, not the ones skopeo took to push the fixtures or to check.
    let issued = setup.tokens.issued().split_off(before);
    setup.assert_all_copied();
    // The registries really want tokens: anonymous readers get nothing at the destination.
    let reference = format!("{}/mirror/thirdparty/public/app:1", setup.destination.host());
    assert!(skopeo_raw(&reference).is_err(), "the destination serves anonymous readers");
    // The source: anonymous pull tokens only.
    let at_source: Vec<_> = issued.iter().filter(|i| i.service == "source").collect();
    assert!(!at_source.is_empty());
    for token in &at_source {
        assert_eq!(token.user, None, "{token:?}");
        assert!(token.scopes.iter().all(|s| s.ends_with(":pull")), "{token:?}");
        assert_eq!(token.granted.len(), token.scopes.len(), "{token:?}");
    }
    // The destination: push tokens from the Docker config's credentials.
    let at_destination: Vec<_> = issued.iter().filter(|i| i.service == "destination").collect();
    assert!(at_destination.iter().all(|i| i.user.as_deref() == Some(USER)), "{at_destination:#?}");
    assert!(
        at_destination.iter().any(|i| i.granted.iter().any(|g| g.ends_with(":pull,push"))),
        "{at_destination:#?}"
    );

    // The shared base layer went up once; the other repository mounted it, with a token that
    // holds pull on the repository it mounted from.
    let requests = setup.destination.requests();
    let mounts: Vec<_> =
        requests.iter().filter(|r| r.method == "POST" && r.path.contains("mount=")).collect();
    assert!(mounts.iter().any(|r| r.status == 201), "no mount succeeded: {requests:#?}");
    let mount_token = at_destination
        .iter()
        .find(|i| i.scopes.len() == 2)
        .unwrap_or_else(|| panic!("no token asked for two repositories: {at_destination:#?}"));
    let [first, second] = [&mount_token.scopes[0], &mount_token.scopes[1]];
    let pull_only = if first.ends_with(":pull") { first } else { second };
    assert!(pull_only.starts_with("repository:mirror/thirdparty/public/"), "{mount_token:?}");
    assert_eq!(mount_token.granted.len(), 2, "{mount_token:?}");
    let uploads = requests.iter().filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/")).count();
    let unique: std::collections::BTreeSet<&String> =
        setup.fixtures.iter().flat_map(|(_, f)| f.blobs.iter()).collect();
    assert_eq!(uploads, unique.len(), "each blob uploaded once");

    // Up to date on the second run, with no new push token needed beyond the HEADs'.
    let again = setup.run(&setup.source.host(), &[]);
    assert!(again.status.success(), "{}", stdout(&again));
    assert_eq!(
        stdout(&again).lines().filter(|l| l.starts_with("up to date")).count(),
        2,
        "{}",
        stdout(&again)
    );
}

/// The token service over HTTPS, with a certificate from a CA the test makes, while both
/// registries speak plain HTTP (loopback): the run checks the service against the system's trust
/// store, read where `SSL_CERT_FILE` points. A store without that CA gets the service refused,
/// before any credential goes out; with it, the copy goes through.
#[test]
fn a_token_service_over_https_is_checked_against_the_trust_store_that_ssl_cert_file_names() {
    let setup = setup_with(TokenService::start_over_https());
    let ca = setup.tokens.https_ca.clone().unwrap().display().to_string();
    let unrelated = setup.dir.path().join("unrelated-ca.pem");
    write_unrelated_ca(&unrelated);
    let unrelated = unrelated.display().to_string();
    let before = setup.tokens.issued().len();

    let refused = setup.run_with(&setup.source.host(), &["--tries", "1"], &[("SSL_CERT_FILE", &unrelated)]);
    let (out, err) = (stdout(&refused), stderr(&refused));
    assert_eq!(refused.status.code(), Some(1), "{out}\n{err}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 2, "{out}");
    for line in failed {
        assert!(line.contains("UnknownIssuer"), "{line}");
    }
    assert_eq!(setup.tokens.issued().len(), before, "a token was issued over a connection not trusted");

    let trusted = setup.run_with(&setup.source.host(), &[], &[("SSL_CERT_FILE", &ca)]);
    let (out, err) = (stdout(&trusted), stderr(&trusted));
    assert!(trusted.status.success(), "{out}\n{err}");
    setup.assert_all_copied();
    let issued = setup.tokens.issued().split_off(before);
    assert!(issued.iter().any(|i| i.service == "source"), "{issued:#?}");
    assert!(
        issued.iter().any(|i| i.service == "destination" && i.user.as_deref() == Some(USER)),
        "{issued:#?}"
    );
}

/// A token the registry stops taking mid-run (expired early, revoked): the request that meets
/// the 401 fetches a new token and the run goes on.
#[test]
fn a_token_that_expires_mid_run_is_fetched_again() {
    let setup = setup();
    // Good for 2 s at the registries, while the service says 300 s, so the client keeps it.
    setup.tokens.set_lifetimes(Duration::from_secs(2), Duration::from_secs(300));
    // The source asks the first blob GET to come back in 3 s: by then the token is dead.
    let proxy = FaultProxy::start(
        setup.source.addr,
        vec![Rule::new(Some("GET"), "/blobs/", Fault::TooManyRequests(3), Schedule::FirstN(1))],
    );
    let before = setup.tokens.issued().len();
    let run = setup.run(&proxy.host(), &["--verbose"]);
    let (out, err) = (stdout(&run), stderr(&run));
    assert!(run.status.success(), "{out}\n{err}");
    setup.assert_all_copied();
    assert!(err.contains("token no longer accepted: fetching a new one"), "{err}");
    // The registry refused a token on a content request (not the first `GET /v2/`) ...
    let refused = setup.source.requests().into_iter().filter(|r| r.status == 401 && r.path != "/v2/").count();
    assert!(refused >= 1, "{:#?}", setup.source.requests());
    // ... and the same scope was asked for again.
    let issued = setup.tokens.issued().split_off(before);
    let pulls: Vec<_> = issued.iter().filter(|i| i.service == "source").map(|i| i.scopes.clone()).collect();
    let repeated = pulls.iter().any(|scopes| pulls.iter().filter(|s| *s == scopes).count() >= 2);
    assert!(repeated, "{pulls:#?}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD) && !err.contains("Bearer ey"));
}

/// Wrong credentials: the token service refuses them, the run names the registry and what to
/// do, and the password never shows.
#[test]
fn refused_credentials_are_named_with_what_to_do() {
    let setup = setup();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong-{PASSWORD}"));
    let config = format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, setup.destination.host());
    std::fs::write(setup.dir.path().join("config.json"), config).unwrap();
    let run = setup.run(&setup.source.host(), &[]);
    let (out, err) = (stdout(&run), stderr(&run));
    assert_eq!(run.status.code(), Some(1), "{out}\n{err}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 2, "{out}");
    for line in failed {
        assert!(line.contains("the token service refused these credentials"), "{line}");
        assert!(line.contains("docker login"), "{line}");
    }
    assert!(!out.contains("wrong-") && !err.contains("wrong-"));
}

/// A private repository read without credentials: the anonymous token grants nothing, and the
/// registry's refusal is named.
#[test]
fn an_anonymous_pull_of_a_private_repository_is_refused_by_name() {
    let setup = setup();
    let fixture = Fixture::generate(&FixtureSpec::small(950)).unwrap();
    fixture.push_as(&setup.source.host(), "private/app", "1", Some(&credentials())).unwrap();
    let list = setup.dir.path().join("private.txt");
    std::fs::write(&list, format!("{}/private/app: 1\n", setup.source.host())).unwrap();
    let list = list.display().to_string();
    let repo = format!("{}/mirror", setup.destination.host());
    let config = setup.dir.path().display().to_string();
    let run = common::xtask(
        &["thirdparty", "--file", &list],
        &[("DOCKER_REPO", &repo), ("DOCKER_CONFIG", &config)],
    );
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(1), "{out}");
    let failed = out.lines().find(|l| l.starts_with("FAILED")).unwrap_or_else(|| panic!("{out}"));
    assert!(failed.contains("private/app") && failed.contains("401"), "{failed}");
    assert!(failed.contains("check the credentials"), "{failed}");
}
