//! One step of the pipeline as the rehearsal runs it: its fields with the substitutions applied
//! (all of them checked before anything runs), its environment merged (options.env, then the
//! step's env, then `--env`), and the command that runs it: `docker run` in its image as Cloud
//! Build runs it, or, `--on-host`, the same program on this machine through `env -i -C`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use xshell::cmd;

use super::duration;
use super::host_paths::HostPaths;
use super::substitution::Substitutions;
use crate::pipeline::{Options, Step};
use crate::runner::{Cmd, sh};

/// Where a script is mounted in a step's container, and run from.
pub const SCRIPT_IN_CONTAINER: &str = "/builder/script";

/// A step, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedStep {
    /// Its position in the pipeline, from 0 as Cloud Build numbers them (`Step #0`).
    pub index: usize,
    pub id: Option<String>,
    pub image: String,
    pub entrypoint: Option<String>,
    pub args: Vec<String>,
    /// The script, as written (Cloud Build substitutes nothing in it).
    pub script: Option<String>,
    pub dir: Option<String>,
    /// options.env then the step's env (and the substitutions when automapped), last one wins.
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// `NAME=VALUE` as a pair; an entry without `=` is an error naming `what`.
pub fn pair(entry: &str, what: &str) -> Result<(String, String)> {
    match entry.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => bail!("{what} {entry:?} is not NAME=VALUE"),
    }
}

/// Set `name` in an ordered environment: in place when it is there, else at the end.
pub fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    }
}

impl ResolvedStep {
    pub fn new(index: usize, step: &Step, options: &Options, subs: &Substitutions) -> Result<ResolvedStep> {
        let label = match &step.id {
            Some(id) => format!("step #{index} ({id})"),
            None => format!("step #{index}"),
        };
        let apply =
            |field: &str, text: &str| subs.apply(text).with_context(|| format!("{label}, its {field}"));
        if step.script.is_some() && (step.entrypoint.is_some() || !step.args.is_empty()) {
            bail!("{label} has a script and an entrypoint or args: Cloud Build allows only one of the two");
        }
        let mut env = Vec::new();
        if options.automap_substitutions || step.automap_substitutions == Some(true) {
            for (name, value) in subs.pairs() {
                set(&mut env, name, value);
            }
        }
        for entry in &options.env {
            let (name, value) = pair(&apply("options.env", entry)?, "options.env entry")?;
            set(&mut env, &name, &value);
        }
        for entry in &step.env {
            let (name, value) = pair(&apply("env", entry)?, &format!("{label}: env entry"))?;
            set(&mut env, &name, &value);
        }
        Ok(ResolvedStep {
            index,
            id: step.id.clone(),
            image: apply("name", &step.name)?,
            entrypoint: step.entrypoint.as_deref().map(|e| apply("entrypoint", e)).transpose()?,
            args: step.args.iter().map(|arg| apply("args", arg)).collect::<Result<_>>()?,
            script: step.script.clone(),
            dir: step.dir.as_deref().map(|d| apply("dir", d)).transpose()?,
            env,
            timeout: step
                .timeout
                .as_deref()
                .map(duration::parse)
                .transpose()
                .with_context(|| format!("{label}, its timeout"))?,
        })
    }

    /// How the table and the messages name it: its id, else `Step #N`.
    pub fn name(&self) -> String {
        self.id.clone().unwrap_or_else(|| format!("Step #{}", self.index))
    }

    /// `0-setup-ssh`, `1`: for its log and script files.
    pub fn file_stem(&self) -> String {
        match &self.id {
            Some(id) => {
                let safe: String = id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                    .collect();
                format!("{}-{safe}", self.index)
            }
            None => self.index.to_string(),
        }
    }

    /// The script as the file that runs it: `#!/bin/sh` first unless it has a shebang.
    pub fn script_file(&self, paths: Option<&HostPaths>) -> Option<String> {
        let script = self.script.as_deref()?;
        let script = paths.map_or_else(|| script.to_string(), |p| p.rewrite(script));
        Some(if script.starts_with("#!") { script } else { format!("#!/bin/sh\n{script}") })
    }

    /// `docker run` of the step in its image, as Cloud Build runs it. `script`: the script's
    /// file on this machine, mounted and run as the entrypoint.
    pub fn docker_command(
        &self,
        container: &str,
        folders: &super::workspace::Folders,
        extra_env: &[(String, String)],
        script: Option<&Path>,
    ) -> Cmd {
        let volume = |from: &Path, to: &str| vec!["--volume".to_string(), format!("{}:{to}", from.display())];
        let mut options = Vec::new();
        options.extend(volume(&folders.workspace, "/workspace"));
        options.extend(volume(&folders.home, "/builder/home"));
        options.extend(volume(&folders.outputs, "/builder/outputs"));
        options.extend(volume(Path::new("/var/run/docker.sock"), "/var/run/docker.sock"));
        if let Some(script) = script {
            options.extend(volume(script, &format!("{SCRIPT_IN_CONTAINER}:ro")));
        }
        let workdir = match self.dir.as_deref() {
            Some(dir) if dir.starts_with('/') => dir.to_string(),
            Some(dir) if !dir.is_empty() => format!("/workspace/{dir}"),
            _ => "/workspace".to_string(),
        };
        options.extend(["--workdir".to_string(), workdir]);
        let mut env = vec![
            ("HOME".to_string(), "/builder/home".to_string()),
            ("BUILDER_OUTPUT".to_string(), "/builder/outputs".to_string()),
        ];
        for (name, value) in self.env.iter().chain(extra_env) {
            set(&mut env, name, value);
        }
        for (name, value) in env {
            options.extend(["--env".to_string(), format!("{name}={value}")]);
        }
        let entrypoint = match (script, &self.entrypoint) {
            (Some(_), _) => Some(SCRIPT_IN_CONTAINER.to_string()),
            (None, entrypoint) => entrypoint.clone(),
        };
        if let Some(entrypoint) = entrypoint {
            options.extend(["--entrypoint".to_string(), entrypoint]);
        }
        let (sh, image, args) = (sh(), &self.image, &self.args);
        cmd!(sh, "docker run --rm --name {container} --network cloudbuild {options...} {image} {args...}")
            .into()
    }

    /// The step on this machine: `env -i -C <dir> NAME=VALUE… program args…`, with `base` (PATH,
    /// HOME, …) first, then its own environment rewritten by `paths`, then `extra_env` as given.
    /// Without an entrypoint or a script, its first arg is the program (as for an image with no
    /// ENTRYPOINT of its own).
    pub fn host_command(
        &self,
        paths: &HostPaths,
        workspace: &Path,
        base: &[(String, String)],
        extra_env: &[(String, String)],
        script: Option<&Path>,
    ) -> Result<Cmd> {
        let dir: PathBuf = match self.dir.as_deref() {
            Some(dir) if dir.starts_with('/') => PathBuf::from(paths.rewrite(dir)),
            Some(dir) if !dir.is_empty() => workspace.join(dir),
            _ => workspace.to_path_buf(),
        };
        let mut env = base.to_vec();
        for (name, value) in &self.env {
            set(&mut env, name, &paths.rewrite(value));
        }
        for (name, value) in extra_env {
            set(&mut env, name, value);
        }
        let assignments: Vec<String> = env.iter().map(|(name, value)| format!("{name}={value}")).collect();
        let mut words: Vec<String> = self.args.iter().map(|arg| paths.rewrite(arg)).collect();
        let program = match (script, &self.entrypoint) {
            (Some(script), _) => script.display().to_string(),
            (None, Some(entrypoint)) => paths.rewrite(entrypoint),
            (None, None) if !words.is_empty() => words.remove(0),
            (None, None) => {
                bail!("step #{} has no entrypoint, script or args: nothing to run on the host", self.index)
            }
        };
        let sh = sh();
        Ok(cmd!(sh, "env -i -C {dir} {assignments...} {program} {words...}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn step(yaml: &str) -> Step {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn subs() -> Substitutions {
        let defaults: BTreeMap<String, String> = [("_ENV".to_string(), "dev".to_string())].into();
        Substitutions::new(&[("PROJECT_ID", "p".to_string())], &defaults, &[]).unwrap()
    }

    #[test]
    fn resolves_substitutions_and_merges_the_environment() {
        let options: Options = serde_yaml_ng::from_str("env: ['ENV=${_ENV}', A=options, B=options]").unwrap();
        let s = step(
            "{id: x, name: 'img/${PROJECT_ID}', entrypoint: bash, args: [-c, 'echo $$HOME $_ENV'], env: [A=step], timeout: 5s}",
        );
        let r = ResolvedStep::new(3, &s, &options, &subs()).unwrap();
        assert_eq!(r.image, "img/p");
        assert_eq!(r.args, ["-c", "echo $HOME dev"]);
        let env: Vec<String> = r.env.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(env, ["ENV=dev", "A=step", "B=options"]);
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
        assert_eq!((r.name(), r.file_stem()), ("x".to_string(), "3-x".to_string()));
        let bad = step("{name: img, args: [echo, $HOME]}");
        let err = format!("{:#}", ResolvedStep::new(4, &bad, &options, &subs()).unwrap_err());
        assert!(err.contains("step #4") && err.contains("$HOME"), "{err}");
        assert_eq!(
            ResolvedStep::new(4, &step("{name: i, args: [a]}"), &options, &subs()).unwrap().name(),
            "Step #4"
        );
    }

    #[test]
    fn scripts_are_not_substituted_and_get_a_shebang() {
        let options = Options::default();
        let r =
            ResolvedStep::new(0, &step("{name: i, script: 'echo $HOME > /workspace/x'}"), &options, &subs())
                .unwrap();
        assert_eq!(r.script_file(None).unwrap(), "#!/bin/sh\necho $HOME > /workspace/x");
        let paths = HostPaths::new(Path::new("/r/ws"), Path::new("/r/h"), Path::new("/r/o"));
        assert_eq!(r.script_file(Some(&paths)).unwrap(), "#!/bin/sh\necho $HOME > /r/ws/x");
        let bash =
            ResolvedStep::new(0, &step("{name: i, script: \"#!/bin/bash\\nx\"}"), &options, &subs()).unwrap();
        assert_eq!(bash.script_file(None).unwrap(), "#!/bin/bash\nx");
        let both = ResolvedStep::new(0, &step("{name: i, script: x, args: [y]}"), &options, &subs());
        assert!(both.is_err());
    }
}
