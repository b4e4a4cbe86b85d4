//! bench-thirdparty: mirror the same generated images with `cargo xtask thirdparty` (this very
//! binary, dev profile, as users run it) and with `skopeo copy --all` (one image after another,
//! as a script would), in one run, and print the ratios. Besides speed: the CPU a run spends
//! before its first request, and how each tool fares against a source that keeps failing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::{Args, ValueEnum};

use xtask::registry::reference::Written;
use xtask_testbed::fault_proxy::{FaultProxy, measured_mix};
use xtask_testbed::{
    Fixture, FixtureSpec, TestRegistry, push_blobs_directly, require, sha256_digest, skopeo_raw,
    start_delay_proxy,
};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Settings to run (all when none is given)
    #[arg(long, value_enum)]
    pub only: Vec<BenchSetting>,
    /// Round-trip time the proxy adds to every request in the remote-like setting
    #[arg(long, default_value_t = 40)]
    pub latency_ms: u64,
    /// Size of the single layer of the memory setting
    #[arg(long, default_value_t = 1024)]
    pub memory_layer_mib: usize,
    /// Passed on to `thirdparty --jobs` [default: thirdparty's own]
    #[arg(long)]
    pub jobs: Option<u16>,
    /// Rounds of each measurement (each on fresh destination registries); the medians are shown
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchSetting {
    /// Several multi-arch tags, hundreds of MiB, registries on loopback
    Loopback,
    /// A dozen small multi-arch tags, registries behind a proxy that adds latency
    Remote,
    /// One large layer: the peak memory of a copy
    Memory,
    /// The CPU a run spends before its first request: nothing answers, one try
    Startup,
    /// A source answering 503 to 1 request in 5, 429 to 1 in 7, and resetting 1 blob GET in 4
    Faults,
}

/// bench-thirdparty
pub fn bench_thirdparty(args: &BenchArgs) -> Result<()> {
    require("docker-registry", "apt-get install docker-registry")?;
    require("skopeo", "apt-get install skopeo")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let wants = |setting| args.only.is_empty() || args.only.contains(&setting);
    if wants(BenchSetting::Loopback) {
        loopback(&runtime, args.jobs, args.runs)?;
    }
    if wants(BenchSetting::Remote) {
        remote(&runtime, Duration::from_millis(args.latency_ms), args.jobs, args.runs)?;
    }
    if wants(BenchSetting::Memory) {
        memory(args.memory_layer_mib, args.jobs)?;
    }
    if wants(BenchSetting::Startup) {
        startup(args.runs.max(10))?;
    }
    if wants(BenchSetting::Faults) {
        faults(args.jobs, args.runs)?;
    }
    Ok(())
}

struct Tags {
    fixtures: Vec<Fixture>,
    /// `repository:tag` under the source registry.
    names: Vec<String>,
}

fn publish(source: &TestRegistry, specs: Vec<FixtureSpec>) -> Result<Tags> {
    let mut tags = Tags { fixtures: Vec::new(), names: Vec::new() };
    for (number, spec) in specs.into_iter().enumerate() {
        let fixture = Fixture::generate(&spec)?;
        let repository = format!("bench/image{number}");
        fixture.push(&source.host(), &repository, "1.0")?;
        tags.names.push(format!("{repository}:1.0"));
        tags.fixtures.push(fixture);
    }
    Ok(tags)
}

fn loopback(runtime: &tokio::runtime::Runtime, jobs: Option<u16>, runs: u32) -> Result<()> {
    println!("== loopback: 6 multi-arch tags (2 platforms + attestation), registries on 127.0.0.1");
    let source = TestRegistry::start()?;
    let specs = (0..6)
        .map(|n| FixtureSpec {
            seed: 100 + n,
            layers: 4,
            layer_size: 10 << 20,
            shared_base: Some((7, 5 << 20)),
            ..FixtureSpec::small(0)
        })
        .collect();
    let tags = publish(&source, specs)?;
    let bytes: u64 = unique_bytes(&tags.fixtures);
    println!("   {} MiB in {} distinct blobs", bytes >> 20, unique_blobs(&tags.fixtures));

    let fixtures: Vec<&Fixture> = tags.fixtures.iter().collect();
    let (mut floors, mut skopeo_runs, mut our_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let floor_registry = TestRegistry::start()?;
        let started = Instant::now();
        runtime.block_on(push_blobs_directly(floor_registry.addr, "floor", &fixtures, 4))?;
        floors.push(started.elapsed());
        skopeo_runs.push(time_skopeo(&source, source.addr, &tags.names, None)?);
        our_runs.push(time_ours(&source, source.addr, &tags.names, None, jobs)?);
    }
    println!("   medians of {runs} runs");
    let (skopeo, ours) = (median_timings(skopeo_runs), median_timings(our_runs));
    let floor = Measured { wall: median(floors), cpu: Duration::ZERO, registries_cpu: Duration::ZERO };
    print_table(&[
        ("floor: the blobs pushed straight in, 4 at a time", floor, None),
        ("skopeo copy --all, one tag after another, cold", skopeo.cold, None),
        ("cargo xtask thirdparty, cold", ours.cold, Some(skopeo.cold)),
        ("skopeo, everything up to date", skopeo.warm, None),
        ("cargo xtask thirdparty, everything up to date", ours.warm, Some(skopeo.warm)),
    ]);
    println!(
        "   cold: {:.2}x faster than skopeo; {:.2}x the floor",
        ratio(skopeo.cold.wall, ours.cold.wall),
        ours.cold.wall.as_secs_f64() / floor.wall.as_secs_f64()
    );
    Ok(())
}

fn remote(runtime: &tokio::runtime::Runtime, rtt: Duration, jobs: Option<u16>, runs: u32) -> Result<()> {
    println!("== remote-like: 12 small multi-arch tags, {} ms added to every round trip", rtt.as_millis());
    let source = TestRegistry::start()?;
    let tags = publish(
        &source,
        (0..12).map(|n| FixtureSpec { layer_size: 256 << 10, ..FixtureSpec::small(200 + n) }).collect(),
    )?;
    let source_proxy = runtime.block_on(start_delay_proxy(source.addr, rtt / 2))?;
    let delay = Some((runtime, rtt));
    let (mut skopeo_runs, mut our_runs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        skopeo_runs.push(time_skopeo(&source, source_proxy, &tags.names, delay)?);
        our_runs.push(time_ours(&source, source_proxy, &tags.names, delay, jobs)?);
    }
    println!("   medians of {runs} runs");
    let (skopeo, ours) = (median_timings(skopeo_runs), median_timings(our_runs));
    print_table(&[
        ("skopeo copy --all, one tag after another, cold", skopeo.cold, None),
        ("cargo xtask thirdparty, cold", ours.cold, Some(skopeo.cold)),
        ("skopeo, everything up to date", skopeo.warm, None),
        ("cargo xtask thirdparty, everything up to date", ours.warm, Some(skopeo.warm)),
    ]);
    let (skopeo_requests, ours_requests) = (skopeo.requests, ours.requests);
    let per_tag = |n: usize| n as f64 / tags.names.len() as f64;
    println!(
        "   requests per tag (both registries), cold / up to date: skopeo {:.1} / {:.1}, xtask {:.1} / {:.1}",
        per_tag(skopeo_requests.0),
        per_tag(skopeo_requests.1),
        per_tag(ours_requests.0),
        per_tag(ours_requests.1)
    );
    Ok(())
}

fn memory(layer_mib: usize, jobs: Option<u16>) -> Result<()> {
    println!("== memory: one image with a single {layer_mib} MiB layer");
    let source = TestRegistry::start()?;
    let spec = FixtureSpec {
        platforms: vec![("linux", "amd64")],
        layers: 1,
        layer_size: layer_mib << 20,
        attestation: false,
        ..FixtureSpec::small(300)
    };
    let tags = publish(&source, vec![spec])?;
    let destination = TestRegistry::start()?;
    let list = ListFile::new()?;
    write_list(&list.path(), source.addr, &tags.names)?;
    let config = tempfile::tempdir()?;
    let docker_repo = format!("{}/xtask", destination.host());
    // Its errors, if any, say why the copy failed.
    let mut child = ours_command(&list.path(), &docker_repo, config.path(), jobs)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let started = Instant::now();
    let max_rss_kib = wait_for_max_rss(&mut child)?;
    println!(
        "   cargo xtask thirdparty copied it in {:.1} s with a peak RSS of {} MiB",
        started.elapsed().as_secs_f64(),
        max_rss_kib / 1024
    );
    Ok(())
}

/// Wait for `child` and return its peak resident memory in KiB: the high-water mark of its own
/// address space (`VmHWM`), read until it exits. (The rusage `ru_maxrss` of a child is no use
/// here: it starts from the parent's peak, which holds the generated layer.)
fn wait_for_max_rss(child: &mut std::process::Child) -> Result<i64> {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "the copy failed");
            return Ok(peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait for `child` and return what the kernel counted of it, and whether it succeeded.
fn wait_with_usage(child: &mut std::process::Child) -> Result<(libc::rusage, bool)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = i32::try_from(child.id())?;
    // SAFETY: wait4 on our own child with valid pointers to locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    ensure!(waited == pid, "wait4 failed");
    Ok((usage, libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0))
}

/// Run `command` to success; its wall time and the CPU time it used (user + system).
fn run_measured(command: &mut Command) -> Result<(Duration, Duration)> {
    let (wall, cpu, succeeded) = run_measured_any(command)?;
    ensure!(succeeded, "the command failed");
    Ok((wall, cpu))
}

/// `run_measured` for a command that may fail: its wall time, CPU time and success.
fn run_measured_any(command: &mut Command) -> Result<(Duration, Duration, bool)> {
    let started = Instant::now();
    let mut child = command.spawn()?;
    let (usage, succeeded) = wait_with_usage(&mut child)?;
    let cpu = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((started.elapsed(), cpu(usage.ru_utime) + cpu(usage.ru_stime), succeeded))
}

/// Start-up: with nothing answering and one try, a run is all start-up (parse, credentials,
/// clients) and one refused connection. The CPU of that is what an up-to-date run pays before
/// its first request.
fn startup(runs: u32) -> Result<()> {
    println!("== start-up: CPU before the first request (the only registry refuses connections, one try)");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let list = ListFile::new()?;
    write_list(&list.path(), closed, &["bench/unreachable:1".to_string()])?;
    let config = tempfile::tempdir()?;
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut command = ours_command(&list.path(), &format!("{closed}/xtask"), config.path(), None);
        let (_, cpu, _) = run_measured_any(command.arg("--tries").arg("1").stdout(Stdio::null()))?;
        ours.push(cpu);
        let (_, cpu, _) = run_measured_any(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--retry-times", "0", "--tls-verify=false"])
                .arg(format!("docker://{closed}/bench/unreachable:1"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        peer.push(cpu);
    }
    let (ours, peer) = (median(ours), median(peer));
    println!("   medians of {runs} runs");
    println!("   | what | CPU ms | peer / xtask | target |");
    println!("   |---|---|---|---|");
    println!("   | skopeo inspect | {:.1} | | |", peer.as_secs_f64() * 1000.0);
    println!(
        "   | cargo xtask thirdparty --tries 1 | {:.1} | {:.1}x | <= 50 ms |",
        ours.as_secs_f64() * 1000.0,
        ratio(peer, ours)
    );
    Ok(())
}

/// What one tool achieved against the fault mix, over all runs.
#[derive(Default)]
struct Endured {
    /// Tags whose destination digest is the source's, and tags tried.
    complete: usize,
    tried: usize,
    faults: usize,
    requests: usize,
    /// Ours only: the summary's count of retries.
    retries: Option<u64>,
    walls: Vec<Duration>,
    /// The first error a failed copy printed.
    first_error: Option<String>,
}

fn faults(jobs: Option<u16>, runs: u32) -> Result<()> {
    println!(
        "== faults: 4 multi-arch tags (256 KiB layers) from a source that answers 503 to 1 request in 5, \
         429 (Retry-After: 1) to 1 in 7, and resets 1 blob GET in 4 mid-body"
    );
    let source = TestRegistry::start()?;
    let tags = publish(
        &source,
        (0..4).map(|n| FixtureSpec { layer_size: 256 << 10, ..FixtureSpec::small(400 + n) }).collect(),
    )?;
    let (mut ours, mut peer) = (Endured::default(), Endured::default());
    for _ in 0..runs {
        let proxy = FaultProxy::start(source.addr, measured_mix());
        let destination = TestRegistry::start()?;
        let list = ListFile::new()?;
        write_list(&list.path(), proxy.addr, &tags.names)?;
        let config = tempfile::tempdir()?;
        let started = Instant::now();
        let output =
            ours_command(&list.path(), &format!("{}/xtask", destination.host()), config.path(), jobs)
                .arg("--timeout")
                .arg("5")
                .output()?;
        ours.walls.push(started.elapsed());
        let summary = String::from_utf8_lossy(&output.stdout);
        let retries = summary
            .lines()
            .find(|l| l.starts_with("thirdparty:") && l.contains(" retries"))
            .and_then(|l| l.split("; ").nth(1)?.split(' ').next()?.parse::<u64>().ok());
        *ours.retries.get_or_insert(0) += retries.unwrap_or(0);
        tally(&mut ours, &tags, &destination, "xtask/thirdparty/bench", &proxy);

        let proxy = FaultProxy::start(source.addr, measured_mix());
        let destination = TestRegistry::start()?;
        let started = Instant::now();
        for name in &tags.names {
            // skopeo's own retries: 4 more tries, as many as ours.
            let output = Command::new("skopeo")
                .args(["copy", "--quiet", "--all", "--preserve-digests", "--retry-times", "4"])
                .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
                .arg(format!("docker://{}/{name}", proxy.addr))
                .arg(format!("docker://{}/skopeo/{name}", destination.host()))
                .stdin(Stdio::null())
                .output()?;
            if !output.status.success() && peer.first_error.is_none() {
                let text = String::from_utf8_lossy(&output.stderr);
                peer.first_error = text.lines().last().map(|l| l.chars().take(240).collect());
            }
        }
        peer.walls.push(started.elapsed());
        tally(&mut peer, &tags, &destination, "skopeo/bench", &proxy);
    }
    println!("   {runs} runs; time: median");
    println!("   | tool | tags complete, digests equal | faults met | requests | retries | wall s |");
    println!("   |---|---|---|---|---|---|");
    for (tool, endured) in [("skopeo copy --all --retry-times 4", &peer), ("cargo xtask thirdparty", &ours)] {
        println!(
            "   | {tool} | {}/{} | {} | {} | {} | {:.1} |",
            endured.complete,
            endured.tried,
            endured.faults,
            endured.requests,
            endured.retries.map_or("-".to_string(), |r| r.to_string()),
            median(endured.walls.clone()).as_secs_f64()
        );
    }
    if let Some(error) = &peer.first_error {
        println!("   skopeo's first failure: {error}");
    }
    Ok(())
}

/// Count the tags that arrived whole (their index digest, read by skopeo, is the source's).
fn tally(endured: &mut Endured, tags: &Tags, destination: &TestRegistry, prefix: &str, proxy: &FaultProxy) {
    for (fixture, name) in tags.fixtures.iter().zip(&tags.names) {
        let name = name.trim_start_matches("bench/");
        let reference = format!("{}/{prefix}/{name}", destination.host());
        endured.tried += 1;
        if skopeo_raw(&reference).is_ok_and(|raw| sha256_digest(&raw) == fixture.digest) {
            endured.complete += 1;
        }
    }
    endured.faults += proxy.injected();
    endured.requests += proxy.log().len();
}

fn unique_bytes(fixtures: &[Fixture]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for fixture in fixtures {
        for digest in &fixture.blobs {
            if seen.insert(digest.clone()) {
                total += std::fs::metadata(fixture.blob_path(digest)).map_or(0, |m| m.len());
            }
        }
    }
    total
}

fn unique_blobs(fixtures: &[Fixture]) -> usize {
    fixtures.iter().flat_map(|f| f.blobs.iter()).collect::<std::collections::HashSet<_>>().len()
}

fn ratio(peer: Duration, ours: Duration) -> f64 {
    peer.as_secs_f64() / ours.as_secs_f64()
}

/// Rows of (what, its run, the peer's run to compare with).
fn print_table(rows: &[(&str, Measured, Option<Measured>)]) {
    println!("   | what | wall s | its CPU s | registries' CPU s | peer / xtask (wall) |");
    println!("   |---|---|---|---|---|");
    for (what, run, peer) in rows {
        let versus = peer.map_or(String::new(), |peer| format!("{:.1}x", ratio(peer.wall, run.wall)));
        let registries = if run.registries_cpu.is_zero() {
            String::new()
        } else {
            format!("{:.2}", run.registries_cpu.as_secs_f64())
        };
        println!(
            "   | {what} | {:.2} | {:.2} | {registries} | {versus} |",
            run.wall.as_secs_f64(),
            run.cpu.as_secs_f64()
        );
    }
}

/// One run: wall time, the CPU time the tool used, and the CPU time both registries used.
#[derive(Clone, Copy)]
struct Measured {
    wall: Duration,
    cpu: Duration,
    registries_cpu: Duration,
}

/// A cold run and an up-to-date run, with the requests each made of both registries.
struct Timings {
    cold: Measured,
    warm: Measured,
    requests: (usize, usize),
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Each figure's median over the runs (requests: the first run's, they do not vary).
fn median_timings(runs: Vec<Timings>) -> Timings {
    let pick = |f: fn(&Timings) -> Duration| median(runs.iter().map(f).collect());
    Timings {
        cold: Measured {
            wall: pick(|t| t.cold.wall),
            cpu: pick(|t| t.cold.cpu),
            registries_cpu: pick(|t| t.cold.registries_cpu),
        },
        warm: Measured {
            wall: pick(|t| t.warm.wall),
            cpu: pick(|t| t.warm.cpu),
            registries_cpu: pick(|t| t.warm.registries_cpu),
        },
        requests: runs[0].requests,
    }
}

type Delay<'a> = Option<(&'a tokio::runtime::Runtime, Duration)>;

/// A fresh destination registry, behind a delay proxy when asked; its address for clients.
fn destination(delay: Delay<'_>) -> Result<(TestRegistry, SocketAddr)> {
    let registry = TestRegistry::start()?;
    let addr = match delay {
        Some((runtime, rtt)) => runtime.block_on(start_delay_proxy(registry.addr, rtt / 2))?,
        None => registry.addr,
    };
    Ok((registry, addr))
}

fn time_skopeo(
    source_registry: &TestRegistry,
    source: SocketAddr,
    names: &[String],
    delay: Delay<'_>,
) -> Result<Timings> {
    let (registry, addr) = destination(delay)?;
    let run = || -> Result<Measured> {
        let mut total =
            Measured { wall: Duration::ZERO, cpu: Duration::ZERO, registries_cpu: Duration::ZERO };
        for name in names {
            let (wall, cpu) = run_measured(
                Command::new("skopeo")
                    .args(["copy", "--quiet", "--all", "--preserve-digests"])
                    .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
                    .arg(format!("docker://{source}/{name}"))
                    .arg(format!("docker://{addr}/skopeo/{name}"))
                    .stdout(Stdio::null()),
            )
            .with_context(|| format!("skopeo copy of {name}"))?;
            total.wall += wall;
            total.cpu += cpu;
        }
        Ok(total)
    };
    cold_and_warm(source_registry, &registry, run)
}

fn time_ours(
    source_registry: &TestRegistry,
    source: SocketAddr,
    names: &[String],
    delay: Delay<'_>,
    jobs: Option<u16>,
) -> Result<Timings> {
    let (registry, addr) = destination(delay)?;
    let list = ListFile::new()?;
    write_list(&list.path(), source, names)?;
    let config = tempfile::tempdir()?;
    let run = || -> Result<Measured> {
        let mut command = ours_command(&list.path(), &format!("{addr}/xtask"), config.path(), jobs);
        let (wall, cpu) = run_measured(command.stdout(Stdio::null())).context("cargo xtask thirdparty")?;
        Ok(Measured { wall, cpu, registries_cpu: Duration::ZERO })
    };
    cold_and_warm(source_registry, &registry, run)
}

/// Run twice, the second time with everything up to date; count the requests of each run.
fn cold_and_warm(
    source: &TestRegistry,
    destination: &TestRegistry,
    run: impl Fn() -> Result<Measured>,
) -> Result<Timings> {
    let requests = || source.requests().len() + destination.requests().len();
    let registries_cpu = || Duration::from_secs_f64(source.cpu_seconds() + destination.cpu_seconds());
    let measure = || -> Result<Measured> {
        let before = registries_cpu();
        let measured = run()?;
        Ok(Measured { registries_cpu: registries_cpu().saturating_sub(before), ..measured })
    };
    let before = requests();
    let cold = measure()?;
    let after_cold = requests();
    let warm = measure()?;
    let after_warm = requests();
    Ok(Timings { cold, warm, requests: (after_cold - before, after_warm - after_cold) })
}

/// A list in a folder of its own, where the run writes its lock too; both go when dropped.
struct ListFile {
    dir: tempfile::TempDir,
}

impl ListFile {
    fn new() -> Result<ListFile> {
        Ok(ListFile { dir: tempfile::tempdir()? })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("list.txt")
    }
}

/// `<source>/<repository>: <tag>` lines.
fn write_list(path: &Path, source: SocketAddr, names: &[String]) -> Result<()> {
    let lines: Vec<String> = names
        .iter()
        .map(|name| {
            let written = Written::split(name);
            format!("{source}/{}: {}", written.name, written.tag.expect("repository:tag"))
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").context("cannot write the image list")
}

/// This binary's `thirdparty` into `docker_repo`, with no credentials of the user's.
fn ours_command(list: &Path, docker_repo: &str, docker_config: &Path, jobs: Option<u16>) -> Command {
    let mut command = Command::new(crate::xtask_binary());
    command.args(["thirdparty", "--file"]).arg(list);
    if let Some(jobs) = jobs {
        command.arg("--jobs").arg(jobs.to_string());
    }
    command
        .env("DOCKER_REPO", docker_repo)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DRYRUN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}
