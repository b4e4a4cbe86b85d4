//! The image graph on a real Docker Engine, offline: a catalog of five images in three levels,
//! with a diamond (`left` and `right` on `base`, `top` on both) and an image on its own
//! (`solo`), all from the vendored busybox base. publish-all builds them in order, independent
//! images at once, each child from the digest its parent just published; a second run builds
//! nothing; a change rebuilds exactly the changed image and what is below it; REFRESH reruns
//! the package step; a failing middle image skips its descendants and spares the rest.

mod common;

use std::process::Output;

use common::engine::{Setup, digest, distinct_builds, engine_or_skip, file_in, layers, line_of, outcomes};
use common::{stderr, stdout};

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]
BUSYBOX_VERSION = "1.35"
V = "1"
FAIL = "0"

[[image]]
name = "top"
task = "top"
description = "on left and right"
tag = "{V}"

[[image]]
name = "left"
task = "left"
description = "on base; fails with FAIL=1"
tag = "{V}"
build_args = ["FAIL"]

[[image]]
name = "right"
task = "right"
description = "on base"
tag = "{V}"

[[image]]
name = "base"
task = "base"
description = "the root, with a package step"
tag = "{V}"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "solo"
task = "solo"
description = "on busybox alone"
tag = "{V}"
build_args = ["BUSYBOX_VERSION"]

[cloud_builder]
name = "cloud"
description = "never built here"
tag = "1"
"#;

const BASE: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
    ARG REFRESH\n\
    RUN cat /proc/sys/kernel/random/uuid > /refreshed && uname -m > /built-on\n\
    COPY file.txt /base.txt\n";
const LEFT: &str = "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/base:1\nARG FAIL\n\
    RUN test \"$FAIL\" = 0 && sleep 2 && echo left > /left\nCOPY file.txt /left.txt\n";
const RIGHT: &str = "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/base:1\n\
    RUN sleep 2 && echo right > /right\nCOPY file.txt /right.txt\n";
const TOP: &str = "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/right:1 AS right\nFROM ${DOCKER_REPO}/left:1\n\
    COPY --from=right /right /right\nCOPY file.txt /top.txt\n";
const SOLO: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
    RUN sleep 2 && echo solo > /solo\nCOPY file.txt /solo.txt\n";

/// The engine is one (and the benchmark empties its build cache): the tests take turns.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

const IMAGES: [&str; 5] = ["base", "left", "right", "top", "solo"];

fn setup() -> Setup {
    let mut files: Vec<(&str, String)> = vec![
        ("base/Dockerfile", BASE.into()),
        ("left/Dockerfile", LEFT.into()),
        ("right/Dockerfile", RIGHT.into()),
        ("top/Dockerfile", TOP.into()),
        ("solo/Dockerfile", SOLO.into()),
        ("cloud/Dockerfile", "FROM scratch\n".into()),
        ("pipeline.yaml", "steps: []\n".into()),
    ];
    let notes = ["base/file.txt", "left/file.txt", "right/file.txt", "top/file.txt", "solo/file.txt"];
    files.extend(notes.map(|path| (path, "one\n".to_string())));
    Setup::new(CATALOG, &files, |up| format!("{up}/busybox: 1.35\n"))
}

fn no_build_ran(output: &Output) -> bool {
    !stderr(output).contains("docker buildx build")
}

#[test]
fn the_image_graph_builds_in_order_and_skips_what_is_up_to_date() {
    if !engine_or_skip("the_image_graph_builds_in_order_and_skips_what_is_up_to_date") {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup();
    let repo = setup.repo();
    let logs = setup.logs();
    let publish = |env: &[(&str, &str)]| setup.xtask_ok(&["publish-all", "--logs", &logs], env);

    // 1. Cold: in order, independent images at once.
    let output = publish(&[]);
    let out = stdout(&output);
    assert_eq!(outcomes(&out, &IMAGES), (vec!["base", "left", "right", "solo", "top"], vec![]), "{out}");
    let (start, done) = (
        |i: &str| line_of(&out, &format!("building    {i}:")),
        |i: &str| line_of(&out, &format!("published   {i} -> ")),
    );
    for (child, parent) in [("left", "base"), ("right", "base"), ("top", "left"), ("top", "right")] {
        assert!(start(child) > done(parent), "{child} started before {parent} was published:\n{out}");
    }
    // left and right both started before either was done; so did base and solo.
    assert!(start("left").max(start("right")) < done("left").min(done("right")), "left, right:\n{out}");
    assert!(start("base").max(start("solo")) < done("base").min(done("solo")), "base, solo:\n{out}");
    for image in IMAGES {
        let row =
            out.lines().find(|l| l.starts_with(&format!("{image} "))).unwrap_or_else(|| panic!("{out}"));
        assert!(row.contains(" linux/amd64,linux/arm64 ") && row.contains(" built "), "{row}");
    }

    // Each child starts from the digest its parent was just published at, on both platforms:
    // pinned on its command line, and its layers are the parent's and then its own.
    for (child, parent) in [("left", "base"), ("right", "base"), ("top", "left")] {
        let parent_ref = format!("{repo}/{parent}:1");
        let pinned = format!("{parent_ref}=docker-image://{parent_ref}@{}", digest(&parent_ref));
        let log = std::fs::read_to_string(std::path::Path::new(&logs).join(format!("{child}.log"))).unwrap();
        let builds = distinct_builds(&log);
        assert!(
            builds.len() == 2 && builds.iter().all(|build| build.contains(&pinned)),
            "{child} builds each platform from {pinned}:\n{log}"
        );
        for platform in ["linux/amd64", "linux/arm64"] {
            let (below, above) =
                (layers(&parent_ref, platform), layers(&format!("{repo}/{child}:1"), platform));
            assert!(above.len() > below.len() && above.starts_with(&below), "{child} {platform}: {above:?}");
        }
    }
    assert_eq!(file_in(&format!("{repo}/top:1"), "linux/arm64", "/built-on"), "aarch64");
    assert_eq!(
        file_in(&format!("{repo}/top:1"), "linux/amd64", "/right"),
        "right",
        "the diamond's other side"
    );
    let first_refresh = file_in(&format!("{repo}/base:1"), "linux/amd64", "/refreshed");
    // The timeline: one bar per build, each image on both platforms, the chain that ended last
    // (through top, whose parents end before it starts) marked.
    let timeline_path = std::path::Path::new(&logs).join("timeline.svg");
    assert!(out.contains(&format!("timeline of the builds: {}", timeline_path.display())), "{out}");
    let picture = std::fs::read_to_string(&timeline_path).unwrap();
    // For docs/builds.md: the picture of this real run, kept where asked.
    if let Some(keep) = std::env::var_os("KEEP_TIMELINE") {
        std::fs::copy(&timeline_path, keep).unwrap();
    }
    let bars: Vec<&str> = picture.lines().filter(|l| l.starts_with(r#"<rect class="bar""#)).collect();
    assert_eq!(bars.len(), IMAGES.len() * 2, "{picture}");
    for image in IMAGES {
        for platform in ["linux/amd64", "linux/arm64"] {
            let this = format!(r#"data-image="{image}" data-platform="{platform}""#);
            assert_eq!(
                bars.iter().filter(|b| b.contains(&this)).count(),
                1,
                "{image} {platform}:\n{picture}"
            );
        }
    }
    let top_bars: Vec<&&str> = bars.iter().filter(|b| b.contains(r#"data-image="top""#)).collect();
    assert!(top_bars.iter().all(|b| b.contains(r#"data-critical="true""#)), "{picture}");
    assert!(
        bars.iter()
            .filter(|b| b.contains(r#"data-image="solo""#))
            .all(|b| b.contains(r#"data-critical="false""#))
    );

    // 2. Nothing changed: nothing is built.
    let output = publish(&[]);
    assert!(no_build_ran(&output), "{}", stderr(&output));
    assert!(!timeline_path.exists(), "a run that built nothing leaves no timeline of another run");
    let mut all = IMAGES.to_vec();
    all.sort();
    assert_eq!(outcomes(&stdout(&output), &IMAGES), (vec![], all));

    // 3. A leaf's file changed: the dry run says so, and only the leaf is built.
    std::fs::write(setup.path("top/file.txt"), "two\n").unwrap();
    let dry = stdout(&setup.xtask_ok(&["publish-all", "--dry-run"], &[]));
    assert!(dry.contains("[dry-run] # top: would build: file.txt changed"), "{dry}");
    for image in ["base", "left", "right", "solo"] {
        assert!(dry.contains(&format!("[dry-run] # {image}: up to date: {repo}/{image}:1")), "{dry}");
    }
    let out = stdout(&publish(&[]));
    assert_eq!(outcomes(&out, &IMAGES), (vec!["top"], vec!["base", "left", "right", "solo"]), "{out}");

    // 4. The root's file changed: the root and everything below it, not solo. Its package step
    //    stays cached (REFRESH is the one it was built with).
    std::fs::write(setup.path("base/file.txt"), "two\n").unwrap();
    let dry = stdout(&setup.xtask_ok(&["publish-all", "--dry-run"], &[]));
    assert!(dry.contains("[dry-run] # left: would build: base would be rebuilt"), "{dry}");
    assert!(
        dry.contains("[dry-run] # top: would build: right would be rebuilt, left would be rebuilt"),
        "{dry}"
    );
    let pin = format!("{repo}/left:1=docker-image://{repo}/left:1@<that digest>");
    let note = format!("[dry-run] # top: then built from the digest left gets: --build-context {pin}");
    assert!(dry.contains(&note), "{dry}");
    let out = stdout(&publish(&[]));
    assert_eq!(outcomes(&out, &IMAGES), (vec!["base", "left", "right", "top"], vec!["solo"]), "{out}");
    assert!(out.contains("building    left: base 127.0.0.1:"), "the parent's digest changed: {out}");
    assert_eq!(file_in(&format!("{repo}/base:1"), "linux/amd64", "/refreshed"), first_refresh);

    // 5. A refresh reruns the package step of the images that declare REFRESH, and what is
    //    below them; a run without it keeps it, and all is up to date.
    let out = stdout(&publish(&[("REFRESH", "now")]));
    assert_eq!(outcomes(&out, &IMAGES), (vec!["base", "left", "right", "top"], vec!["solo"]), "{out}");
    assert!(out.contains("building    base: build argument REFRESH \"\" → 20"), "{out}");
    assert_ne!(file_in(&format!("{repo}/base:1"), "linux/amd64", "/refreshed"), first_refresh);
    let output = publish(&[]);
    assert!(no_build_ran(&output), "the refresh is kept: {}", stdout(&output));

    // 6. A failing middle image: its descendants are skipped, the rest spared.
    let output = setup.xtask(&["publish-all", "--logs", &logs], &[("FAIL", "1")]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("FAILED      left: "), "{out}");
    assert!(out.contains("skipped     top: left failed"), "{out}");
    assert_eq!(outcomes(&out, &IMAGES), (vec![], vec!["base", "right", "solo"]), "{out}");
    let row = out.lines().find(|l| l.starts_with("top ")).unwrap();
    assert!(row.contains("skipped: left failed"), "{row}");
    assert!(stderr(&output).contains("1 of 5 images failed, 1 skipped"), "{}", stderr(&output));

    // 7. One image alone: its parent must be published, and the error says how.
    let output = setup
        .xtask(&["buildx-publish-left"], &[("DOCKER_REPO", &format!("{}/fresh", setup.destination.host()))]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("it builds on base, which is not published yet")
            && err.contains("cargo xtask buildx-publish-base"),
        "{err}"
    );
}

/// bench-graph's quickest settings run to their end and print the table, so that the benchmark
/// cannot rot unseen.
#[test]
fn the_graph_benchmark_runs() {
    if !engine_or_skip("the_graph_benchmark_runs") {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let output = common::xtask(&["bench-graph", "--runs", "1", "--work", "100"], &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    for situation in ["cold", "up to date", "leaf change", "root change"] {
        let row =
            out.lines().find(|l| l.starts_with(situation)).unwrap_or_else(|| panic!("no {situation}: {out}"));
        let numbers: Vec<f64> =
            row.split_whitespace().filter_map(|w| w.trim_end_matches('x').parse().ok()).collect();
        assert_eq!(numbers.len(), 3, "two times and a ratio: {row}");
    }
    assert!(out.contains("leaf change: the whole run "), "{out}");
}
