//! Each platform of an image tested once it is pushed, before any tag of the image moves, on
//! the real engine: a catalog-level test that checks `uname -m` inside the image (by digest,
//! on the platform it was built for) and an image with a test of its own. A test that fails on
//! one platform keeps every tag of that image where it was (read with skopeo) and its child
//! unbuilt; fixed, everything moves.

mod common;

use common::engine::{Setup, digest, engine_or_skip, outcomes};
use common::{stderr, stdout};

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"
# Every image's test, unless it has its own: the machine the image says it is.
test = "sh tests/uname.sh {platform} {name}"

[versions]
BUSYBOX_VERSION = "1.35"

[[image]]
name = "base"
description = "the root"
tag = "1"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "solo"
description = "on its own"
tag = "1"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "tool"
description = "on its own, never changed"
tag = "1"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "app"
description = "on base"
tag = "1"
test = "sh tests/app.sh {name}"

[cloud_builder]
name = "cloud"
description = "never built here"
tag = "1"
"#;

/// The platform's image, run on the node's engine: its `uname -m` must be the platform's, and
/// the platform and image FAIL_ON names (`linux/arm64/base`, from the run's environment,
/// which the test inherits) fails.
const UNAME: &str = r#"set -eu
arch=$(docker run --rm --platform "$PLATFORM" "$IMAGE" uname -m)
case "$1" in linux/amd64) want=x86_64 ;; linux/arm64) want=aarch64 ;; *) want=unknown ;; esac
echo "uname -m in $IMAGE: $arch"
[ "$arch" = "$want" ] || { echo "expected $want"; exit 1; }
[ "$1/$2" != "${FAIL_ON:-none}" ] || { echo "made to fail on $1"; exit 1; }
"#;

const APP: &str = r#"set -eu
docker run --rm --platform "$PLATFORM" "$IMAGE" cat /app.txt | grep -qx "$1"
"#;

static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

const IMAGES: [&str; 4] = ["app", "base", "solo", "tool"];

#[test]
fn a_test_that_fails_on_one_platform_keeps_every_tag_of_its_image_and_fixed_everything_moves() {
    if !engine_or_skip(
        "a_test_that_fails_on_one_platform_keeps_every_tag_of_its_image_and_fixed_everything_moves",
    ) {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let files: Vec<(&str, String)> = vec![
        (
            "base/Dockerfile",
            "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\nFROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
             COPY file.txt /base.txt\n"
                .into(),
        ),
        ("base/file.txt", "one\n".into()),
        (
            "solo/Dockerfile",
            "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\nFROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
             COPY file.txt /solo.txt\n"
                .into(),
        ),
        ("solo/file.txt", "one\n".into()),
        (
            "tool/Dockerfile",
            "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\nFROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
             COPY file.txt /tool.txt\n"
                .into(),
        ),
        ("tool/file.txt", "one\n".into()),
        ("app/Dockerfile", "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/base:1\nCOPY app.txt /app.txt\n".into()),
        ("app/app.txt", "app\n".into()),
        ("tests/uname.sh", UNAME.into()),
        ("tests/app.sh", APP.into()),
        ("cloud/Dockerfile", "FROM scratch\n".into()),
        ("pipeline.yaml", "steps: []\n".into()),
    ];
    let setup = Setup::new(CATALOG, &files, |up| format!("{up}/busybox: 1.35\n"));
    let (repo, logs) = (setup.repo(), setup.logs());
    let publish = |env: &[(&str, &str)]| setup.xtask(&["publish-all", "--logs", &logs], env);

    // The plan: each platform's test after its build, with its environment, from the
    // catalog's folder.
    let dry = stdout(&setup.xtask_ok(&["publish-all", "--dry-run"], &[]));
    for platform in ["linux/amd64", "linux/arm64"] {
        let arch = platform.trim_start_matches("linux/");
        let test = format!(
            "[dry-run] IMAGE='{repo}/base@<the digest of {repo}/base:1-{arch}>' PLATFORM={platform} sh \
             tests/uname.sh {platform} base"
        );
        let build = format!("--push --tag {repo}/base:1-{arch} ");
        let (built, tested) = (dry.find(&build), dry.find(&test));
        assert!(built.is_some() && tested.is_some() && built < tested, "{test} after {build}:\n{dry}");
    }
    assert!(dry.contains("PLATFORM=linux/arm64 sh tests/app.sh app"), "{dry}");

    // Cold: built, tested, published.
    let output = publish(&[]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let out = stdout(&output);
    assert_eq!(outcomes(&out, &IMAGES), (vec!["app", "base", "solo", "tool"], vec![]), "{out}");
    let log = std::fs::read_to_string(std::path::Path::new(&logs).join("base.log")).unwrap();
    assert!(log.contains("uname -m in") && log.contains(": aarch64") && log.contains(": x86_64"), "{log}");
    let row = out.lines().find(|l| l.starts_with("base ")).unwrap();
    assert!(row.contains(" passed "), "the table's tests column: {row}");
    let (base, app) = (digest(&format!("{repo}/base:1")), digest(&format!("{repo}/app:1")));

    // base changed, and its arm64 test fails: no tag of base moves, app is not built.
    std::fs::write(setup.path("base/file.txt"), "two\n").unwrap();
    let output = publish(&[("FAIL_ON", "linux/arm64/base")]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let failed =
        format!("FAILED      base: the linux/arm64 test of base failed, so {repo}/base:1 was not tagged: ");
    assert!(out.contains(&failed), "{out}");
    assert!(out.contains("skipped     app: base failed"), "{out}");
    let row = out.lines().find(|l| l.starts_with("base ")).unwrap();
    assert!(row.contains("failed: test on linux/arm64") && row.contains("failed on linux/arm64"), "{row}");
    assert_eq!(digest(&format!("{repo}/base:1")), base, "base's tag moved after a failed test");
    assert_eq!(digest(&format!("{repo}/app:1")), app, "app's tag moved");
    let log = std::fs::read_to_string(std::path::Path::new(&logs).join("base.log")).unwrap();
    assert!(log.contains("made to fail on linux/arm64"), "the test's output is in the image's log: {log}");

    // Fixed: base (built again from the cache) passes, app follows, both tags move.
    let output = publish(&[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert_eq!(outcomes(&out, &IMAGES), (vec!["app", "base"], vec!["solo", "tool"]), "{out}");
    assert_ne!(digest(&format!("{repo}/base:1")), base);
    assert_ne!(digest(&format!("{repo}/app:1")), app);
    // And then nothing: a tested image is up to date.
    let output = publish(&[]);
    assert!(!stderr(&output).contains("buildx build") && !stderr(&output).contains("tests/uname.sh"));
    assert_eq!(outcomes(&stdout(&output), &IMAGES), (vec![], vec!["app", "base", "solo", "tool"]));

    // RELEASE=together, base and solo changed, base's arm64 test failing: solo passes, but no
    // tag of any image moves; solo is named as held back, at its candidate.
    let tags = |name: &str| digest(&format!("{repo}/{name}:1"));
    let before: Vec<String> = IMAGES.iter().map(|name| tags(name)).collect();
    std::fs::write(setup.path("base/file.txt"), "three\n").unwrap();
    std::fs::write(setup.path("solo/file.txt"), "two\n").unwrap();
    let together = [("RELEASE", "together")];
    let output = publish(&[("RELEASE", "together"), ("FAIL_ON", "linux/arm64/base")]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("held        solo -> {repo}/solo:1-candidate")), "{out}");
    assert!(
        out.contains(&format!(
            "RELEASE=together: no tag moved, as 2 of 4 images did not pass; built but held back: solo \
             ({repo}/solo:1-candidate)"
        )),
        "{out}"
    );
    let after: Vec<String> = IMAGES.iter().map(|name| tags(name)).collect();
    assert_eq!(after, before, "a tag moved with RELEASE=together and a failure");
    assert_ne!(digest(&format!("{repo}/solo:1-candidate")), before[2], "solo was built");

    // Fixed: everything passes, and every tag moves, each to its image's candidate; the image
    // that did not change is not rebuilt.
    let output = publish(&together);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(out.contains("up to date  tool") && !out.contains("released    tool"), "{out}");
    assert_eq!(tags("tool"), before[3], "tool's tag stays");
    for (name, old) in IMAGES[..3].iter().zip(&before) {
        assert!(out.contains(&format!("released    {name} -> {repo}/{name}:1")), "{out}");
        assert_ne!(&tags(name), old, "{name} did not move");
        assert_eq!(tags(name), digest(&format!("{repo}/{name}:1-candidate")), "{name}: its candidate");
    }
}
