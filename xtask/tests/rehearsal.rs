//! `cloud-build --local`: small pipelines of the tests' own, rehearsed on this machine
//! (`--on-host`, no engine needed) and in their images through `docker run` (a busybox image
//! served from a loopback registry, on the real engine): shared home and workspace, `$$`,
//! `waitFor` overlap (proven with files), failures, timeouts, substitutions, `--step-env`, the plan.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{FakeTools, stderr, stdout};

/// A catalog of its own (the test catalog's files, copied) whose pipeline is `pipeline`, and a
/// target folder for what the rehearsal writes.
struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    fn new(pipeline: &str) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog");
        let fixture = xtask::project_root().join(common::TEST_CATALOG_DIR);
        common::engine::run("cp", &["-a", &fixture.display().to_string(), &catalog.display().to_string()]);
        std::fs::write(catalog.join("pipeline.yaml"), pipeline).unwrap();
        Bed { dir }
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }

    fn xtask(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let catalog = self.dir.path().join("catalog/images.toml").display().to_string();
        let target = self.target().display().to_string();
        let mut all = vec![("CATALOG", catalog.as_str()), ("CARGO_TARGET_DIR", target.as_str())];
        all.extend_from_slice(env);
        let mut words = vec!["cloud-build", "--local"];
        words.extend_from_slice(args);
        common::xtask(&words, &all)
    }

    /// The one rehearsal's folder (`<target>/cloud-build-local/<build id>`).
    fn run_dir(&self) -> PathBuf {
        let base = self.target().join("cloud-build-local");
        let runs: Vec<PathBuf> = std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    }

    fn read(&self, file: &str) -> String {
        let path = self.run_dir().join("workspace").join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }
}

fn all_output(output: &Output) -> String {
    format!("{}\n{}", stdout(output), stderr(output))
}

#[track_caller]
fn assert_ok(output: &Output) {
    assert!(output.status.success(), "the rehearsal failed:\n{}", all_output(output));
}

/// The row of `step` in the final table: its status.
fn status(output: &Output, step: &str) -> String {
    let out = stdout(output);
    let row = out
        .lines()
        .skip_while(|l| !l.starts_with("ID "))
        .find(|l| l.split("  ").next().map(str::trim) == Some(step))
        .unwrap_or_else(|| panic!("no row for {step} in:\n{}", all_output(output)));
    row[step.len()..].split_whitespace().next().unwrap().to_string()
}

/// A step that marks that it started, then waits (at most 20 s) for `other` to have started:
/// both succeed only if they run at the same time.
fn overlapping(id: &str, other: &str, image: &str) -> String {
    format!(
        "  - id: {id}\n    name: {image}\n    waitFor: ['-']\n    entrypoint: sh\n    args:\n      - -c\n      - |\n        \
         touch /workspace/{id}-started\n        i=0\n        \
         while [ ! -e /workspace/{other}-started ] && [ $$i -lt 200 ]; do sleep 0.1; i=$$((i+1)); done\n        \
         [ -e /workspace/{other}-started ] && touch /workspace/{id}-saw-{other}\n"
    )
}

const SHARED: &str = r#"substitutions:
  _WHO: world
  _IMAGE: busybox-for-${PROJECT_ID}
steps:
  - id: write
    name: IMAGE
    entrypoint: sh
    args:
      - -c
      - |
        echo "$$HOME" > /workspace/home-seen
        echo kept > /builder/home/note
        echo gone > /tmp/rehearsal-not-kept
        echo "$_WHO" > /workspace/who
        echo '$$literal' > /workspace/dollar
        echo "$$MARK" > /workspace/mark1
        echo "$$BUILDER_OUTPUT" > /workspace/output-seen
        pwd > /workspace/pwd
  - id: read
    name: IMAGE
    script: |
      cat /builder/home/note > /workspace/note-read
      if [ -e /tmp/rehearsal-not-kept ]; then echo present; else echo absent; fi > /workspace/tmp-file
      echo "$MARK" > /workspace/mark2
"#;

/// On this machine: one home for every step, `$$` as a shell `$`, the substitutions, and
/// `--step-env` in every step, said so.
#[test]
fn on_host_steps_share_the_home_and_the_workspace() {
    let bed = Bed::new(&SHARED.replace("IMAGE", "busybox"));
    let output = bed.xtask(&["--on-host", "--step-env", "MARK=m1"], &[]);
    assert_ok(&output);
    let run = bed.run_dir();
    assert_eq!(bed.read("home-seen"), run.join("home").display().to_string());
    assert_eq!(bed.read("output-seen"), run.join("outputs").display().to_string());
    assert_eq!(bed.read("pwd"), run.join("workspace").display().to_string());
    assert_eq!(bed.read("note-read"), "kept");
    assert_eq!(bed.read("who"), "world");
    assert_eq!(bed.read("dollar"), "$literal");
    assert_eq!((bed.read("mark1"), bed.read("mark2")), ("m1".into(), "m1".into()));
    let out = all_output(&output);
    assert!(
        out.contains("note: --step-env MARK=m1 is added to every step; Cloud Build has no such option"),
        "{out}"
    );
    assert_eq!((status(&output, "write"), status(&output, "read")), ("SUCCESS".into(), "SUCCESS".into()));
    // The workspace is the upload: the repository less .gcloudignore.
    let workspace = run.join("workspace");
    assert!(workspace.join("Cargo.toml").is_file() && workspace.join("xtask/src/main.rs").is_file());
    assert!(!workspace.join(".git").exists() && !workspace.join("target").exists());
    let _ = std::fs::remove_file("/tmp/rehearsal-not-kept");
}

/// Two steps with `waitFor: ['-']` run at once: each sees the other's file while it waits.
#[test]
fn on_host_wait_for_lets_steps_overlap() {
    let pipeline =
        format!("steps:\n{}{}", overlapping("a", "b", "busybox"), overlapping("b", "a", "busybox"));
    let bed = Bed::new(&pipeline);
    let output = bed.xtask(&["--on-host"], &[]);
    assert_ok(&output);
    assert_eq!(bed.read("a-saw-b"), "");
    assert_eq!(bed.read("b-saw-a"), "");
}

/// A failing step: the steps after it never start, a step running beside it is cancelled, the
/// task fails naming it and shows its log's tail.
#[test]
fn on_host_a_failing_step_stops_the_build() {
    let bed = Bed::new(
        "steps:\n\
         - {id: ok, name: x, entrypoint: 'true'}\n\
         - {id: slow, name: x, waitFor: ['-'], entrypoint: sleep, args: ['30']}\n\
         - {id: fail, name: x, waitFor: [ok], entrypoint: sh, args: [-c, 'echo boom-from-the-step; exit 3']}\n\
         - {id: after, name: x, entrypoint: touch, args: [/workspace/after-ran]}\n",
    );
    let started = std::time::Instant::now();
    let output = bed.xtask(&["--on-host"], &[]);
    assert!(!output.status.success(), "{}", all_output(&output));
    assert!(started.elapsed().as_secs() < 25, "the slow step was stopped, not waited for");
    for (step, want) in [("ok", "SUCCESS"), ("slow", "CANCELLED"), ("fail", "FAILURE"), ("after", "QUEUED")] {
        assert_eq!(status(&output, step), want, "{step}");
    }
    let out = all_output(&output);
    assert!(out.contains("boom-from-the-step"), "the failed step's log tail: {out}");
    assert!(stderr(&output).contains("step fail failed"), "{out}");
    assert!(!bed.run_dir().join("workspace/after-ran").exists());
    assert!(bed.run_dir().join("logs/2-fail.log").is_file());
}

/// A step past its timeout is stopped: TIMEOUT, and the build fails.
#[test]
fn on_host_a_step_timeout_stops_it() {
    let bed = Bed::new("steps:\n- {id: long, name: x, entrypoint: sleep, args: ['30'], timeout: 1s}\n");
    let started = std::time::Instant::now();
    let output = bed.xtask(&["--on-host"], &[]);
    assert!(!output.status.success());
    assert!(started.elapsed().as_secs() < 15, "stopped at its timeout");
    assert_eq!(status(&output, "long"), "TIMEOUT");
    assert!(stderr(&output).contains("ran past its timeout"), "{}", all_output(&output));
}

/// An undefined substitution fails the rehearsal before any step runs, naming step and name.
#[test]
fn an_undefined_substitution_fails_before_anything_runs() {
    let bed = Bed::new(
        "steps:\n- {id: first, name: x, entrypoint: touch, args: [/workspace/ran]}\n\
         - {id: second, name: x, entrypoint: sh, args: [-c, 'echo $HOME']}\n",
    );
    let output = bed.xtask(&["--on-host"], &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("step #1 (second)") && err.contains("`$HOME`") && err.contains("$$HOME"), "{err}");
    assert!(!bed.target().join("cloud-build-local").exists(), "nothing ran, nothing was copied");
}

/// `--substitutions` overrides the pipeline's defaults and the task's.
#[test]
fn substitutions_from_the_command_line_win() {
    let bed = Bed::new(
        "substitutions: {_A: default}\nsteps:\n\
         - {name: x, entrypoint: sh, args: [-c, 'echo $_A $_ENV $PROJECT_ID > /workspace/seen']}\n",
    );
    let output =
        bed.xtask(&["--on-host", "--substitutions", "_A=given,_ENV=docker-prod"], &[("GCP_PROJECT", "p9")]);
    assert_ok(&output);
    assert_eq!(bed.read("seen"), "given docker-prod p9");
    assert_eq!(status(&output, "Step #0"), "SUCCESS");
}

/// The plan's entries: each `[dry-run] ` line, with the lines after it that have no prefix (a
/// quoted word with newlines) joined to it.
fn plan_entries(stdout: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in stdout.lines() {
        match line.strip_prefix("[dry-run] ") {
            Some(entry) => entries.push(entry.to_string()),
            None => {
                let last = entries.last_mut().unwrap_or_else(|| panic!("not a plan line: {line:?}"));
                last.push('\n');
                last.push_str(line);
            }
        }
    }
    entries
}

/// `--dry-run` prints a plan that pastes into a shell, runs nothing (fakes on PATH see no call)
/// and writes only the scripts it names.
#[test]
fn the_dry_run_is_a_pasteable_plan() {
    let pipeline = format!(
        "{}  - id: last\n    name: busybox\n    waitFor: [write]\n    entrypoint: sh\n    args: [-c, 'echo $$HOME']\n",
        SHARED.replace("IMAGE", "busybox")
    );
    let bed = Bed::new(&pipeline);
    for mode in [&["--dry-run", "--on-host"][..], &["--dry-run"][..]] {
        let fake = FakeTools::new();
        let catalog = bed.dir.path().join("catalog/images.toml").display().to_string();
        let target = bed.target().display().to_string();
        let mut args = vec!["cloud-build", "--local", "--step-env", "MARK=1"];
        args.extend_from_slice(mode);
        let output = fake.xtask(&args, &[("CATALOG", &catalog), ("CARGO_TARGET_DIR", &target)]);
        assert_ok(&output);
        let entries = plan_entries(&stdout(&output));
        let commands: Vec<Vec<String>> = entries
            .iter()
            .filter(|e| !e.starts_with('#'))
            .map(|e| shlex::split(e).unwrap_or_else(|| panic!("not valid shell: {e:?}")))
            .collect();
        assert!(fake.calls().is_empty(), "a dry run ran {:?}", fake.calls());
        assert!(
            entries.iter().any(|e| e.starts_with("# note: --step-env MARK=1 is added to every step")),
            "{entries:#?}"
        );
        assert!(
            entries.iter().any(|e| e.starts_with("# Step #2 - \"last\": starts once these succeed: Step #0"))
        );
        let steps: Vec<&Vec<String>> =
            commands.iter().filter(|c| c.iter().any(|w| w == "run" || w == "-i")).collect();
        assert_eq!(steps.len(), 3, "{commands:#?}");
        let last = steps[2];
        assert_eq!(&last[last.len() - 2..], ["-c", "echo $HOME"], "`$$` is `$`");
        if mode.contains(&"--on-host") {
            assert_eq!(&last[..3], ["env", "-i", "-C"]);
            assert!(last.iter().any(|w| w == "MARK=1"));
        } else {
            assert!(commands.iter().any(|c| c.ends_with(&[
                "network".into(),
                "create".into(),
                "cloudbuild".into()
            ])));
            for word in
                ["--rm", "--name", "--network", "cloudbuild", "/var/run/docker.sock:/var/run/docker.sock"]
            {
                assert!(last.iter().any(|w| w.ends_with(word)), "{word}: {last:?}");
            }
            assert!(last.windows(2).any(|w| w == ["--env", "HOME=/builder/home"]));
            assert!(last.windows(2).any(|w| w == ["--workdir", "/workspace"]));
        }
        // Written: only the script the plan names.
        let run = bed.run_dir();
        assert!(!run.join("workspace").exists() && !run.join("home").exists());
        let scripts: Vec<_> = std::fs::read_dir(run.join("scripts")).unwrap().collect();
        assert_eq!(scripts.len(), 1);
        assert!(entries.iter().any(|e| e.starts_with("# wrote ") && e.contains("1-read.sh")));
        std::fs::remove_dir_all(bed.target()).unwrap();
    }
}

/// In the images, through `docker run` on the real engine: HOME=/builder/home, the workspace
/// and home survive from step to step while a file elsewhere in a container does not, two
/// steps overlap, `$$` is `$`, and a failing step stops the build.
#[test]
fn docker_steps_run_in_their_images_as_cloud_build_runs_them() {
    if !common::engine::engine_or_skip("docker_steps_run_in_their_images_as_cloud_build_runs_them") {
        return;
    }
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let image = format!("{}/busybox:1.35", registry.host());
    let build = tempfile::tempdir().unwrap();
    common::engine::push_busybox_base(build.path(), &image);
    let network_was_there = std::process::Command::new("docker")
        .args(["network", "inspect", "cloudbuild"])
        .output()
        .unwrap()
        .status
        .success();

    let pipeline = format!(
        "{SHARED}{}{}",
        overlapping("a", "b", "IMAGE").replace("waitFor: ['-']", "waitFor: [read]"),
        overlapping("b", "a", "IMAGE").replace("waitFor: ['-']", "waitFor: [read]")
    )
    .replace("IMAGE", &image);
    let bed = Bed::new(&pipeline);
    let output = bed.xtask(&["--step-env", "MARK=m2"], &[]);
    assert_ok(&output);
    assert_eq!(bed.read("home-seen"), "/builder/home");
    assert_eq!(bed.read("output-seen"), "/builder/outputs");
    assert_eq!(bed.read("pwd"), "/workspace");
    assert_eq!(bed.read("note-read"), "kept");
    assert_eq!(bed.read("tmp-file"), "absent", "a container's own files go with it");
    assert_eq!(bed.read("dollar"), "$literal");
    assert_eq!((bed.read("mark1"), bed.read("mark2")), ("m2".into(), "m2".into()));
    assert_eq!((bed.read("a-saw-b"), bed.read("b-saw-a")), (String::new(), String::new()));

    let failing = Bed::new(&format!(
        "steps:\n- {{id: fail, name: '{image}', entrypoint: sh, args: [-c, 'echo boom-in-docker; exit 4']}}\n\
         - {{id: after, name: '{image}', entrypoint: touch, args: [/workspace/after-ran]}}\n"
    ));
    let output = failing.xtask(&[], &[]);
    assert!(!output.status.success());
    assert_eq!((status(&output, "fail"), status(&output, "after")), ("FAILURE".into(), "QUEUED".into()));
    assert!(all_output(&output).contains("boom-in-docker"));
    assert!(!failing.run_dir().join("workspace/after-ran").exists());

    let left =
        common::engine::run("docker", &["ps", "--all", "--filter", "name=cloud-build-local-", "--quiet"]);
    assert!(left.trim().is_empty(), "containers left: {left}");
    xtask_testbed::remove_engine_images(&[registry.host()]);
    if !network_was_there {
        let _ = std::process::Command::new("docker").args(["network", "rm", "cloudbuild"]).output();
    }
}

/// Ctrl-C (SIGINT to the xtask) stops the running step with a SIGINT of its own: CANCELLED,
/// the next step never starts, and the task fails.
#[test]
fn on_host_ctrl_c_cancels_the_running_steps() {
    let bed = Bed::new(
        "steps:\n- {id: slow, name: x, entrypoint: sh, args: [-c, 'touch /workspace/started; sleep 30']}\n\
         - {id: after, name: x, entrypoint: 'true'}\n",
    );
    let catalog = bed.dir.path().join("catalog/images.toml").display().to_string();
    let target = bed.target().display().to_string();
    let child = common::xtask_command(
        &["cloud-build", "--local", "--on-host"],
        &[("CATALOG", &catalog), ("CARGO_TARGET_DIR", &target)],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    let base = bed.target().join("cloud-build-local");
    while !std::fs::read_dir(&base).is_ok_and(|mut runs| {
        runs.next().is_some_and(|run| run.unwrap().path().join("workspace/started").exists())
    }) {
        assert!(started.elapsed().as_secs() < 20, "the step never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(started.elapsed().as_secs() < 15, "stopped, not waited for");
    assert_eq!((status(&output, "slow"), status(&output, "after")), ("CANCELLED".into(), "QUEUED".into()));
    assert!(stderr(&output).contains("interrupted"), "{}", all_output(&output));
}

/// Without --local, `--substitutions` goes on to `gcloud builds submit`, over the task's own.
#[test]
fn substitutions_pass_on_to_gcloud() {
    let plan = common::plan(&["cloud-build", "--substitutions", "_ENV=docker-prod,_X=1"], &[]);
    let given: Vec<&String> = plan[0].iter().filter(|w| w.starts_with("--substitutions=")).collect();
    assert_eq!(given.len(), 1, "{plan:?}");
    assert!(given[0].starts_with("--substitutions=_ENV=docker-prod,_CLOUDBUILD_IMAGE="), "{given:?}");
    assert!(given[0].ends_with(",_AUTO_START_STOP=0,_X=1"), "{given:?}");
}
