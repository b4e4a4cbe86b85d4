//! The dry-run plan of every task, argument by argument, under the default settings and under
//! the settings of an arm64 seeding run against production.

mod common;

use common::{FakeTools, assert_plan, expected, plan, xtask};

/// The test catalog's folder, where its images' build contexts are.
const C: &str = common::TEST_CATALOG_DIR;

const DEV: &str = "us-docker.pkg.dev/multi-arch-docker/docker-dev";
const PROD: &str = "us-docker.pkg.dev/multi-arch-docker/docker-prod";

/// The settings of an arm64 seeding run against production.
const SEED: &[(&str, &str)] = common::SEED;

/// With MULTI_CONTEXT=1 and an arm64 build to do, before the builds: the ssh connection to the
/// VM's engine as docker context `arm_node`, and a lease on it.
fn arm_node_open() -> Vec<String> {
    let host = "xtask-builder-arm64-2cpu";
    vec![
        "# write …".to_string(),
        format!("ssh -f -N {host}"),
        s("DOCKER_BUILDKIT=1 docker context inspect arm_node"),
        s("# if that succeeds:"),
        format!("DOCKER_BUILDKIT=1 docker context update arm_node --docker host=ssh://{host}"),
        s("# if that fails:"),
        format!("DOCKER_BUILDKIT=1 docker context create arm_node --docker host=ssh://{host}"),
        s("# repeated until the engine of builder-arm64-2cpu answers through docker context arm_node, \
           at most 30 tries 5 s apart:"),
        s("DOCKER_BUILDKIT=1 docker --context arm_node version --format {{.Server.Version}}"),
        s(
            "# a lease on builder-arm64-2cpu, so that no other pipeline stops it under these builds: xtask-lease-plan",
        ),
        s(
            "DOCKER_BUILDKIT=1 docker --context arm_node volume create --label dev.multi-arch-docker.lease=plan \
           --label dev.multi-arch-docker.lease.since=NOW xtask-lease-plan",
        ),
    ]
}

/// After the builds: the lease given back, the others looked at, the connection closed (the VM
/// is stopped only with AUTO_START_STOP=1).
fn arm_node_close() -> Vec<String> {
    vec![
        s("DOCKER_BUILDKIT=1 docker --context arm_node volume rm xtask-lease-plan"),
        s("# then, unless another lease (younger than 2 h) is there:"),
        s(
            "DOCKER_BUILDKIT=1 docker --context arm_node volume ls --filter label=dev.multi-arch-docker.lease \
           --format '{{.Name}} {{.Label \"dev.multi-arch-docker.lease.since\"}}'",
        ),
        s("ssh -O exit xtask-builder-arm64-2cpu"),
    ]
}

/// What a plan says of an engine that answers with the classic image store (the fake docker).
const CLASSIC: &str = "the engine uses the classic image store, whose own builder exports no registry cache: \
                       a docker-container builder, BuildKit from";

/// `docker`, on the engine of `context` (`None`: this one).
fn docker(context: Option<&str>) -> String {
    context.map_or("DOCKER_BUILDKIT=1 docker".into(), |c| format!("DOCKER_BUILDKIT=1 docker --context {c}"))
}

fn place(context: Option<&str>) -> String {
    context.map_or("this engine".into(), |c| format!("the engine of docker context {c}"))
}

/// buildx-setup of one node: a builder container from the vendored BuildKit, made unless found.
fn setup(repo: &str, builder: &str, context: Option<&str>, platforms: &str) -> Vec<String> {
    let docker = docker(context);
    vec![
        format!(
            "# {platforms} on {}: builder {builder}, {CLASSIC} {repo}/thirdparty/moby/buildkit:v0.18.0",
            place(context)
        ),
        format!("{docker} buildx ls"),
        format!("{docker} buildx inspect --builder {builder}"),
        "# if that succeeds:".into(),
        format!("# Using existing builder {builder}"),
        "# if that fails:".into(),
        format!(
            "{docker} buildx create --name {builder} --driver docker-container \
             --driver-opt image={repo}/thirdparty/moby/buildkit:v0.18.0"
        ),
    ]
}

/// The default OCI labels of every build, as the fake tools' runs make them.
const LABELS: &str = common::TEST_LABELS;

fn setup_default() -> Vec<String> {
    setup(DEV, "builder-local", None, "linux/amd64,linux/arm64")
}

/// MULTI_CONTEXT with PLATFORMS=linux/arm64: one node, the arm64 VM's engine.
fn setup_seed() -> Vec<String> {
    setup(PROD, "odb-arm_node", Some("arm_node"), "linux/arm64")
}

fn check(task: &str, env: &[(&str, &str)], lines: &[String]) {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_plan(&plan(&[task], env), &expected(&lines));
}

fn check_both(task: &str, default: &[String], seed: &[String]) {
    check(task, &[], default);
    check(task, SEED, seed);
}

fn s(text: &str) -> String {
    text.to_string()
}

#[test]
fn buildx_setup() {
    check_both("buildx-setup", &setup_default(), &setup_seed());
}

#[test]
fn buildx_ls_and_prune() {
    let ls = [s("DOCKER_BUILDKIT=1 docker buildx ls")];
    check_both("buildx-ls", &ls, &ls);
    check_both(
        "prune",
        &[s("DOCKER_BUILDKIT=1 docker buildx prune --builder builder-local --all --force")],
        &[s("DOCKER_BUILDKIT=1 docker --context arm_node buildx prune --builder odb-arm_node --all --force")],
    );
}

#[test]
fn local_builds() {
    check_both(
        "build-runtime",
        &[format!(
            "DOCKER_BUILDKIT=1 docker build --file {C}/runtime/Dockerfile \
             --build-arg DOCKER_REPO={DEV} --build-arg ALPINE_VERSION=3.15 \
             {LABELS} --pull --tag {DEV}/runtime:3.15 {C}/runtime"
        )],
        &[format!(
            "DOCKER_BUILDKIT=1 docker build --file {C}/runtime/Dockerfile \
             --build-arg DOCKER_REPO={PROD} --build-arg ALPINE_VERSION=3.15 \
             {LABELS} --pull --tag {PROD}/runtime:3.15-arm64-seed {C}/runtime"
        )],
    );
    check_both(
        "build-build",
        &[format!(
            "DOCKER_BUILDKIT=1 docker build --file {C}/golang-build/Dockerfile \
             --build-arg DOCKER_REPO={DEV} --build-arg ALPINE_VERSION=3.15 --build-arg GO_VERSION=1.18 \
             {LABELS} --pull --tag {DEV}/golang-build:1.18 {C}/golang-build"
        )],
        &[format!(
            "DOCKER_BUILDKIT=1 docker build --file {C}/golang-build/Dockerfile \
             --build-arg DOCKER_REPO={PROD} --build-arg ALPINE_VERSION=3.15 --build-arg GO_VERSION=1.18 \
             {LABELS} --pull --tag {PROD}/golang-build:1.18-arm64-seed {C}/golang-build"
        )],
    );
    check_both(
        "build-odb",
        &[format!(
            "DOCKER_BUILDKIT=1 docker build --file {C}/odb/Dockerfile \
             --build-arg DOCKER_REPO={DEV} --build-arg DEBIAN_VERSION=11-slim --build-arg ODB_VERSION=2.5.0-b.23 \
             {LABELS} --pull --tag {DEV}/odb:2.5.0-b.23 {C}/odb"
        )],
        &[format!(
            "DOCKER_BUILDKIT=1 docker build --file {C}/odb/Dockerfile \
             --build-arg DOCKER_REPO={PROD} --build-arg DEBIAN_VERSION=11-slim --build-arg ODB_VERSION=2.5.0-b.23 \
             {LABELS} --pull --tag {PROD}/odb:2.5.0-b.23-arm64-seed {C}/odb"
        )],
    );
}

/// `docker buildx build` of one platform of an image; the cache ref (per platform) never
/// carries the tag modifier.
struct Build<'a> {
    repo: &'a str,
    builder: &'a str,
    context: Option<&'a str>,
    image: &'a str,
    args: &'a str,
    tag: &'a str,
    /// The builder's id the provenance records: the machine (`HOST_ID`) or the Cloud Build
    /// (`CLOUD_BUILD_ID`, where `BUILD_ID` is set).
    builder_id: &'a str,
}

/// The builder's id outside Cloud Build: the machine, by the name the tests give it.
const HOST_ID: &str = "host:xtask-test-host";
/// The builder's id in the Cloud Build `BUILD_ID=plan`: its page.
const CLOUD_BUILD_ID: &str =
    "https://console.cloud.google.com/cloud-build/builds;region=global/plan?project=multi-arch-docker";

impl<'a> Build<'a> {
    /// A build on this engine, with the default builder, into the dev repository.
    fn on_this_engine(image: &'a str, args: &'a str, tag: &'a str, builder_id: &'a str) -> Build<'a> {
        Build { repo: DEV, builder: "builder-local", context: None, image, args, tag, builder_id }
    }

    fn cmd(&self, platform: &str, pushed_tag: &str) -> String {
        let (repo, image) = (self.repo, self.image);
        let arch = platform.trim_start_matches("linux/");
        let cache = format!("{repo}/cache/{image}:{}-{arch}", self.tag);
        format!(
            "{} buildx build --file {C}/{image}/Dockerfile --platform {platform} \
             --builder {} --progress plain --build-arg DOCKER_REPO={repo} {} {LABELS} \
             --cache-from type=registry,ref={cache} --cache-to type=registry,ref={cache},mode=max \
             --pull --provenance mode=max,builder-id={} --push --tag {pushed_tag} {C}/{image}",
            docker(self.context),
            self.builder,
            self.args,
            self.builder_id
        )
    }
}

// Each declares `ARG REFRESH`, which gets the value the image was built with: none here.
const IMAGES: [(&str, &str, &str, &str); 3] = [
    ("runtime", "runtime", "--build-arg ALPINE_VERSION=3.15 --build-arg REFRESH=", "3.15"),
    (
        "build",
        "golang-build",
        "--build-arg ALPINE_VERSION=3.15 --build-arg GO_VERSION=1.18 --build-arg REFRESH=",
        "1.18",
    ),
    (
        "odb",
        "odb",
        "--build-arg DEBIAN_VERSION=11-slim --build-arg ODB_VERSION=2.5.0-b.23 --build-arg REFRESH=",
        "2.5.0-b.23",
    ),
];

/// The first line of an image's plan: it would be built, since what is published cannot be
/// read (no registry answers the tests).
fn unreadable(image: &str) -> String {
    format!("# {image}: would build: cannot tell whether it is up to date: …")
}

/// The merge of the platforms' tags into `reference`, recording no inputs (they are unknown
/// while the registry does not answer).
fn merge(builder: &str, context: Option<&str>, reference: &str, archs: &[&str]) -> String {
    let tags: Vec<String> = archs.iter().map(|arch| format!("{reference}-{arch}")).collect();
    format!(
        "{} buildx imagetools create --builder {builder} --tag {reference} {}",
        docker(context),
        tags.join(" ")
    )
}

/// Each platform its own build with its own cache and tag, then one merge, a single platform
/// (the seeding run, on the arm64 node) too.
#[test]
fn buildx_publish() {
    for (task, image, args, tag) in IMAGES {
        let build = Build::on_this_engine(image, args, tag, HOST_ID);
        let reference = format!("{DEV}/{image}:{tag}");
        let mut default = vec![unreadable(image)];
        default.extend(setup_default());
        for arch in ["amd64", "arm64"] {
            default.push(format!("# linux/{arch} on this engine:"));
            default.push(build.cmd(&format!("linux/{arch}"), &format!("{reference}-{arch}")));
        }
        default.push(format!("# when every platform succeeded, merge them into {reference}:"));
        default.push(merge("builder-local", None, &reference, &["amd64", "arm64"]));
        let build = Build {
            repo: PROD,
            builder: "odb-arm_node",
            context: Some("arm_node"),
            image,
            args,
            tag,
            builder_id: CLOUD_BUILD_ID,
        };
        let seeded = format!("{PROD}/{image}:{tag}-arm64-seed");
        // The VM is brought up when its first build is placed on it, and taken down once the
        // image it built is merged.
        let mut seed = vec![unreadable(image)];
        seed.extend(arm_node_open());
        seed.extend(setup_seed());
        seed.push("# linux/arm64 on the engine of docker context arm_node:".into());
        seed.push(build.cmd("linux/arm64", &format!("{seeded}-arm64")));
        seed.push(format!("# when every platform succeeded, merge them into {seeded}:"));
        seed.push(merge("odb-arm_node", Some("arm_node"), &seeded, &["arm64"]));
        seed.extend(arm_node_close());
        check_both(&format!("buildx-publish-{task}"), &default, &seed);
    }
}

/// MULTI_CONTEXT with both platforms: amd64 on this engine, arm64 on the VM's, each with its
/// own builder; the merge runs here.
#[test]
fn buildx_publish_on_two_nodes() {
    let (_, image, args, tag) = IMAGES[2];
    let reference = format!("{DEV}/{image}:{tag}");
    let mut lines = vec![unreadable(image)];
    let mut here = setup_default();
    here[0] = here[0].replace("linux/amd64,linux/arm64 on", "linux/amd64 on");
    lines.extend(here);
    let here = Build::on_this_engine(image, args, tag, CLOUD_BUILD_ID);
    let arm = Build {
        repo: DEV,
        builder: "builder-local-arm_node",
        context: Some("arm_node"),
        image,
        args,
        tag,
        builder_id: CLOUD_BUILD_ID,
    };
    lines.extend([
        "# linux/amd64 on this engine:".to_string(),
        here.cmd("linux/amd64", &format!("{reference}-amd64")),
    ]);
    // Each platform's node set up as its build comes to it: the VM brought up first.
    lines.extend(arm_node_open());
    lines.extend(setup(DEV, "builder-local-arm_node", Some("arm_node"), "linux/arm64"));
    lines.extend([
        "# linux/arm64 on the engine of docker context arm_node:".to_string(),
        arm.cmd("linux/arm64", &format!("{reference}-arm64")),
    ]);
    // Nothing is left for the VM: it goes down before the merge, which runs here.
    lines.extend(arm_node_close());
    lines.extend([
        format!("# when every platform succeeded, merge them into {reference}:"),
        merge("builder-local", None, &reference, &["amd64", "arm64"]),
    ]);
    check("buildx-publish-odb", &[("MULTI_CONTEXT", "1"), ("BUILD_ID", "plan")], &lines);
}

/// In Cloud Build, each platform of a `split_build` image is built, its builder stopped, and
/// built again with the push.
#[test]
fn odb_split_build_in_cloud_build() {
    let (_, image, args, tag) = IMAGES[2];
    let reference = format!("{DEV}/{image}:{tag}");
    let mut lines = vec![unreadable(image)];
    lines.extend(setup_default());
    for arch in ["amd64", "arm64"] {
        let build = Build::on_this_engine(image, args, tag, HOST_ID);
        let full = build.cmd(&format!("linux/{arch}"), &format!("{reference}-{arch}"));
        let cache = format!("{DEV}/cache/odb:2.5.0-b.23-{arch}");
        let build_only = full
            .replace(" --push", "")
            .replace(&format!(" --cache-to type=registry,ref={cache},mode=max"), "");
        lines.extend([
            format!("# linux/{arch} on this engine:"),
            s("# split build: build without pushing, restart the builder, then build and push"),
            build_only,
            s("DOCKER_BUILDKIT=1 docker buildx stop builder-local"),
            full,
        ]);
    }
    lines.push(format!("# when every platform succeeded, merge them into {reference}:"));
    lines.push(merge("builder-local", None, &reference, &["amd64", "arm64"]));
    check("buildx-publish-odb", &[("BUILDER_OUTPUT", "/builder/outputs")], &lines);
    // Images not marked for the split build are built once per platform, even in Cloud Build.
    let plan = plan(&["buildx-publish-runtime"], &[("BUILDER_OUTPUT", "/builder/outputs")]);
    assert_eq!(plan.iter().filter(|l| l.get(3).is_some_and(|w| w == "build")).count(), 2);
}

#[test]
fn pulls_and_clean() {
    for (task, reference) in [
        ("pull-runtime", "runtime:3.15"),
        ("pull-build", "golang-build:1.18"),
        ("pull-odb", "odb:2.5.0-b.23"),
    ] {
        check_both(
            task,
            &[format!("DOCKER_BUILDKIT=1 docker pull {DEV}/{reference}")],
            &[format!("DOCKER_BUILDKIT=1 docker pull {PROD}/{reference}-arm64-seed")],
        );
    }
    check_both(
        "clean",
        &[format!(
            "DOCKER_BUILDKIT=1 docker rmi {DEV}/runtime:3.15 {DEV}/golang-build:1.18 {DEV}/odb:2.5.0-b.23"
        )],
        &[format!(
            "DOCKER_BUILDKIT=1 docker rmi {PROD}/runtime:3.15-arm64-seed {PROD}/golang-build:1.18-arm64-seed \
             {PROD}/odb:2.5.0-b.23-arm64-seed"
        )],
    );
}

#[test]
fn vm_tasks() {
    let vm = "builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a";
    for action in ["start", "stop"] {
        let line = [format!("gcloud compute instances {action} {vm}")];
        check_both(&format!("{action}-vm"), &line, &line);
    }
    // ssh-vm is the operator, as themselves (no root@, not the tunnel's key).
    let ssh = [s(
        "gcloud compute ssh --zone us-central1-a builder-arm64-2cpu --project multi-arch-docker --tunnel-through-iap",
    )];
    check_both("ssh-vm", &ssh, &ssh);
    let tunnel = arm_node_open()[..7].to_vec();
    check_both("ssh-tunnel", &tunnel, &tunnel);
    // The VM's name, zone and project are settings too.
    check(
        "start-vm",
        &[("ARM64_VM", "arm-b"), ("ZONE", "europe-west4-a"), ("GCP_PROJECT", "p")],
        &[s("gcloud compute instances start arm-b --project p --zone europe-west4-a")],
    );
}

#[test]
fn cloud_builder() {
    let tag = "gcloud502.0.0-docker27.4.1-buildx0.19.3-rust1.95.0";
    let args = "--build-arg BUILDER_GCLOUD_VERSION=502.0.0 --build-arg BUILDER_DOCKER_VERSION=27.4.1 \
                --build-arg BUILDER_BUILDX_VERSION=0.19.3 --build-arg BUILDER_RUST_VERSION=1.95.0";
    let lines = |repo: &str, modifier: &str, builder: &str, builder_id: &str| {
        let vendored = |path: &str| format!("{repo}/thirdparty/{path}");
        let mut lines = vec![format!(
            "# thirdparty: vendor from {C}/thirdparty.txt what the builds need: {} {} {} {} {} \
             (`cargo xtask thirdparty --dry-run` shows what is out of date)",
            vendored("docker:27.4.1-cli"),
            vendored("docker/buildx-bin:0.19.3"),
            vendored("rust:1.95.0-slim-bookworm"),
            vendored("google.com/cloudsdktool/google-cloud-cli:502.0.0-slim"),
            vendored("moby/buildkit:v0.18.0")
        )];
        // Built by buildx, with provenance: this engine's builder, made ready first.
        lines.extend(setup(repo, builder, None, "linux/amd64"));
        lines.extend([
            format!(
                "# the xtask's dependency recipe: the Cargo manifests and Cargo.lock of {}, with stub sources, \
                 into {WORK}/cloud-builder/xtask-recipe",
                xtask::project_root().display()
            ),
            format!(
                "DOCKER_BUILDKIT=1 docker buildx build --file {C}/cloud-builder/Dockerfile --platform linux/amd64 \
                 --builder {builder} --progress plain --build-arg DOCKER_REPO={repo} {args} \
                 --build-context xtask-recipe={WORK}/cloud-builder/xtask-recipe \
                 --pull --provenance mode=max,builder-id={builder_id} \
                 --metadata-file {WORK}/cloud-builder/metadata.json \
                 --push --tag {repo}/cloud-builder:{tag}{modifier} {C}/cloud-builder"
            ),
        ]);
        lines
    };
    // The recipe's folder is under the work folder, named here so that the plan can show it; a
    // dry run writes nothing there.
    const WORK: &str = "/nonexistent/plan-work";
    let with_work = |env: &[(&'static str, &'static str)]| [env, &[("CARGO_TARGET_DIR", WORK)]].concat();
    check("build-publish-cloud-builder", &with_work(&[]), &lines(DEV, "", "builder-local", HOST_ID));
    check(
        "build-publish-cloud-builder",
        &with_work(SEED),
        &lines(PROD, "-arm64-seed", "odb", CLOUD_BUILD_ID),
    );
    assert!(!std::path::Path::new(WORK).exists());
}

#[test]
fn flags_win_over_the_environment_and_versions_come_from_it() {
    let plan = plan(
        &["--env", "flag-env", "pull-runtime", "--tag-modifier", "x"],
        &[("ENV", "env-env"), ("TAG_MODIFIER", "y"), ("ALPINE_VERSION", "3.16")],
    );
    assert_plan(
        &plan,
        &expected(&[
            "DOCKER_BUILDKIT=1 docker pull us-docker.pkg.dev/multi-arch-docker/flag-env/runtime:3.16-x",
        ]),
    );
    // DOCKER_REPO replaces $REGISTRY/$GCP_PROJECT/$ENV whole; REGISTRY replaces only the host.
    let plan = common::plan(&["pull-odb"], &[("DOCKER_REPO", "localhost:5000/dev/")]);
    assert_plan(&plan, &expected(&["DOCKER_BUILDKIT=1 docker pull localhost:5000/dev/odb:2.5.0-b.23"]));
    let plan = common::plan(&["pull-odb"], &[("REGISTRY", "europe-docker.pkg.dev")]);
    assert_plan(
        &plan,
        &expected(&[
            "DOCKER_BUILDKIT=1 docker pull europe-docker.pkg.dev/multi-arch-docker/docker-dev/odb:2.5.0-b.23",
        ]),
    );
}

#[test]
fn dryrun_variable_means_dry_run() {
    let output = xtask(&["prune"], &[("DRYRUN", "1"), ("PATH", "/nonexistent")]);
    assert!(output.status.success());
    assert_eq!(
        common::stdout(&output),
        "[dry-run] DOCKER_BUILDKIT=1 docker buildx prune --builder builder-local --all --force\n"
    );
}

#[test]
fn info_shows_the_settings() {
    let output = xtask(&["info"], SEED);
    let out = common::stdout(&output);
    assert!(output.status.success());
    for line in [
        "Environment is docker-prod",
        &format!("DOCKER_REPO:            {PROD}"),
        "PLATFORMS:              linux/arm64",
        "MULTI_CONTEXT:          1",
        "TAG_MODIFIER:           arm64-seed",
        "ALPINE_VERSION:         3.15",
        "BUILDER_BUILDX_VERSION: 0.19.3",
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in\n{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("docker buildx:")), "{out}");
}

#[test]
fn the_task_list_names_every_task() {
    let alone = xtask(&[], &[]);
    assert!(alone.status.success(), "`cargo xtask` alone is the task list, not an error");
    let list = common::stdout(&alone);
    assert_eq!(list, common::stdout(&xtask(&["help"], &[])));
    let others = ["info", "thirdparty", "bench-thirdparty", "bench-rebuild", "seed-arm64-dry-run", "help"];
    let per_image =
        ["build-runtime", "build-build", "build-odb", "buildx-publish-runtime", "buildx-publish-build"];
    let more_per_image = ["buildx-publish-odb", "pull-runtime", "pull-build", "pull-odb"];
    for task in common::TASKS_WITH_A_PLAN.iter().chain(&others).chain(&per_image).chain(&more_per_image) {
        assert!(
            list.lines().any(|l| l.trim_start().starts_with(&format!("{task} "))),
            "{task} missing:\n{list}"
        );
    }
}

#[test]
fn an_unknown_task_is_an_error() {
    let output = xtask(&["build-nothing"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(common::stderr(&output).contains("build-nothing"));
}

#[test]
fn cloud_build_submits_the_pipeline() {
    let image = "cloud-builder:gcloud502.0.0-docker27.4.1-buildx0.19.3-rust1.95.0";
    check(
        "cloud-build",
        &[],
        &[format!(
            "gcloud builds submit --project=multi-arch-docker --region=global --config {C}/pipeline.yaml \
             --substitutions=_ENV=docker-dev,_CLOUDBUILD_IMAGE={DEV}/{image},_AUTO_START_STOP=0 ."
        )],
    );
    check(
        "cloud-build",
        &[("ENV", "docker-prod"), ("AUTO_START_STOP", "1"), ("GCP_PROJECT", "p2")],
        &[format!(
            "gcloud builds submit --project=p2 --region=global --config {C}/pipeline.yaml \
             --substitutions=_ENV=docker-prod,_CLOUDBUILD_IMAGE=us-docker.pkg.dev/p2/docker-prod/{image},_AUTO_START_STOP=1 ."
        )],
    );
}

#[test]
fn start_vm_wait_and_tunnel_wait_plans() {
    let vm = "builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a";
    check("start-vm", &[], &[format!("gcloud compute instances start {vm}")]);
    assert_plan(
        &plan(&["start-vm", "--wait", "--tries", "12", "--interval", "10"], &[]),
        &expected(&[
            &format!("gcloud compute instances start {vm}"),
            "# repeated until builder-arm64-2cpu reports RUNNING, at most 12 tries 10 s apart:",
            &format!("gcloud compute instances describe {vm} --format=value(status)"),
            "# repeated until ssh to builder-arm64-2cpu through IAP works, at most 12 tries 10 s apart:",
            "gcloud compute ssh --project multi-arch-docker --zone us-central1-a builder-arm64-2cpu \
             --tunnel-through-iap --quiet --command=true",
            "# builder-arm64-2cpu is running and answers ssh",
        ]),
    );
    // The tunnel: the ssh connection to the VM (as its tunnel user, through IAP, from the ssh
    // config the task writes) and the docker context on it; no port forward.
    let open = arm_node_open();
    let open: Vec<&str> = open.iter().map(String::as_str).collect();
    assert_plan(&plan(&["ssh-tunnel", "--wait"], &[]), &expected(&open[..9]));
}

/// seed-arm64 follows the pipeline's publish-all: every catalog image, arm64 only, under seed
/// tags, into the pipeline's arm64 caches.
#[test]
fn seed_arm64_plans_the_arm64_build_of_every_image() {
    let env = [("ENV", "docker-prod")];
    let fake = common::FakeTools::new();
    let output = fake.xtask(&["seed-arm64", "--yes", "--dry-run"], &env);
    assert!(output.status.success(), "{}", common::stderr(&output));
    if std::env::consts::ARCH != "aarch64" {
        assert!(common::stderr(&output).contains("not arm64/aarch64"), "the warning comes first");
    }
    let plan = common::parse_plan(&common::stdout(&output));
    let builds: Vec<&Vec<String>> =
        plan.iter().filter(|l| l.get(2..4) == Some(&["buildx".into(), "build".into()])).collect();
    let catalog = xtask::catalog::Catalog::load_from(
        &xtask::project_root(),
        std::path::Path::new(common::TEST_CATALOG),
    )
    .unwrap();
    let images: Vec<(&str, &xtask::catalog::Image)> = catalog.task_images().collect();
    assert_eq!(builds.len(), images.len());
    let versions = catalog.versions.clone();
    for (task, image) in images {
        let tag = image.tags()[0].render(&versions).unwrap();
        let name = &image.name;
        let build = builds
            .iter()
            .find(|b| b.contains(&format!("{C}/{name}/Dockerfile")))
            .unwrap_or_else(|| panic!("no build of {name}: {plan:#?}"));
        let arg = |flag: &str| build[build.iter().position(|w| w == flag).unwrap() + 1].clone();
        assert_eq!(arg("--platform"), "linux/arm64");
        assert_eq!(arg("--tag"), format!("{PROD}/{name}:{tag}-arm64-seed-arm64"));
        // Exactly the cache of the pipeline's arm64 half.
        assert_eq!(arg("--cache-from"), format!("type=registry,ref={PROD}/cache/{name}:{tag}-arm64"));
        assert_eq!(arg("--cache-to"), format!("type=registry,ref={PROD}/cache/{name}:{tag}-arm64,mode=max"));
        // The pipeline's BUILDER is dropped: each image gets a builder of its own, after ours.
        assert_eq!(arg("--builder"), format!("builder-local-{task}"));
        let merge = format!(
            "DOCKER_BUILDKIT=1 docker buildx imagetools create --builder builder-local-{task} \
             --tag {PROD}/{name}:{tag}-arm64-seed {PROD}/{name}:{tag}-arm64-seed-arm64"
        );
        assert!(plan.iter().any(|l| l.join(" ") == merge), "{merge}\n{plan:#?}");
        // MULTI_CONTEXT is dropped too: the builder is created plain.
        let create = format!(
            "DOCKER_BUILDKIT=1 docker buildx create --name builder-local-{task} --driver docker-container \
             --driver-opt image={PROD}/thirdparty/moby/buildkit:v0.18.0"
        );
        assert!(plan.iter().any(|l| l.join(" ") == create), "{plan:#?}");
    }
    assert!(!plan.iter().any(|l| l.contains(&"arm_node".to_string())));
    // The original's dry-run target stays.
    assert_eq!(common::stdout(&fake.xtask(&["seed-arm64-dry-run"], &env)), common::stdout(&output));
}

/// ENV=local asks the engine which image store it uses (fake docker answers here): the plan
/// names the vendoring of exactly what the builds start from, and the builder that follows.
/// The plan, and where it was told to keep its files (`CARGO_TARGET_DIR`).
fn local_plan(store: &str) -> (Vec<String>, tempfile::TempDir) {
    let fake = common::FakeTools::new();
    fake.print("docker info --format", store);
    fake.print("docker context show", "default");
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().display().to_string();
    let output =
        fake.xtask(&["publish-all", "--dry-run"], &[("ENV", "local"), ("CARGO_TARGET_DIR", &work_dir)]);
    assert!(output.status.success(), "{}", common::stderr(&output));
    (common::parse_plan(&common::stdout(&output)).iter().map(|l| l.join(" ")).collect(), work)
}

const LOCAL: &str = "localhost:5000/local";
const LOCAL_IMAGES: [(&str, &str, &str); 3] =
    [("runtime", "runtime", "3.15"), ("build", "golang-build", "1.18"), ("odb", "odb", "2.5.0-b.23")];

/// The builds of an image, one per platform.
fn builds_of(lines: &[String], image: &str) -> Vec<Vec<String>> {
    let builds: Vec<Vec<String>> = lines
        .iter()
        .filter(|l| {
            l.starts_with("DOCKER_BUILDKIT=1 docker buildx build") && l.ends_with(&format!(" {C}/{image}"))
        })
        .map(|line| shlex::split(line).unwrap())
        .collect();
    assert_eq!(builds.len(), 2, "{image}: {lines:#?}");
    builds
}

fn flag(words: &[String], flag: &str) -> String {
    words[words.iter().position(|w| w == flag).unwrap() + 1].clone()
}

#[test]
fn local_publish_all_plan_on_a_classic_engine() {
    let (lines, work) = local_plan(r#"[["Backing Filesystem","extfs"]]"#);
    let work = work.path().display().to_string();
    assert_eq!(lines[0], "# ENV=local: if no registry answers at 127.0.0.1:5000, start one:");
    // Pasted, the task starts the registry in the background, as the real run does.
    assert_eq!(lines[1], "cargo xtask local-registry --port 5000");
    // The plan can be pasted: the files it names exist, though nothing ran.
    let buildkitd = std::fs::read_to_string(format!("{work}/xtask/buildkitd.toml")).unwrap();
    assert!(
        buildkitd.contains("[registry.\"localhost:5000\"]") && buildkitd.contains("http = true"),
        "{buildkitd}"
    );
    assert_eq!(
        lines[2],
        format!(
            "# thirdparty: vendor from {C}/thirdparty.txt what the builds need: {LOCAL}/thirdparty/alpine:3.15 \
             {LOCAL}/thirdparty/golang:1.18-alpine3.15 {LOCAL}/thirdparty/debian:11-slim \
             {LOCAL}/thirdparty/moby/buildkit:v0.18.0 (`cargo xtask thirdparty --dry-run` shows what is out of date)"
        ),
        "the cloud builder's bases are not vendored"
    );
    assert_eq!(
        lines[3],
        format!(
            "cargo xtask thirdparty --bases --env local --docker-repo localhost:5000/local --catalog {C}/images.toml"
        )
    );
    for (task, image, tag) in LOCAL_IMAGES {
        let builder = format!("builder-local-{task}");
        let create = format!(
            "DOCKER_BUILDKIT=1 docker buildx create --name {builder} --driver docker-container --driver-opt network=host \
             --driver-opt image={LOCAL}/thirdparty/moby/buildkit:v0.18.0 \
             --buildkitd-config {work}/xtask/buildkitd.toml --bootstrap"
        );
        assert!(lines.contains(&create), "{create}\n{lines:#?}");
        for (build, arch) in builds_of(&lines, image).iter().zip(["amd64", "arm64"]) {
            assert_eq!(flag(build, "--builder"), builder);
            assert_eq!(flag(build, "--platform"), format!("linux/{arch}"));
            assert_eq!(flag(build, "--tag"), format!("{LOCAL}/{image}:{tag}-{arch}"));
            assert_eq!(
                flag(build, "--cache-to"),
                format!("type=registry,ref={LOCAL}/cache/{image}:{tag}-{arch},mode=max")
            );
            assert!(build.contains(&format!("DOCKER_REPO={LOCAL}")));
        }
        let merge = format!(
            "DOCKER_BUILDKIT=1 docker buildx imagetools create --builder {builder} --tag {LOCAL}/{image}:{tag} \
             {LOCAL}/{image}:{tag}-amd64 {LOCAL}/{image}:{tag}-arm64"
        );
        assert!(lines.contains(&merge), "{merge}\n{lines:#?}");
    }
}

#[test]
fn local_publish_all_plan_on_a_containerd_engine() {
    let (lines, _work) = local_plan(r#"[["driver-type","io.containerd.snapshotter.v1"]]"#);
    assert!(lines[2].contains(&format!("{LOCAL}/thirdparty/debian:11-slim (")), "{}", lines[2]);
    assert!(!lines[2].contains("buildkit"), "no BuildKit image to vendor: {}", lines[2]);
    assert!(!lines.iter().any(|l| l.contains("buildx create")), "no builder to create: {lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with(
        "# linux/amd64,linux/arm64 on this engine: builder default, the engine uses the containerd image store"
    )));
    for (_, image, _) in LOCAL_IMAGES {
        for build in builds_of(&lines, image) {
            assert_eq!(flag(&build, "--builder"), "default");
        }
    }
}

/// Each task's help: its own options first, then only the settings it uses, under their own
/// heading; seed-arm64 shows no default for the ENV it requires; publish-all offers no --check
/// (its builds would run anyway).
#[test]
fn each_task_help_lists_its_own_options_then_its_settings() {
    let help = |task: &str| common::stdout(&xtask(&[task, "--help"], &[]));
    let thirdparty = help("thirdparty");
    let (own, settings) =
        thirdparty.split_once("Settings (flag, or the environment variable named):").unwrap();
    assert!(own.contains("--jobs") && own.contains("--check"), "{thirdparty}");
    assert!(settings.contains("--docker-repo") && settings.contains("--dry-run"), "{thirdparty}");
    for unused in ["--vm", "--zone", "--platforms", "--multi-context"] {
        assert!(!thirdparty.contains(unused), "thirdparty lists {unused}:\n{thirdparty}");
    }
    let start_vm = help("start-vm");
    assert!(start_vm.contains("--vm") && !start_vm.contains("--docker-repo"), "{start_vm}");
    let seed = help("seed-arm64");
    let env_line = seed.lines().find(|l| l.trim_start().starts_with("--env")).unwrap();
    assert!(!env_line.contains("[default:") && env_line.contains("required"), "{env_line}");
    assert!(!help("publish-all").contains("--check"));
    // Each task's help says what the task does, not what its shared options are.
    let publish_odb = help("buildx-publish-odb");
    assert!(
        publish_odb.starts_with("Build odb (odb C++ tools and libraries) for $PLATFORMS"),
        "{publish_odb}"
    );
    assert!(!publish_odb.contains("How images are built"), "{publish_odb}");
    let tunnel = help("ssh-tunnel");
    assert!(tunnel.starts_with("Open the ssh connection to the arm64 VM's engine"), "{tunnel}");
    assert!(!tunnel.contains("8375"), "{tunnel}");
    assert!(help("ssh-vm").contains("as yourself") && !help("ssh-vm").contains("root shell"));
    // Settings hidden from a task's help still work after it, and before it.
    let plan = plan(&["--vm", "b", "stop-vm"], &[]);
    assert_eq!(plan[0][4], "b");
}

/// A dry run starts nothing: every task of the list, with a fake on `PATH` for every program the
/// xtask runs, calls at most the read-only queries a plan depends on (which image store an
/// engine has, which context is current, whether a container exists).
#[test]
fn no_dry_run_starts_anything() {
    let list = common::stdout(&xtask(&[], &[]));
    let tasks: Vec<&str> = list
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|task| *task != "help")
        .collect();
    assert!(tasks.len() >= 30, "{tasks:?}");
    let queries = [
        "docker info",
        "docker context show",
        "docker context inspect",
        "docker container inspect",
        "docker --context arm_node info",
        "gcloud auth print-access-token",
    ];
    let mut started = Vec::new();
    for task in tasks {
        let fake = FakeTools::new();
        for program in ["skopeo", "docker-registry", "cargo", "crane", "oras"] {
            fake.add(program);
        }
        // (Some fail here, offline or missing a key: what they ran before that counts.)
        fake.xtask(&[task, "--dry-run"], &[("ENV", "yourname-test")]);
        for call in fake.calls() {
            let line = call
                .iter()
                .filter(|w| !w.starts_with("DOCKER_BUILDKIT="))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            if !queries.iter().any(|q| line.starts_with(q)) {
                started.push(format!("{task} --dry-run ran `{line}`"));
            }
        }
    }
    assert!(started.is_empty(), "{}", started.join("\n"));
}
